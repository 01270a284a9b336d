"""The study headline on stored results: real cells of the study preset in a real store, with chosen accuracies."""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_geo.report import report_headline, write_report
from robustbench_geo.report.study import QUESTIONS, study_headline
from robustbench_geo.report.tables import cells_frame
from robustbench_geo.sweep import ResultStore, expand, load_config
from robustbench_geo.sweep.runner import write_artefacts

AFFINE = ("grid", "worst_of_k", "affine_pgd", "scale")


def training_of(cell) -> str:
    arch = cell.config["model"]["name"]
    return cell.model_label[len(arch) + 1:] if cell.model_label != arch else ""


def fill_store(folder, accuracy, *, clean=lambda arch, t: 0.99, distances=None, only=None) -> None:
    """Every cell of the study preset finished with ``accuracy(arch, training, attack, dataset spec)``.

    ManiFool cells store per-image normalised distances ``distances(arch, training)`` (a list, one per
    attacked image; all images correctly classified) as the runner's budget-curve artefact.
    """
    cfg = load_config("study", output=folder)
    cells = [c for c in expand(cfg) if only is None or only(c)]
    with ResultStore(folder, "study") as store:
        store.register(cells)
        for c in cells:
            arch, t = c.config["model"]["name"], training_of(c)
            attack, spec = c.config["attack"]["name"], c.config["dataset"]["spec"]
            n = c.config["attack"]["runner"]["n"]
            ca = clean(arch, t) if spec == "mnist" else 0.6
            ra = ca if attack == "none" else accuracy(arch, t, attack, spec)
            rel, artefacts = f"cells/{c.hash[:16]}", {}  # every finished cell has its artefact folder, as the driver writes
            if attack == "manifool" and distances is not None:
                d = torch.tensor(distances(arch, t), dtype=torch.float64)
                artefacts = {"budget_curve": {"unit": "normalised geodesic distance", "min_fooling_budget": d,
                                              "correct": torch.ones(len(d), dtype=torch.bool)}}
            write_artefacts(folder / rel, {"artefacts": artefacts})
            info = {"defense": {"label": t} if t else None, "deform_backend": "native" if arch == "deform_cnn" else None}
            assert store.claim(c.hash)
            store.finish(c.hash, {"clean_accuracy": ca, "robust_accuracy": ra, "n": float(n)}, seconds=1.0,
                         train_seconds=0.0, attack_seconds=1.0, info=info, artefact_dir=rel)


def question_line(lines, i):
    return next(ln for ln in lines if ln.startswith(f"Q{i + 1} {QUESTIONS[i]}"))


def test_deformable_ahead_is_resolved_and_every_question_is_answered(tmp_path):
    def acc(arch, t, attack, spec):
        base = {"": 0.2, "aug": 0.5, "wo10": 0.8}[t]
        if attack == "stadv":
            return {"cnn": 0.1, "deform_cnn": 0.3, "p4cnn": 0.2}[arch] + (0.3 if t == "wo10" else 0.0)
        return base + (0.15 if arch == "deform_cnn" else 0.0)

    fill_store(tmp_path, acc, distances=lambda arch, t: [0.1 + (0.05 if arch == "deform_cnn" else 0.0)
                                                          + 0.01 * (i % 5) for i in range(100)])
    lines = report_headline(tmp_path)
    assert lines[0].startswith("Clean accuracy matched on mnist: all 9 models >= 98.5 %")
    q1 = question_line(lines, 0)
    # 3 trainings x (grid, worst_of_k and scale on 2 datasets each, affine_pgd, manifool, clean on Scaled MNIST);
    # the clean Scaled MNIST accuracies are equal here (60 %): 21 comparisons favour deform_cnn, 3 are ties
    assert "yes where resolved: deformable is ahead in all 21 resolved comparison(s)" in q1
    assert "(deformable ahead in 21, behind in 0 of 24 comparison(s); 21 resolved" in q1
    grid = next(ln for ln in lines if ln.startswith("  plain, grid on mnist"))
    assert "deform_cnn 35.0 % [" in grid and "cnn 20.0 % [" in grid and "+15.0 points [" in grid and grid.endswith("resolved")
    mani = next(ln for ln in lines if ln.startswith("  plain, manifool on mnist-100"))
    assert "deform_cnn 0.1700 [" in mani and "cnn 0.1200 [" in mani and "(invariance, n=100)" in mani and "+0.0500" in mani
    q2 = question_line(lines, 1)
    assert "the most robust model is deform_cnn_wo10 at 60.0 % [" in q2
    assert "ahead of cnn by +50.0 points" in q2 and "resolved" in q2 and "keeps 61 % of its clean accuracy" in q2
    # plain deform_cnn (35 %) is behind cnn+aug (50 %) and cnn+wo10 (80 %) under every attack, but ahead of
    # both in ManiFool's invariance (0.17 vs 0.12, whatever the training): mixed, each side resolved
    q3 = question_line(lines, 2)
    assert "mixed: 2 resolved for plain deformable, 12 resolved for trained cnn" in q3
    assert "(plain deformable ahead in 2, behind in 12 of 16 comparison(s); 14 resolved" in q3
    gain = next(ln for ln in lines if ln.startswith("  gain of aug for cnn, grid on mnist"))
    assert "cnn_aug 50.0 %" in gain and "+30.0 points" in gain
    html = write_report(tmp_path)["html"].read_text()
    assert QUESTIONS[0] in html and QUESTIONS[1] in html and QUESTIONS[2] in html


