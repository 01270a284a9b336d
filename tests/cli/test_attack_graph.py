"""``rbgeo attack`` on Cora: seeds, flips written, and bad input."""

import pytest
from click.testing import CliRunner

from robustbench_geo.cli import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cora_checkpoint(cora_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "gcn_cora"
    r = _run("train", "gcn", "cora", "--epochs", 60, "--quiet", "--out", out, "--data-root", cora_root)
    assert r.exit_code == 0, r.output
    return out


def test_cli_graph_attack_on_cora(cora_root, cora_checkpoint, tmp_path):
    out = tmp_path / "dice"
    r = _run("attack", cora_checkpoint, "cora", "--attack", "dice", "--budget", 0.05, "--seeds", 2, "--quiet",
             "--out", out, "--data-root", cora_root)
    assert r.exit_code == 0, r.output
    assert "seed 1: clean accuracy" in r.output and "dice over 2 seeds" in r.output
    assert (out / "flips.csv").read_text().count("\n") == 253 + 1  # floor(0.05 * 5069) flips
    assert (out / "rows.csv").exists() and (out / "outcome.json").exists()
    r = _run("attack", cora_checkpoint, "cora", "--attack", "dice", "--budget", 3, "--data-root", cora_root)
    assert r.exit_code == 2 and "expected a fraction of edges in [0, 1]" in r.output
    r = _run("attack", cora_checkpoint, "cora", "--attack", "dcie", "--data-root", cora_root)
    assert r.exit_code == 2 and "Did you mean 'dice'" in r.output
    r = _run("attack", cora_checkpoint, "cora", "--attack", "random_edges", "--param", "kind=swap", "--data-root", cora_root)
    assert r.exit_code == 2 and "Valid random attack kinds" in r.output


def test_cli_attacks_a_trained_prognn(cora_root, tmp_path):
    """A trained Pro-GNN holds its learned 2485 x 2485 graph: the loader's shape check probes it on the
    data's own graph (a 3-node probe made every trained Pro-GNN checkpoint unusable by rbgeo attack)."""
    ck = tmp_path / "prognn"
    r = _run("train", "prognn", "cora", "--epochs", 2, "--quiet", "--out", ck, "--data-root", cora_root)
    assert r.exit_code == 0, r.output
    r = _run("attack", ck, "cora", "--attack", "dice", "--budget", 0.01, "--quiet", "--data-root", cora_root)
    assert r.exit_code == 0, r.output
    assert "clean accuracy" in r.output and "robust accuracy" in r.output
