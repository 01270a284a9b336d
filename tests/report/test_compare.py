"""Overlays, pivot, headline, matched-baseline warnings and intervals, on the quick preset's real output."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3

import pandas as pd
import pytest

from robustbench_geo.report import report_headline, write_report
from robustbench_geo.report.compare import CLEAN_GAP_WARN, compare, headline, lines, pivots, threat_models
from robustbench_geo.report.plots import overlay_figure
from robustbench_geo.report.tables import cells_frame
from robustbench_geo.sweep import ResultStore
from tests.sweep.quick_fixture import EVIL


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Textbook Wilson score interval, written out independently of robustbench_geo.stats."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.fixture(scope="module")
def frame(quick_sweep):
    cfg, _ = quick_sweep
    with ResultStore(cfg.output, "quick") as store:
        return cells_frame(store.cells())


def test_threat_models_cover_every_attack(frame, quick_sweep):
    cfg, _ = quick_sweep
    tms = threat_models(frame)
    attacked = {a.label for a in cfg.attacks.values() if a.attack != "none"}
    assert {tm.attack for tm in tms} == attacked
    keys = {tm.attack: tm.budget_key for tm in tms}
    assert keys["grid"] == "max_angle_deg" and keys["scale"] == "scale_range" and keys["pgd"] == "budget"
    assert keys["stadv"] is None  # no budget grid: clean vs attacked
    targeted = {tm.attack: tm.targeted for tm in tms}
    assert targeted["nettack"] and not targeted["pgd"]
    assert [ln.points for ln in lines(frame, next(tm for tm in tms if tm.attack == "nettack"))][0].keys() == {1.0}


def test_overlay_has_every_model_on_one_axis_from_budget_zero(frame):
    for tm in threat_models(frame):
        ls = lines(frame, tm)
        attacked = set(frame[(frame["attack"] == tm.attack) & (frame["status"] == "done")]["model"])
        assert {ln.model for ln in ls} == attacked
        fig = overlay_figure(tm, ls)
        assert len(fig.axes) == 1  # one axis, every model overlaid
        drawn = fig.axes[0].containers  # one errorbar container per model
        assert [c.get_label().split(" (")[0] for c in drawn] == [ln.model for ln in ls]
        for ln, c in zip(ls, drawn):
            x, y = c.lines[0].get_xdata(), c.lines[0].get_ydata()
            assert x[0] == 0.0 and y[0] == pytest.approx(100 * ln.clean.mean)  # budget 0 = clean accuracy
            assert len(x) == 1 + len(ln.points)
        if tm.attack == "worst_of_10":
            assert sorted(ls[0].points) == [10.0, 30.0]


def test_pivot_one_cell_per_model_and_threat_model(frame):
    by_task = {p.task: p for p in pivots(frame)}
    assert set(by_task) == {"image", "graph"}
    image, graph = by_task["image"], by_task["graph"]
    assert set(image.models) == {EVIL, "deform_cnn"} and graph.models == ["gcn"]
    tms = threat_models(frame)
    for p in (image, graph):
        n_tm = sum(tm.task == p.task for tm in tms)
        # a curve (two or more attacked budgets) adds its area as a column
        n_area = sum(tm.task == p.task and tm.budget_key is not None
                     and any(len([x for x in ln.points if x > 0]) >= 2 for ln in lines(frame, tm)) for tm in tms)
        n_clean = frame[(frame["task"] == p.task) & (frame["attack_name"] == "none")]["dataset"].nunique()
        assert len(p.columns) == n_clean + n_tm + n_area
        assert len(p.cells) == len(p.models) * len(p.columns)
        assert all(v is not None for v in p.cells.values())  # every model evaluated under every threat model here
        table = p.table()
        assert len(table) == len(p.models) and all(len(r) == 1 + len(p.columns) for r in table)
        assert all("[" in v for r in table for v in r[1:])  # every cell carries its interval
    assert "clean on mnist" in image.columns and "grid on mnist at max_angle_deg=30" in image.columns


def test_area_under_the_curve_is_the_trapezoid_through_the_clean_point(frame):
    """The pivot's area column equals a hand trapezoid of the curve the overlay draws (0 = clean)."""
    tm = next(tm for tm in threat_models(frame) if tm.attack == "worst_of_10")
    pivot = next(p for p in pivots(frame) if p.task == "image")
    col = next(c for c in pivot.columns if c.startswith("worst_of_10 on mnist: area under the curve"))
    assert col.endswith("0 to max_angle_deg=30")
    for ln in lines(frame, tm):
        c, a, b = ln.clean.mean, ln.points[10.0].mean, ln.points[30.0].mean
        by_hand = (10 * (c + a) / 2 + 20 * (a + b) / 2) / 30
        area = pivot.cells[ln.model, col]
        assert area.mean == pytest.approx(by_hand, abs=1e-12)
        assert area.low <= area.mean <= area.high
        assert min(c, a, b) <= area.mean <= max(c, a, b)
    one_point = next(tm for tm in threat_models(frame) if tm.attack == "stadv")  # clean vs attacked only
    assert all(ln.area() is None for ln in lines(frame, one_point))


