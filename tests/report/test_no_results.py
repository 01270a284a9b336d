"""Reports of stores without a finished cell: every cell failed, nothing run yet (--limit 0), no cells at all."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_geo.cli import main
from robustbench_geo.report import report_headline, write_report
from robustbench_geo.sweep import ResultStore, load_config, run_sweep
from tests.report.browser import find_browser, load_page
from tests.sweep.conftest import tiny_toml


def _cfg(tmp_path, name, cache, model=None):
    path = tmp_path / f"{name}.toml"
    text = tiny_toml(tmp_path / name, name=name, cache=cache, graph=False)
    path.write_text(text if model is None else text.replace('model = "cnn"', f'model = "{model}"'))
    return load_config(path)


def _check_files(folder, expect: str):
    paths = write_report(folder)
    html = paths["html"].read_text()
    assert expect in html and 'id="no-results"' in html
    assert pd.read_csv(paths["csv"]).empty
    assert "(no finished cells)" in paths["markdown"].read_text()
    return html


def test_all_cells_failed(tmp_path):
    plug = tmp_path / "broken.py"  # every cell fails: its model cannot be built
    plug.write_text("def model(**kwargs):\n    raise RuntimeError('this model cannot be built')\n")
    cfg = _cfg(tmp_path, "broken", tmp_path / "ckpt", model=f"{plug}:model")
    summary = run_sweep(cfg, progress=False, report=write_report)  # used to raise KeyError: 'model'
    assert summary.failed and len(summary.failed) == summary.total
    html = _check_files(cfg.output, "every cell that ran failed")
    assert 'id="failed-table"' in html
    res = CliRunner().invoke(main, ["report", str(cfg.output)])
    assert res.exit_code == 0, res.output
    assert "every cell that ran failed" in res.output and "Traceback" not in res.output
    if find_browser() is not None:
        pytest.importorskip("aiohttp")
        page = load_page(cfg.output / "report.html", "document.getElementById('failed-table').rows.length")
        assert page["errors"] == [] and page["value"] == 1 + summary.total


def test_limit_zero_and_empty_store(tmp_path):
    cfg = _cfg(tmp_path, "later", tmp_path / "ckpt")
    summary = run_sweep(cfg, progress=False, limit=0, report=write_report)
    assert summary.ran == [] and summary.report is not None
    _check_files(cfg.output, "No finished cells in this store (1 pending)")
    assert report_headline(cfg.output)[0].startswith("No finished cells yet (1 pending)")
    res = CliRunner().invoke(main, ["sweep", str(cfg.source), "--limit", "0"])
    assert res.exit_code == 0 and "No finished cells yet" in res.output, res.output
    empty = tmp_path / "empty"
    ResultStore(empty, "nothing").close()
    _check_files(empty, "it holds no cells")
    assert "holds no cells" in report_headline(empty)[0]