@pytest.mark.parametrize("delta,verdict", [(-0.15, "no: cnn is ahead in all 18 resolved"),
                                           (0.0, "not resolved: every difference is within the 95 % intervals"),
                                           (0.03, "not resolved: every difference is within the 95 % intervals")])
def test_q1_verdict_follows_the_intervals(tmp_path, delta, verdict):
    def acc(arch, t, attack, spec):  # 0.5 + 3 points at n=200: the 95 % interval of the difference contains 0
        return 0.5 + (delta if arch == "deform_cnn" else 0.0)

    fill_store(tmp_path, acc)  # no ManiFool distances stored: those comparisons are left out, not guessed
    q1 = question_line(report_headline(tmp_path), 0)
    assert verdict in q1


def test_unmatched_clean_accuracy_is_a_visible_warning(tmp_path):
    fill_store(tmp_path, lambda *a: 0.5, clean=lambda arch, t: 0.97 if (arch, t) == ("p4cnn", "wo10") else 0.99)
    lines = report_headline(tmp_path)
    assert lines[0].startswith("WARNING: clean accuracies on mnist are not matched (below 98.5 %: p4cnn_wo10 97.0 % [")
    assert "spread 2.0 points (p4cnn_wo10 97.0 % to cnn 99.0 %), more than 1" in lines[0]
    html = write_report(tmp_path)["html"].read_text()
    assert '<li class="warning">WARNING: clean accuracies on mnist are not matched' in html


def test_no_study_without_a_defended_model(tmp_path):
    fill_store(tmp_path, lambda *a: 0.5, only=lambda c: training_of(c) == "")
    frame = cells_frame(ResultStore(tmp_path, create=False).cells())
    assert study_headline(frame, tmp_path) == []
    assert not any(ln.startswith("Q1 ") for ln in report_headline(tmp_path))


def test_manifool_interval_is_the_mean_of_the_stored_distances(tmp_path):
    values = [0.05 * (1 + i % 4) for i in range(100)]  # mean 0.125, sample std 0.0559
    fill_store(tmp_path, lambda *a: 0.5, distances=lambda arch, t: values,
               only=lambda c: c.config["attack"]["name"] in ("manifool", "none") and c.config["model"]["name"] != "p4cnn")
    lines = report_headline(tmp_path)
    line = next(ln for ln in lines if ln.startswith("  plain, manifool on mnist-100"))
    t = torch.tensor(values, dtype=torch.float64)
    half = 1.959964 * float(t.std()) / math.sqrt(100)
    assert f"cnn 0.1250 [{0.125 - half:.4f}, {0.125 + half:.4f}] (invariance, n=100)" in line
    assert "not resolved by the 95 % intervals" in line


def test_one_fooled_image_gives_an_invariance_score_without_an_interval(tmp_path):
    fill_store(tmp_path, lambda *a: 0.5, distances=lambda arch, t: [0.3] if arch == "cnn" else [0.2, 0.4],
               only=lambda c: c.config["attack"]["name"] in ("manifool", "none") and c.config["model"]["name"] != "p4cnn")
    line = next(ln for ln in report_headline(tmp_path) if ln.startswith("  plain, manifool on mnist-100"))
    assert "cnn 0.3000 no interval (invariance, n=1)" in line and "+0.0000, no interval" in line
    assert "nan" not in line