def test_intervals_hand_computed(quick_sweep):
    cfg, _ = quick_sweep
    csv = pd.read_csv(cfg.output / "results.csv")
    acc = csv[csv["metric"].isin(["clean_accuracy", "robust_accuracy"])]
    assert len(acc) and acc["n"].notna().all()
    for r in acc.itertuples():
        k = round(r.value * r.n)
        assert k == pytest.approx(r.value * r.n, abs=1e-3), r  # an accuracy is a count over n (float32 means)
        lo, hi = _wilson(k, int(r.n))
        assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    nettack = acc[acc["attack_name"] == "nettack"].set_index("metric")["n"]
    assert nettack["robust_accuracy"] == 40 and nettack["clean_accuracy"] > 1000  # targets vs all test nodes
    assert (acc[(acc["model"] == "gcn") & (acc["attack_name"] == "pgd")]["n"] > 1000).all()  # test nodes
    doc = json.loads((cfg.output / "json" / "deform_cnn.json").read_text())
    assert doc["schema_version"] == 4
    for r in doc["results"]:
        lo, hi = r["robust_acc_ci"]
        assert lo <= r["robust_acc"] <= hi and r["n"] == 24


@pytest.mark.parametrize("gap_points,warned", [(0.0, False), (0.6, False), (3.0, True)])
def test_warning_iff_clean_gap_over_one_point(frame, gap_points, warned):
    f = frame.copy()
    deform = f["model"] == "deform_cnn"
    f["m:clean_accuracy"] = f["m:clean_accuracy"].astype(float)
    base = f.loc[~deform & (f["task"] == "image"), "m:clean_accuracy"].astype(float).max()
    f.loc[f["task"] == "image", "m:clean_accuracy"] = 0.5
    f.loc[deform, "m:clean_accuracy"] = 0.5 + gap_points / 100
    assert not math.isnan(base)
    comps = [c for tm in threat_models(f) if tm.task == "image" for c in compare(f, tm)]
    assert comps and all((c.warning is not None) == warned for c in comps)
    assert CLEAN_GAP_WARN == 0.01
    text = "\n".join(headline(f))
    assert ("WARNING: clean accuracies differ by 3.0 points" in text) == warned


def test_warning_rendered_in_report(quick_sweep, frame, tmp_path):
    """A store whose clean accuracies differ by 5 points shows the warning; the real run only if its gap is > 1 point."""
    cfg, _ = quick_sweep
    real = (cfg.output / "report.html").read_text()
    gaps = [c.clean_gap for tm in threat_models(frame) for c in compare(frame, tm)]
    assert ('class="warning"' in real) == any(g > CLEAN_GAP_WARN for g in gaps)
    folder = tmp_path / "gap"
    shutil.copytree(cfg.output, folder)
    con = sqlite3.connect(folder / "results.sqlite")
    for model, acc in ((EVIL, 0.5), ("deform_cnn", 0.55)):
        con.execute("UPDATE metrics SET value = ? WHERE name = 'clean_accuracy' AND hash IN "
                    "(SELECT hash FROM cells WHERE model = ?)", (acc, model))
    con.commit()
    con.close()
    html = write_report(folder)["html"].read_text()
    assert "clean accuracies differ by 5.0 points" in html and 'class="warning"' in html
    assert any("WARNING: clean accuracies differ by 5.0 points" in line for line in report_headline(folder))


def test_headline_names_the_comparison(frame):
    text = headline(frame)
    assert any("deform_cnn" in line and EVIL in line for line in text)
    assert any(line.startswith("metattack on cora (mode=poisoning)") and "gcn" in line for line in text)
    assert all("nan" not in line for line in text)
