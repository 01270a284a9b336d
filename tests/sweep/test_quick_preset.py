"""The README's main command, ``rbgeo sweep --preset quick``, end to end on tiny settings."""

from __future__ import annotations

import dataclasses

from click.testing import CliRunner

from robustbench_geo.cli import main
from robustbench_geo.sweep import ResultStore, expand, load_config, run_sweep


def shrink(cfg, *, train_subset=300, test_subset=40, image_epochs=1, graph_epochs=5):
    """The preset with tiny data sizes and epochs (everything else as shipped)."""
    ds = {k: dataclasses.replace(d, train_subset=train_subset if d.train_subset else None,
                                 test_subset=test_subset if d.test_subset else None) for k, d in cfg.datasets.items()}
    ms = {k: dataclasses.replace(m, train={**m.train, "epochs": image_epochs if m.task == "image" else graph_epochs})
          for k, m in cfg.models.items()}
    return dataclasses.replace(cfg, datasets=ds, models=ms)


def test_quick_preset_end_to_end(tmp_path, mnist_root, cora_root):
    cfg = shrink(load_config("quick", output=tmp_path / "quick"))
    assert {m.model for m in cfg.models.values()} >= {"cnn", "deform_cnn", "gcn"}
    cfg = dataclasses.replace(cfg, checkpoint_cache=str(tmp_path / "ckpt"))
    summary = run_sweep(cfg, progress=False)
    assert not summary.failed, [r["error"] for r in summary.failed]
    assert len(summary.ran) == len(expand(cfg)) == summary.total
    with ResultStore(tmp_path / "quick", "quick") as store:
        assert store.status_counts() == {"done": summary.total}
    for name in ("report.html", "results.csv", "summary.md"):
        assert (tmp_path / "quick" / name).stat().st_size > 0
    assert list((tmp_path / "quick" / "logs").glob("sweep-*.log"))
    # the CLI reads the same store
    runner = CliRunner()
    res = runner.invoke(main, ["results", "list", str(tmp_path / "quick")])
    assert res.exit_code == 0 and f"{summary.total} done" in res.output
    first = summary.ran[0]["cell"].hash[:10]
    res = runner.invoke(main, ["results", "show", str(tmp_path / "quick"), first])
    assert res.exit_code == 0 and '"status": "done"' in res.output
    res = runner.invoke(main, ["results", "export", str(tmp_path / "quick"), "--format", "json"])
    assert res.exit_code == 0 and res.output.lstrip().startswith("[")
    res = runner.invoke(main, ["report", str(tmp_path / "quick")])
    assert res.exit_code == 0 and "report.html" in res.output


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
