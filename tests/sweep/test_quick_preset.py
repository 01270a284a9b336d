"""The README's main command, ``rbgeo sweep --preset quick``, end to end on tiny settings."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_geo.cli import main
from robustbench_geo.sweep import ResultStore, expand, load_config, run_sweep


def test_quick_preset_end_to_end(quick_sweep):
    cfg, summary = quick_sweep
    assert {m.model for m in cfg.models.values()} >= {"cnn", "deform_cnn", "gcn"}
    assert {a.domain for a in cfg.attacks.values()} >= {"image", "graph"}  # the attacks available, both domains
    assert not summary.failed, [r["error"] for r in summary.failed]
    assert len(summary.ran) == len(expand(cfg)) == summary.total
    out = cfg.output
    with ResultStore(out, "quick") as store:
        assert store.status_counts() == {"done": summary.total}
        rows = store.cells()
    image = [r for r in rows if "n" in r["config"]["attack"]["runner"]]
    graph = [r for r in rows if r["config"]["attack"]["runner"].get("mode")]
    assert image and graph and any(r["config"]["attack"]["name"] == "none" for r in image)
    # the stored numbers are recomputed from the checkpoints in test_quick_preset_recomputed.py
    for name in ("report.html", "results.csv", "summary.md"):
        assert (out / name).stat().st_size > 0
    tidy = pd.read_csv(out / "results.csv")  # one row per cell x metric, with the stored values
    assert set(tidy["hash"]) == {r["hash"] for r in rows}
    robust = tidy[tidy["metric"] == "robust_accuracy"].set_index("hash")["value"]
    assert all(robust[r["hash"]] == pytest.approx(r["metrics"]["robust_accuracy"]) for r in rows)
    assert list((out / "logs").glob("sweep-*.log"))
    # re-running finds everything done
    again = run_sweep(cfg, progress=False, report=False)
    assert again.ran == [] and again.skipped_done == summary.total


def test_results_and_report_commands(quick_sweep):
    cfg, summary = quick_sweep
    runner = CliRunner()
    res = runner.invoke(main, ["results", "list", str(cfg.output)])
    assert res.exit_code == 0 and f"{summary.total} done" in res.output
    first = summary.ran[0]["cell"].hash[:10]
    res = runner.invoke(main, ["results", "show", str(cfg.output), first])
    assert res.exit_code == 0 and '"status": "done"' in res.output
    res = runner.invoke(main, ["results", "export", str(cfg.output), "--format", "json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == summary.total
    res = runner.invoke(main, ["results", "show", str(cfg.output), "zzzz"])
    assert res.exit_code == 2 and "no cells match hash prefix 'zzzz'" in res.output
    html = (cfg.output / "report.html").read_text()
    res = runner.invoke(main, ["report", str(cfg.output)])  # a second rendering from the store alone
    assert res.exit_code == 0 and "report.html" in res.output
    assert (cfg.output / "report.html").read_text().count("<tr") == html.count("<tr")


def test_cli_errors_exit_2(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["sweep", "--preset", "quik"])
    assert res.exit_code == 2 and "unknown preset 'quik'" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nname = "x"\n[models.a]\nmodel = "resnet99"\ndataset = "m"\n[datasets.m]\nspec = "mnist"\n')
    res = runner.invoke(main, ["sweep", str(bad)])
    assert res.exit_code == 2 and "models.a.model (line 4): unknown model 'resnet99'" in res.output
    res = runner.invoke(main, ["results", "list", str(tmp_path)])
    assert res.exit_code == 2 and "no results store" in res.output


def test_dry_run_lists_cells_and_estimates(tmp_path):
    res = CliRunner().invoke(main, ["sweep", "--preset", "quick", "--dry-run", "--output", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    cfg = load_config("quick")
    assert f"{len(expand(cfg))} cells" in res.output and "estimated" in res.output
    assert not (tmp_path / "q").exists()  # a dry run writes nothing
