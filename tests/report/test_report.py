"""Reports: files, numbers as numbers, escaping of user strings, and the page in headless Chromium."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.report.browser import find_browser, load_page
from tests.sweep.quick_fixture import EVIL, EVIL_DATASET


@pytest.fixture(scope="module")
def report_dir(quick_sweep):
    cfg, summary = quick_sweep
    assert summary.report == cfg.output / "report.html"
    return cfg.output


def test_files_and_numbers(report_dir, quick_sweep):
    _, summary = quick_sweep
    csv = pd.read_csv(report_dir / "results.csv")
    assert set(csv["metric"]) >= {"clean_accuracy", "robust_accuracy", "success_rate", "flips"}
    assert csv["value"].dtype == float
    acc = csv[csv["metric"].isin(["clean_accuracy", "robust_accuracy"])]["value"]
    assert len(acc) == 2 * summary.total and acc.between(0, 1).all()  # fractions, not percentages
    assert not csv.duplicated(["hash", "metric"]).any() and csv["hash"].nunique() == summary.total  # tidy
    files = sorted(p.name for p in (report_dir / "json").iterdir())
    assert files == ["deform_cnn.json", "gcn.json", "script_alert_1_script.json"]
    doc = json.loads((report_dir / "json" / "gcn.json").read_text())
    assert doc["schema_version"] == 4 and doc["name"] == "gcn" and doc["model"] == "gcn"
    assert isinstance(doc["clean_acc"], float) and 0.2 < doc["clean_acc"] <= 1
    assert all(isinstance(r["robust_acc"], float) for r in doc["results"])
    assert {r["attack"] for r in doc["results"]} >= {"clean", "pgd", "prbcd", "metattack", "nettack"}
    assert all(r["n"] > 0 and r["robust_acc_ci"][0] <= r["robust_acc"] <= r["robust_acc_ci"][1] for r in doc["results"])
    md = (report_dir / "summary.md").read_text()
    assert "| gcn | cora | clean |" in md and "| deform_cnn | mnist | grid | max_angle_deg=30 |" in md



def test_model_files_follow_the_results_schema(report_dir):
    from robustbench_geo.results_schema import JSON_SCHEMA_VERSION, read_results, validate

    for path in sorted((report_dir / "json").iterdir()):
        doc = json.loads(path.read_text())
        validate(doc)
        assert doc["kind"] == "model" and doc["schema_version"] == JSON_SCHEMA_VERSION and read_results(path) == doc
        assert all(r["clean_acc_ci"][0] <= r["clean_acc"] <= r["clean_acc_ci"][1] for r in doc["results"]
                   if r["clean_acc"] is not None and r["clean_acc_ci"][0] is not None)

def test_report_sections(report_dir):
    html = (report_dir / "report.html").read_text()
    for alt in ("overlay: grid on mnist", "overlay: metattack on cora (mode=poisoning)", "graph attacks: gcn on cora",
                "examples: deform_cnn x grid", "sampling locations: deform_cnn x grid", "graph perturbations: gcn x pgd",
                "durations per cell"):
        assert f'alt="{alt}' in html, alt


def test_user_strings_are_escaped(report_dir):
    html = (report_dir / "report.html").read_text()
    assert EVIL not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()  # the report runs no script at all
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline


def test_page_loads_in_headless_chromium(report_dir, quick_sweep):
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
    total = quick_sweep[1].total
    assert tables["summary-table"] == total and tables["cells-table"] == total and tables["meta-table"] > 3
    assert tables["pivot-image"] == 2 and tables["pivot-graph"] == 1  # one row per model
    assert page["images"] and all(page["images"])  # every embedded figure decodes
    assert len(page["images"]) >= 10
    assert EVIL in page["text"] and EVIL_DATASET in page["text"]  # shown as text, not run


def test_browser_check_detects_broken_pages(tmp_path):
    """Negative control: the loader reports script errors and undecodable images."""
    if find_browser() is None:
        pytest.skip("no chromium binary: install the Debian package 'chromium' (.ci/run does)")
    pytest.importorskip("aiohttp", reason="the DevTools websocket client needs aiohttp")
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>throw new Error("boom")</script></body></html>')
    res = load_page(bad, "JSON.stringify(Array.from(document.images).map(i => i.naturalWidth > 0))")
    assert any("boom" in e for e in res["errors"]) and json.loads(res["value"]) == [False]
