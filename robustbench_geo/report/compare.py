"""Threat models, the leaderboard pivot, model comparisons and the headline, from a sweep's cell frame.

A **threat model** is one attack label on one dataset with every grid value fixed except its
budget (``budget`` for graph attacks, ``max_angle_deg`` / ``max_shift_px`` / ``scale_range`` /
``k`` for image attacks); the budget varies along the x axis of its overlay figure, which starts
at budget 0 = the clean accuracy of the same samples. The pivot and the headline use the largest
budget of each threat model; where a model has two or more budgets the pivot adds the area under
its robustness curve (:meth:`Line.area`, the mean accuracy from budget 0 to the largest). Every
number is an :class:`~robustbench_geo.stats.Estimate`: the mean over seeds, the std over seeds, and
the 95 % Wilson interval of the pooled samples.

Two models are compared by the difference of their robust accuracies and its 95 % Newcombe
interval; the difference is called *larger than the intervals* when that interval excludes 0.
A comparison whose clean accuracies differ by more than :data:`CLEAN_GAP_WARN` carries a warning:
robustness is then confounded with how well each model was trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from robustbench_geo.report.tables import tagged
from robustbench_geo.stats import Estimate, difference_interval, estimate

#: grid keys read as the budget of a threat model, in order of preference
BUDGET_KEYS = ("budget", "max_angle_deg", "max_shift_px", "scale_range", "max_scale", "k")
#: clean accuracies further apart than this (a fraction: 1 point) make a comparison suspect
CLEAN_GAP_WARN = 0.01
#: how a budget key is shown on an x axis
BUDGET_LABELS = {"budget": "% of edges perturbed", "max_angle_deg": "max angle (deg)", "max_shift_px": "max shift (px)",
                 "scale_range": "scale range width (1 - min factor)", "max_scale": "max scale factor",
                 "k": "k (random transforms)"}


def budget_value(key: str, value, *, targeted: bool = False) -> float | None:
    """A grid value as a number on the budget axis: graph budgets in % of edges (targeted attacks:
    flips per target, as given), ranges by their width."""
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in value):
            return abs(float(value[1]) - float(value[0]))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return 100 * float(value) if key == "budget" and not targeted else float(value)


@dataclass(frozen=True)
class ThreatModel:
    """One attack label on one dataset with a fixed setting except the budget."""

    dataset: str
    attack: str
    attack_name: str
    task: str
    budget_key: str | None
    rest: str  # the fixed part of the setting, "" when nothing else is set
    targeted: bool = False  # budget in flips per target (Nettack's protocol), not in % of edges

    @property
    def label(self) -> str:
        return f"{self.attack} on {self.dataset}" + (f" ({self.rest})" if self.rest else "")

    @property
    def axis_label(self) -> str:
        if self.targeted and self.budget_key == "budget":
            return "flips per target"
        return BUDGET_LABELS.get(self.budget_key, self.budget_key or "")


@dataclass
class Line:
    """One model's accuracies under one threat model: ``points[x]`` for each budget, ``clean`` at 0.

    ``clean`` is the accuracy of the attacked samples before the attack (budget 0); ``baseline`` is
    the model's clean accuracy that comparisons check for a match. They differ only for targeted
    attacks, whose targets are correctly classified test nodes by construction (``clean`` = 100 %
    of the targets) while ``baseline`` is over all test nodes.
    """

    model: str
    deformable: bool
    clean: Estimate
    baseline: Estimate
    points: dict[float, Estimate] = field(default_factory=dict)

    @property
    def strongest(self) -> tuple[float, Estimate]:
        x = max(self.points)
        return x, self.points[x]

    def area(self) -> Estimate | None:
        """Area under the robustness curve: the trapezoid through ``(0, clean)`` and every budget's point,
        divided by the largest budget (a mean accuracy over ``[0, max budget]``, in ``[0, 1]``).

        ``None`` below two attacked budgets (one point is a number, not a curve). Its interval and std
        are the same trapezoid over the points' interval ends and stds: every point is measured on the
        same samples, so the points' errors are positively correlated and this combination is the
        conservative (wide) one; ``n`` and ``seeds`` are the smallest of the points'.
        """
        xs = sorted(x for x in self.points if x > 0)
        if len(xs) < 2:
            return None
        xs, ests = [0.0, *xs], [self.clean, *(self.points[x] for x in xs)]
        w = [0.0] * len(xs)
        for i in range(len(xs) - 1):
            half = (xs[i + 1] - xs[i]) / 2 / xs[-1]
            w[i] += half
            w[i + 1] += half

        def mix(attr: str) -> float:
            return sum(wi * getattr(e, attr) for wi, e in zip(w, ests))

        return Estimate(mix("mean"), mix("std"), mix("low"), mix("high"), min(e.n for e in ests),
                        min(e.seeds for e in ests))


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` (more robust) against ``b`` under one threat model at its largest budget."""

    threat: ThreatModel
    budget: float | None
    a: str
    b: str
    robust_a: Estimate
    robust_b: Estimate
    clean_a: Estimate
    clean_b: Estimate
    diff_low: float
    diff_high: float

    @property
    def diff(self) -> float:
        return self.robust_a.mean - self.robust_b.mean

    @property
    def significant(self) -> bool:
        """The 95 % interval of the difference excludes 0."""
        return not math.isnan(self.diff_low) and (self.diff_low > 0 or self.diff_high < 0)

    @property
    def clean_gap(self) -> float:
        return abs(self.clean_a.mean - self.clean_b.mean)

    @property
    def warning(self) -> str | None:
        """The matched-baseline warning, or ``None`` when the clean accuracies are within 1 point."""
        if math.isnan(self.clean_gap) or self.clean_gap <= CLEAN_GAP_WARN + 1e-12:
            return None
        return (f"clean accuracies differ by {100 * self.clean_gap:.1f} points ({self.a} {self.clean_a.format()}, "
                f"{self.b} {self.clean_b.format()}): robustness is confounded with training quality; "
                f"compare models trained to matched clean accuracy")

    def sentence(self) -> str:
        where = f"{self.threat.label}" + (f" at {_budget_text(self.threat, self.budget)}" if self.budget is not None else "")
        verdict = ("larger than the 95 % intervals" if self.significant else "within the 95 % intervals (not resolved)")
        interval = ("no interval: sample counts unknown" if math.isnan(self.diff_low) else
                    f"difference interval [{100 * self.diff_low:+.1f}, {100 * self.diff_high:+.1f}]")
        return (f"{where}: {self.a} {self.robust_a.format()} vs {self.b} {self.robust_b.format()}, "
                f"{100 * self.diff:+.1f} points, {verdict}; {interval} ({_n_text(self.robust_a)})")


