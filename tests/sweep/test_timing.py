"""``rbgeo sweep --dry-run``: a graph attack with its own estimate (``auto``) is asked for it, others are guessed."""

from __future__ import annotations

from robustbench_geo.sweep import expand, load_config
from robustbench_geo.sweep.timing import GRAPH_ATTACK_GUESS_S, estimate_sweep, graph_attack_seconds
from tests.sweep.conftest import tiny_toml

ATTACKS = """
[attacks.auto]
attack = "auto"
budget = [0.05]
mode = ["evasion"]
params = { members = "pgd/tanh_margin", steps = STEPS, refine_steps = 5 }

[attacks.dice]
attack = "dice"
budget = [0.05]
mode = ["evasion"]
"""


def test_auto_cells_use_the_portfolio_estimate(tmp_path, cora_root):
    toml = tmp_path / "t.toml"
    toml.write_text(tiny_toml(tmp_path / "out", graph=True, attacks=ATTACKS.replace("STEPS", "10")))
    cfg = load_config(toml)
    rows, total = estimate_sweep(cfg, expand(cfg))
    by_attack = {r["cell"].config["attack"]["name"]: r for r in rows}
    auto, rand = by_attack["auto"], by_attack["dice"]
    assert auto["source"] == "estimated" and 0 < auto["attack_s"] != GRAPH_ATTACK_GUESS_S
    assert rand["source"] == "guess" and rand["attack_s"] == GRAPH_ATTACK_GUESS_S
    assert total >= auto["attack_s"] + rand["attack_s"]
    # the estimate follows the cell's parameters: ten times the PGD steps costs more
    runner = auto["cell"].config["attack"]["runner"]
    few, src = graph_attack_seconds("auto", {"members": "pgd/tanh_margin", "steps": 10, "refine_steps": 5}, runner,
                                    "gcn", {}, "cora")
    many, _ = graph_attack_seconds("auto", {"members": "pgd/tanh_margin", "steps": 100, "refine_steps": 5}, runner,
                                   "gcn", {}, "cora")
    assert src == "estimated" and many > few
