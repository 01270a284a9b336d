"""Reports: files, numbers as numbers, escaping of user strings, and the page in headless Chromium."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from robustbench_geo.report import write_report
from robustbench_geo.sweep import load_config, run_sweep
from tests.report.browser import find_browser, load_page
from tests.sweep.conftest import tiny_toml

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, mnist_root, cora_root):
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "out"
    toml = tmp / "sweep.toml"
    extra = '\n[datasets."scaled & <b>bold</b>"]\nspec = "mnist-scaled"\ntest_subset = 60\n'
    attacks = '\n[attacks.clean]\nattack = "none"\ndatasets = ["mnist", "scaled & <b>bold</b>", "cora"]\n'
    toml.write_text(tiny_toml(out, model_label=EVIL, graph=True, attacks=attacks, extra=extra).replace("epochs = 30", "epochs = 5"))
    summary = run_sweep(load_config(toml), progress=False, report=True)
    assert not summary.failed and summary.report == out / "report.html"
    return out


def test_files_and_numbers(report_dir):
    csv = pd.read_csv(report_dir / "results.csv")
    assert set(csv["metric"]) >= {"clean_accuracy", "robust_accuracy"}
    assert csv["value"].dtype == float
    acc = csv[csv["metric"].str.endswith("accuracy")]["value"]
    assert len(acc) == 6 and acc.between(0, 1).all()  # fractions, not percentages
    assert len(csv) == 3 * len(set(csv["metric"]))  # tidy: one row per cell x metric
    files = sorted(p.name for p in (report_dir / "json").iterdir())
    assert files == ["gcn.json", "script_alert_1_script.json"]
    doc = json.loads((report_dir / "json" / "gcn.json").read_text())
    assert doc["schema_version"] == 1 and doc["name"] == "gcn"
    assert isinstance(doc["clean_acc"], float) and 0.3 < doc["clean_acc"] <= 1
    assert all(isinstance(r["robust_acc"], float) for r in doc["results"])
    md = (report_dir / "summary.md").read_text()
    assert "| gcn | cora | clean |" in md


def test_user_strings_are_escaped(report_dir):
    html = (report_dir / "report.html").read_text()
    assert EVIL not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()  # the report runs no script at all
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline


def test_page_loads_in_headless_chromium(report_dir):
    if find_browser() is None:
        pytest.skip("no chromium binary: install the Debian package 'chromium' (.ci/run does)")
    pytest.importorskip("aiohttp", reason="the DevTools websocket client needs aiohttp")
    expr = """JSON.stringify({
      tables: Array.from(document.querySelectorAll('table')).map(t => [t.id, t.querySelectorAll('tbody tr').length]),
      images: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0),
      text: document.body.innerText})"""
    res = load_page(report_dir / "report.html", expr)
    assert res["errors"] == []
    page = json.loads(res["value"])
    tables = dict(page["tables"])
    assert tables["summary-table"] == 3 and tables["cells-table"] == 3 and tables["meta-table"] > 3
    assert page["images"] and all(page["images"])  # every embedded figure decodes
    assert EVIL in page["text"] and "scaled & <b>bold</b>" in page["text"]  # shown as text, not run


def test_browser_check_detects_broken_pages(tmp_path):
    """Negative control: the loader reports script errors and undecodable images."""
    if find_browser() is None:
        pytest.skip("no chromium binary: install the Debian package 'chromium' (.ci/run does)")
    pytest.importorskip("aiohttp", reason="the DevTools websocket client needs aiohttp")
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>throw new Error("boom")</script></body></html>')
    res = load_page(bad, "JSON.stringify(Array.from(document.images).map(i => i.naturalWidth > 0))")
    assert any("boom" in e for e in res["errors"]) and json.loads(res["value"]) == [False]