def _n_text(e: Estimate) -> str:
    if math.isnan(e.n):
        return "n unknown"
    return f"n={e.n:g}" + (f" x {e.seeds} seeds" if e.seeds > 1 else "")


def _budget_text(tm: ThreatModel, x: float) -> str:
    if tm.budget_key == "budget" and tm.targeted:
        return f"{x:g} flips per target"
    if tm.budget_key == "budget":
        return f"{x:g} % of edges"
    if tm.budget_key == "scale_range":  # a range is placed on the budget axis by its width (budget_value)
        return f"scale_range of width {x:g}"
    return f"{tm.budget_key}={x:g}"


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    if not len(frame) or "status" not in frame:
        return frame.iloc[0:0]
    return frame[frame["status"] == "done"]


def _budget_key(points: list[dict]) -> str | None:
    keys = {k for gp in points for k in gp}
    for k in BUDGET_KEYS:
        if k in keys and all(budget_value(k, gp.get(k)) is not None for gp in points):
            return k
    for k in sorted(keys):  # any other numeric key that varies
        vals = {budget_value(k, gp.get(k)) for gp in points}
        if None not in vals and len(vals) >= 2:
            return k
    return None


def _rest(gp: dict, key: str | None) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(gp.items()) if k != key)


def threat_models(frame: pd.DataFrame) -> list[ThreatModel]:
    """Every threat model of the finished cells (attack ``none`` excluded), in sweep order."""
    out: list[ThreatModel] = []
    done = _done(frame)
    for (attack, dataset), g in done.groupby(["attack", "dataset"], sort=False):
        if g["kind"].iloc[0] != "attack" or g["attack_name"].iloc[0] == "none":  # certificates have their own section
            continue
        key = _budget_key(list(g["grid_point"]))
        for rest in dict.fromkeys(_rest(gp, key) for gp in g["grid_point"]):
            out.append(ThreatModel(dataset, attack, g["attack_name"].iloc[0], g["task"].iloc[0], key, rest, _targeted(g)))
    return out


