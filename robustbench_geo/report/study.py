"""The study preset's three questions, answered from a sweep's finished cells (``rbgeo sweep --preset study``).

The source (a lecture on Deformable ConvNets) ends with three open questions; :func:`study_headline`
turns a store's results into one answer per question, computed from the numbers and never written in
advance:

1. *Can deformable convolution add stability against affine fooling?* The deformable architecture
   against the regular ``cnn`` **trained alike** (plain, augmented, worst-of-10, ...), under every
   affine threat model (``grid``, ``worst_of_k``, ``affine_pgd``, ``scale``, ``random``, ``manifool``)
   and clean accuracy on other data than the training set (Scaled MNIST).
2. *Can spatially transformed adversarial examples be contained?* Every model under ``stadv``: the
   most robust one against the plain ``cnn``, and how much of its clean accuracy it keeps.
3. *Does this reduce data augmentation?* The plain deformable model against the augmented ``cnn``
   under the same conditions as question 1, and the gain augmentation brings to each architecture.

Accuracies are compared by their difference and its 95 % Newcombe interval; ManiFool by its
**invariance score** (the mean normalised geodesic distance of the fooling transforms, over the
correctly classified images it fooled; larger = more stable) with a normal-approximation 95 % interval
from the per-image distances stored with the cell. A difference is *resolved* when its interval
excludes 0. Every answer says how many comparisons the intervals resolve in each direction.

The headline also checks that the models are matched in clean accuracy on their training data
(at least :data:`MIN_CLEAN` and within :data:`~robustbench_geo.report.compare.CLEAN_GAP_WARN` of each
other) and starts with a ``WARNING`` line when they are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from robustbench_geo.report.compare import CLEAN_GAP_WARN, _budget_text, lines, threat_models
from robustbench_geo.stats import Z95, difference_interval, estimate

#: the regular architecture every question compares against
REGULAR = "cnn"
#: attacks whose threat model is an affine (or scaling) transform of the image
AFFINE_ATTACKS = ("grid", "worst_of_k", "affine_pgd", "scale", "random", "manifool")
#: attacks that move pixels along a free flow field (spatially transformed adversarial examples)
FLOW_ATTACKS = ("stadv",)
#: the clean accuracy every model should reach on its training data (a fraction)
MIN_CLEAN = 0.985
QUESTIONS = ("Can deformable convolution add stability against affine fooling?",
             "Can spatially transformed adversarial examples be contained?",
             "Does this reduce data augmentation?")


@dataclass(frozen=True)
class Score:
    """One model under one condition: an accuracy or an invariance score (fractions; ``kind`` says which)."""

    mean: float
    low: float
    high: float
    n: float
    kind: str  # "accuracy" or "invariance"
    se: float = float("nan")  # standard error of an invariance score

    def format(self) -> str:
        if math.isnan(self.mean):
            return "n/a"
        if self.kind == "invariance":
            interval = "no interval" if math.isnan(self.low) else f"[{self.low:.4f}, {self.high:.4f}]"
            return f"{self.mean:.4f} {interval} (invariance, n={self.n:g})"
        interval = "no interval" if math.isnan(self.low) else f"[{100 * self.low:.1f}, {100 * self.high:.1f}]"
        return f"{100 * self.mean:.1f} % {interval} (n={self.n:g})"


@dataclass(frozen=True)
class Diff:
    """``a - b`` under one condition, with its 95 % interval."""

    condition: str
    a: str
    b: str
    score_a: Score
    score_b: Score
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.score_a.mean - self.score_b.mean

    @property
    def resolved(self) -> int:
        """+1 / -1 when the interval lies above / below 0, 0 when it contains 0 (or is unknown)."""
        if math.isnan(self.low):
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def text(self) -> str:
        if math.isnan(self.low):
            diff = f"{self.value:+.4f}, no interval" if self.score_a.kind == "invariance" else \
                f"{100 * self.value:+.1f} points, no interval"
        elif self.score_a.kind == "invariance":
            diff = f"{self.value:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"
        else:
            diff = f"{100 * self.value:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
        verdict = {1: "resolved", -1: "resolved", 0: "not resolved by the 95 % intervals"}[self.resolved]
        return f"{self.condition}: {self.a} {self.score_a.format()} vs {self.b} {self.score_b.format()}, {diff}, {verdict}"


def _diff(condition: str, a: str, b: str, sa: Score, sb: Score) -> Diff:
    if sa.kind == "invariance":
        se = math.hypot(sa.se, sb.se)
        d = sa.mean - sb.mean
        lo, hi = (d - Z95 * se, d + Z95 * se) if math.isfinite(se) else (float("nan"), float("nan"))
    else:
        lo, hi = difference_interval(sa.mean, sa.n, sb.mean, sb.n)
    return Diff(condition, a, b, sa, sb, lo, hi)


def invariance_score(folder: Path | None, artefact_dirs: list[str]) -> Score | None:
    """The invariance score of ManiFool cells (seeds pooled) from their stored per-image distances."""
    from robustbench_geo.sweep.runner import read_artefacts

    if folder is None:
        return None
    values = []
    for rel in artefact_dirs:
        bc = read_artefacts(folder / rel).get("budget_curve") if isinstance(rel, str) and rel else None
        if not isinstance(bc, dict) or "min_fooling_budget" not in bc:
            return None
        b, correct = bc["min_fooling_budget"].double(), bc["correct"].bool()
        values.append(b[correct & b.isfinite()])
    v = torch.cat(values) if values else torch.zeros(0)
    k = v.numel()
    if k == 0:
        return None
    mean = float(v.mean())
    se = float(v.std(unbiased=True)) / math.sqrt(k) if k > 1 else float("nan")
    lo, hi = (mean - Z95 * se, mean + Z95 * se) if math.isfinite(se) else (float("nan"), float("nan"))
    return Score(mean, lo, hi, float(k), "invariance", se)


def _models(done) -> dict[str, tuple[str, str]]:
    """Model label -> (architecture, training label: '' for plain training, 'aug', 'wo10', ...)."""
    out = {}
    for label, name, tag in zip(done["model"], done["model_name"], done["trained_as"]):
        out[label] = (name, tag[len(name) + 1:] if tag.startswith(name + "+") else "")
    return out


def _conditions(done, folder: Path | None) -> dict[str, dict[str, Score]]:
    """Condition (threat model at its largest budget, or clean accuracy on other data) -> model label -> score."""
    out: dict[str, dict[str, Score]] = {}
    image = done[done["task"] == "image"]
    for tm in threat_models(image):
        name = tm.attack_name
        if name not in AFFINE_ATTACKS + FLOW_ATTACKS:
            continue
        where = tm.label
        scores: dict[str, Score] = {}
        for ln in lines(image, tm):
            x, est = ln.strongest
            if tm.budget_key:
                where = f"{tm.label} at {_budget_text(tm, x)}"
            if name == "manifool":
                g = image[(image["attack"] == tm.attack) & (image["dataset"] == tm.dataset) & (image["model"] == ln.model)]
                s = invariance_score(folder, [d for d in g["artefact_dir"]])
                if s is None:
                    s = Score(float("nan"), float("nan"), float("nan"), est.n, "invariance")
            else:
                s = Score(est.mean, est.low, est.high, est.n * est.seeds, "accuracy")
            scores[ln.model] = s
        out[f"{'flow' if name in FLOW_ATTACKS else 'affine'}|{where}"] = scores
    for (dataset, spec), g in image[image["attack_name"] == "none"].groupby(["dataset", "dataset_spec"], sort=False):
        scores = {}
        for model, gm in g.groupby("model", sort=False):
            trained_on = (gm["config"].iloc[0].get("training") or {}).get("dataset")
            if trained_on is None or trained_on == spec:
                continue
            est = _clean(gm)
            scores[model] = Score(est.mean, est.low, est.high, est.n * est.seeds, "accuracy")
        if scores:
            out[f"affine|clean on {dataset} (not the training data)"] = scores
    return out


def _clean(g):
    """Clean accuracy of ``none`` cells (seeds pooled)."""
    return estimate([float(a) for a in g["m:robust_accuracy"]], list(g["n"]))


def is_study(frame) -> bool:
    """The questions can be asked: finished image cells of ``cnn`` and of a deformable model, and at
    least one model trained with a spatial defense."""
    done = frame[(frame["status"] == "done") & (frame["task"] == "image")] if len(frame) else frame
    if not len(done):
        return False
    models = _models(done)
    archs = {a for a, _ in models.values()}
    return REGULAR in archs and bool(done["deformable"].any()) and any(t for _, t in models.values())


def clean_match(frame) -> list[str]:
    """One line on the matched clean accuracy of every trained model on its training data; ``WARNING`` when not."""
    done = frame[(frame["status"] == "done") & (frame["attack_name"] == "none") & (frame["task"] == "image")]
    clean = {}
    for model, g in done.groupby("model", sort=False):
        own = g[[(c.get("training") or {}).get("dataset") == s for c, s in zip(g["config"], g["dataset_spec"])]]
        if len(own):
            clean[model] = (_clean(own), own["dataset"].iloc[0])
    if not clean:
        return ["WARNING: no clean accuracy on the training data: the models cannot be checked for matched clean accuracy."]
    means = {m: e.mean for m, (e, _) in clean.items()}
    lo_m, hi_m = min(means, key=means.get), max(means, key=means.get)
    spread = means[hi_m] - means[lo_m]
    below = [f"{m} {clean[m][0].format()}" for m in clean if means[m] < MIN_CLEAN]
    where = ", ".join(dict.fromkeys(d for _, d in clean.values()))
    if not below and spread <= CLEAN_GAP_WARN + 1e-12:
        return [f"Clean accuracy matched on {where}: all {len(clean)} models >= {100 * MIN_CLEAN:g} % and within "
                f"{100 * spread:.1f} points ({lo_m} {100 * means[lo_m]:.1f} % to {hi_m} {100 * means[hi_m]:.1f} %)."]
    parts = []
    if below:
        parts.append(f"below {100 * MIN_CLEAN:g} %: {', '.join(below)}")
    if spread > CLEAN_GAP_WARN + 1e-12:
        parts.append(f"spread {100 * spread:.1f} points ({lo_m} {100 * means[lo_m]:.1f} % to {hi_m} "
                     f"{100 * means[hi_m]:.1f} %), more than {100 * CLEAN_GAP_WARN:g}")
    return [f"WARNING: clean accuracies on {where} are not matched ({'; '.join(parts)}): robustness differences "
            f"below are confounded with how well each model was trained."]


def _tally(diffs: list[Diff], a: str, b: str) -> str:
    up = sum(d.value > 0 for d in diffs)
    down = sum(d.value < 0 for d in diffs)
    up_r = sum(d.resolved > 0 for d in diffs)
    down_r = sum(d.resolved < 0 for d in diffs)
    if up_r and not down_r:
        verdict = f"yes where resolved: {a} is ahead in all {up_r} resolved comparison(s)"
    elif down_r and not up_r:
        verdict = f"no: {b} is ahead in all {down_r} resolved comparison(s)"
    elif up_r and down_r:
        verdict = f"mixed: {up_r} resolved for {a}, {down_r} resolved for {b}"
    else:
        verdict = "not resolved: every difference is within the 95 % intervals"
    return (f"{verdict} ({a} ahead in {up}, behind in {down} of {len(diffs)} comparison(s); "
            f"{up_r + down_r} resolved by the 95 % intervals)")


def study_headline(frame, folder: str | Path | None = None) -> list[str]:
    """The answers to :data:`QUESTIONS` from a cell frame (:func:`~robustbench_geo.report.tables.cells_frame`).

    Args:
        frame: the sweep's cells; only finished image cells are read.
        folder: the sweep's output folder (for ManiFool's per-image distances); without it ManiFool
            comparisons have no interval.

    Returns:
        Lines: the clean-accuracy match (``WARNING`` when not matched), then per question a line
        ``Q<i> <question> <answer>`` followed by one indented line per comparison. Empty when the
        cells are not a study (:func:`is_study`).
    """
    if not is_study(frame):
        return []
    folder = Path(folder) if folder is not None else None
    done = frame[(frame["status"] == "done") & (frame["task"] == "image")]
    models = _models(done)
    by_key = {v: k for k, v in models.items()}  # (architecture, training) -> label
    deform_archs = list(dict.fromkeys(models[m][0] for m in done[done["deformable"]]["model"]))
    trainings = list(dict.fromkeys(t for _, t in models.values()))
    conds = _conditions(done, folder)
    out = clean_match(frame)

    # Q1: deformable vs regular, trained alike, under every affine condition
    q1 = [d for arch in deform_archs for t in trainings
          for d in _affine_diffs(conds, by_key.get((arch, t)), by_key.get((REGULAR, t)), f"{t or 'plain'}, ")]
    out.append(f"Q1 {QUESTIONS[0]} " + (_tally(q1, "deformable", REGULAR) if q1 else
                                        "not answerable: no deformable and regular model trained alike under an affine threat model"))
    out += [f"  {d.text()}" for d in q1]

    # Q2: stAdv: the most robust model against the plain regular one, and what it keeps of its clean accuracy
    plain = by_key.get((REGULAR, ""))
    flow = [(k.split("|", 1)[1], s) for k, s in conds.items() if k.startswith("flow|")]
    if not flow:
        out.append(f"Q2 {QUESTIONS[1]} not answerable: no stadv cells")
    for where, scores in flow:
        ranked = sorted(scores, key=lambda m: -scores[m].mean)
        best = ranked[0]
        kept = _kept(done, best, scores[best])
        if plain in scores and best != plain:
            d = _diff(where, best, plain, scores[best], scores[plain])
            gain = (f"{best} is ahead of {plain} by {100 * d.value:+.1f} points [{100 * d.low:+.1f}, {100 * d.high:+.1f}], "
                    + ("resolved" if d.resolved else "not resolved by the 95 % intervals"))
        else:
            gain = f"no model is ahead of {plain or REGULAR}"
        out.append(f"Q2 {QUESTIONS[1]} Under {where}, the most robust model is {best} at {scores[best].format()}; "
                   f"{gain}; {kept}.")
        out.append("  " + "; ".join(f"{m} {scores[m].format()}" for m in ranked))

    # Q3: the plain deformable model against the augmented regular one; the gain augmentation brings to each
    defended = [t for t in trainings if t]
    q3 = [d for arch in deform_archs for t in defended
          for d in _affine_diffs(conds, by_key.get((arch, "")), by_key.get((REGULAR, t)))]
    gains = [d for base in [REGULAR, *deform_archs] for t in defended
             for d in _affine_diffs(conds, by_key.get((base, t)), by_key.get((base, "")), f"gain of {t} for {base}, ")]
    out.append(f"Q3 {QUESTIONS[2]} " + (f"Plain deformable vs augmented/adversarially trained {REGULAR}: "
                                        + _tally(q3, "plain deformable", f"trained {REGULAR}") if q3 else
                                        f"not answerable: no plain deformable model beside a defended {REGULAR}"))
    out += [f"  {d.text()}" for d in q3 + gains]
    return out


def _affine_diffs(conds: dict[str, dict[str, Score]], a: str | None, b: str | None, prefix: str = "") -> list[Diff]:
    """``a - b`` under every affine condition where both were measured (none when either model is missing)."""
    out = []
    for key, scores in conds.items():
        kind, where = key.split("|", 1)
        if kind == "affine" and a in scores and b in scores and not math.isnan(scores[a].mean + scores[b].mean):
            out.append(_diff(prefix + where, a, b, scores[a], scores[b]))
    return out


def _kept(done, model: str, robust: Score) -> str:
    """``'it keeps 71 % of its clean accuracy'`` for the stadv cells of ``model``."""
    g = done[(done["model"] == model) & (done["attack_name"].isin(FLOW_ATTACKS))]
    clean = [float(c) for c in g.get("m:clean_accuracy", []) if c is not None]
    if not clean or not sum(clean) or math.isnan(robust.mean):
        return "its clean accuracy on these images is unknown"
    c = sum(clean) / len(clean)
    return f"it keeps {100 * robust.mean / c:.0f} % of its clean accuracy on the same images ({100 * c:.1f} %)"