def _cells(frame: pd.DataFrame, tm: ThreatModel) -> pd.DataFrame:
    done = _done(frame)
    g = done[(done["attack"] == tm.attack) & (done["dataset"] == tm.dataset)]
    return g[[_rest(gp, tm.budget_key) == tm.rest for gp in g["grid_point"]]]


def _estimate(g: pd.DataFrame, metric: str) -> Estimate:
    col = f"m:{metric}"
    accs = list(g[col]) if col in g else [float("nan")] * len(g)
    ns = g["clean_n" if metric == "clean_accuracy" and "clean_n" in g else "n"]
    return estimate([float("nan") if a is None else float(a) for a in accs], list(ns))


def _targeted(g: pd.DataFrame) -> bool:
    return "m:targets" in g and bool(g["m:targets"].notna().any())


def lines(frame: pd.DataFrame, tm: ThreatModel) -> list[Line]:
    """Each model's line under ``tm``: robust accuracy per budget and the clean accuracy (budget 0)."""
    out = []
    for model, g in _cells(frame, tm).groupby("model", sort=False):
        xs = [budget_value(tm.budget_key, gp.get(tm.budget_key), targeted=tm.targeted) if tm.budget_key else 1.0
              for gp in g["grid_point"]]
        g = g.assign(_x=xs)
        first = g[g["_x"] == g["_x"].min()]
        baseline = _estimate(first, "clean_accuracy")
        clean = estimate([1.0] * len(first), list(first["n"])) if _targeted(first) else baseline
        line = Line(model, bool(g["deformable"].iloc[0]), clean, baseline)
        for x, gx in g.groupby("_x", sort=True):
            line.points[float(x)] = _estimate(gx, "robust_accuracy")
        out.append(line)
    return out


def compare(frame: pd.DataFrame, tm: ThreatModel) -> list[Comparison]:
    """Comparisons under ``tm`` at its largest budget (models evaluated there).

    With regular and deformable models present: the most robust deformable model against the most
    robust regular one; otherwise the most robust model against each of the others.
    """
    ls = [ln for ln in lines(frame, tm) if ln.points]
    if len(ls) < 2:
        return []
    top = max(max(ln.points) for ln in ls)
    ls = [ln for ln in ls if top in ln.points and not math.isnan(ln.points[top].mean)]
    ls.sort(key=lambda ln: -ln.points[top].mean)
    deform, regular = [ln for ln in ls if ln.deformable], [ln for ln in ls if not ln.deformable]
    pairs = [(deform[0], regular[0])] if deform and regular else [(ls[0], other) for other in ls[1:]]
    out = []
    for p, q in pairs:
        a, b = (p, q) if p.points[top].mean >= q.points[top].mean else (q, p)
        ra, rb = a.points[top], b.points[top]
        lo, hi = difference_interval(ra.mean, ra.n * ra.seeds, rb.mean, rb.n * rb.seeds)
        out.append(Comparison(tm, top if tm.budget_key else None, a.model, b.model, ra, rb, a.baseline, b.baseline, lo, hi))
    return out


@dataclass(frozen=True)
class Pivot:
    """A leaderboard: rows = models, columns = clean accuracy per dataset then threat models (largest budget)."""

    task: str
    models: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Estimate | None]  # (model, column) -> estimate, None where not evaluated
    warnings: dict[str, str]  # column -> matched-baseline warning
    tags: dict[str, str] = field(default_factory=dict)  # model -> architecture + training defense (cnn+wo10)

    def table(self) -> list[list[str]]:
        """Rows of formatted cells (``"—"`` where a model was not evaluated); a defended model's label is
        followed by what it is (``robust (cnn+wo10)``)."""
        return [[tagged(m, self.tags.get(m, ""))] + [self.cells[m, c].format() if self.cells[m, c] is not None else "—" for c in self.columns]
                for m in self.models]


def pivots(frame: pd.DataFrame) -> list[Pivot]:
    """One pivot per task (image, graph, ...) over the models evaluated on it."""
    done = _done(frame)
    out = []
    for task, g in done.groupby("task", sort=False):
        models = list(dict.fromkeys(g["model"]))
        cols: dict[str, dict[str, Estimate]] = {}
        warnings: dict[str, str] = {}
        for dataset, gd in g[g["attack_name"] == "none"].groupby("dataset", sort=False):
            cols[f"clean on {dataset}"] = {m: _estimate(gm, "robust_accuracy") for m, gm in gd.groupby("model", sort=False)}
        for tm in threat_models(g):
            col = tm.label
            ls = lines(g, tm)
            top = max((max(ln.points) for ln in ls if ln.points), default=None)
            if top is None:
                continue
            if tm.budget_key:
                col += f" at {_budget_text(tm, top)}"
            cols[col] = {ln.model: ln.points[top] for ln in ls if top in ln.points}
            warn = [c.warning for c in compare(g, tm) if c.warning]
            if warn:
                warnings[col] = warn[0]
            areas = {ln.model: ln.area() for ln in ls if top in ln.points}
            if tm.budget_key and any(a is not None for a in areas.values()):
                # the whole curve in one number: mean accuracy over budgets 0 (clean) to the largest
                cols[f"{tm.label}: area under the curve, 0 to {_budget_text(tm, top)}"] = areas
        cells = {(m, c): cols[c].get(m) for m in models for c in cols}
        tags = dict(zip(g["model"], g["trained_as"])) if "trained_as" in g else {}
        out.append(Pivot(str(task), models, list(cols), cells, warnings, tags))
    return out


def headline(frame: pd.DataFrame) -> list[str]:
    """The headline, computed from the data: one summary sentence per task, then one per comparison.

    Threat models with a single model state its clean and robust accuracy instead. Comparisons
    whose clean accuracies differ by more than 1 point end with ``WARNING: ...``.
    """
    done = _done(frame)
    if not len(done):
        return ["No finished cells: nothing to compare (see the failed cells and the log)."]
    out: list[str] = []
    tms = threat_models(done)
    comps = [c for tm in tms for c in compare(done, tm)]
    wins: dict[tuple[str, str], list[Comparison]] = {}
    for c in comps:
        if c.diff > 0:
            wins.setdefault((c.threat.task, c.a), []).append(c)
    for task in dict.fromkeys(tm.task for tm in tms):
        n_task = sum(1 for c in comps if c.threat.task == task)
        for (t, model), cs in sorted(wins.items(), key=lambda kv: -len(kv[1])):
            if t != task:
                continue
            sig = sum(c.significant for c in cs)
            losers = sorted({c.b for c in cs})
            out.append(f"{model} is more robust than {', '.join(losers)} under {len(cs)} of {n_task} {task} "
                       f"threat model(s) compared, {sig} of them by more than the 95 % intervals.")
        ties = sum(1 for c in comps if c.threat.task == task and c.diff == 0)
        if ties:
            out.append(f"{ties} of {n_task} {task} comparison(s) are exact ties.")
    for c in comps:
        out.append(c.sentence() + (f". WARNING: {c.warning}" if c.warning else ""))
    for tm in tms:
        ls = [ln for ln in lines(done, tm) if ln.points]
        if len(ls) == 1:
            ln = ls[0]
            x, est = ln.strongest
            at = f" at {_budget_text(tm, x)}" if tm.budget_key else ""
            what = "of its targets" if _targeted(_cells(done, tm)) else ""
            out.append(f"{tm.label}{at}: {ln.model} {ln.clean.format()} clean -> {est.format()} {what}".rstrip()
                       + f" ({100 * (est.mean - ln.clean.mean):+.1f} points, {_n_text(est)})")
    if not out:
        out.append("Only clean accuracies in this sweep: no threat model to compare.")
    return out
