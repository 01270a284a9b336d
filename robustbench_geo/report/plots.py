"""Figures for the report (matplotlib, Agg), returned as ``data:image/png;base64`` URIs.

Every function takes plain data (frames, tensors) and returns one embedded PNG, so the report
is a single file that opens offline.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from robustbench_geo.attacks.image.search import IDENTITY  # noqa: E402
from robustbench_geo.evaluation.image import budget_curve  # noqa: E402
from robustbench_geo.report.compare import Line, ThreatModel  # noqa: E402


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _yerr(ests) -> list[list[float]]:
    """Asymmetric error bars (percent) from estimates' 95 % intervals (0 where there is none)."""
    lo = [0.0 if math.isnan(e.low) else 100 * (e.mean - e.low) for e in ests]
    hi = [0.0 if math.isnan(e.high) else 100 * (e.high - e.mean) for e in ests]
    return [lo, hi]


def _draw_line(ax, label: str, xs: list[float], ests: list, **style) -> None:
    ax.errorbar(xs, [100 * e.mean for e in ests], yerr=_yerr(ests), marker=style.pop("marker", "o"), capsize=3,
                label=label[:60], **style)


def overlay(tm: ThreatModel, model_lines: list[Line], warning: str | None = None) -> str:
    """:func:`overlay_figure` as an embedded PNG."""
    return to_data_uri(overlay_figure(tm, model_lines, warning))


def overlay_figure(tm: ThreatModel, model_lines: list[Line], warning: str | None = None):
    """Every model under one threat model on ONE axis: accuracy vs budget, starting at budget 0 = clean.

    Error bars are 95 % Wilson intervals; deformable models are drawn solid, others dashed. A
    threat model without a budget key (e.g. Nettack's per-target budget) has two x positions:
    clean and attacked. A matched-baseline ``warning`` turns the title red and is printed on the axis.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for ln in model_lines:
        xs = [0.0] + sorted(ln.points)
        ests = [ln.clean] + [ln.points[x] for x in xs[1:]]
        area = ln.area() if tm.budget_key else None
        _draw_line(ax, ln.model + (" (deformable)" if ln.deformable else "")
                   + (f" (area {100 * area.mean:.1f} %)" if area is not None else ""), xs, ests,
                   linestyle="-" if ln.deformable else "--")
    if tm.budget_key:
        ax.set_xlabel(f"{tm.axis_label} (0 = clean)")
    else:
        ax.set_xticks([0.0, 1.0], ["clean", tm.attack_name])
        ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel(f"accuracy on {tm.dataset} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(tm.label[:80], fontsize=9, color="crimson" if warning else "black")
    if warning:
        ax.text(0.5, 0.02, "clean accuracies differ by > 1 point", transform=ax.transAxes, ha="center", fontsize=7,
                color="crimson")
    return fig


def budget_curves(title: str, unit: str, curves: list[tuple[str, list[float], list[float], int]]) -> str:
    """Accuracy vs budget from per-image smallest fooling budgets (one attack pass per model), as steps.

    Args:
        title: the figure title (attack and dataset).
        unit: the budget's unit (x axis).
        curves: ``(label, budgets, accuracies in [0, 1], n)`` per model; ``budgets[0] == 0`` (clean accuracy).
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, xs, ys, n in curves:
        ax.step(xs, [100 * y for y in ys], where="post", label=f"{label} (n = {n})"[:60])
    ax.set_xlabel(f"{unit} (0 = clean)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title[:80], fontsize=9)
    return to_data_uri(fig)


def pooled_curve(label: str, parts: list[dict]) -> tuple[str, list[float], list[float], int]:
    """One line for :func:`budget_curves` from ``artefacts["budget_curve"]`` dicts of several runs (images pooled)."""
    correct = torch.cat([p["correct"].bool() for p in parts])
    budgets, acc = budget_curve(correct, torch.cat([p["min_fooling_budget"] for p in parts]))
    return label, budgets.tolist(), acc.tolist(), int(correct.numel())


def budget_curve_png(path, title: str, parts: list[dict], label: str) -> None:
    """Write :func:`budget_curves` for one model to ``path`` (a PNG) from ``artefacts["budget_curve"]`` dicts (pooled)."""
    uri = budget_curves(title, parts[0].get("unit", "budget"), [pooled_curve(label, parts)])
    with open(path, "wb") as fh:
        fh.write(base64.b64decode(uri.split(",", 1)[1]))


def graph_attacks(model: str, dataset: str, entries: list[tuple[ThreatModel, Line]]) -> str:
    """One graph model: accuracy vs % of edges perturbed for every attack on one axis (0 = clean).

    Attacks without a budget in % of edges (targeted ones, with a per-target budget) are drawn as
    horizontal dotted lines at their accuracy on the targets.
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.9))
    for tm, ln in entries:
        label = f"{tm.attack}" + (f" ({tm.rest})" if tm.rest else "")
        if tm.budget_key == "budget" and not tm.targeted:
            xs = [0.0] + sorted(ln.points)
            area = ln.area()
            _draw_line(ax, label + (f" (area {100 * area.mean:.1f} %)" if area is not None else ""), xs,
                       [ln.clean] + [ln.points[x] for x in xs[1:]])
        else:
            _, est = ln.strongest
            line = ax.axhline(100 * est.mean, linestyle=":", linewidth=1.5)
            line.set_label(f"{label}: {est.format()} of {est.n:g} targets"[:70])
    ax.set_xlabel("% of edges perturbed (0 = clean)")
    ax.set_ylabel(f"accuracy on {dataset} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{model}: every structure attack", fontsize=9)
    return to_data_uri(fig)


def _show(ax, img) -> None:
    img = img.detach().float().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


#: short names of the transformation parameters, for figure titles
SHORT_NAMES = {"angle_deg": "a", "tx_px": "tx", "ty_px": "ty", "scale_x": "sx", "scale_y": "sy", "shear_deg": "sh"}


def params_text(p: dict, *, sep: str = "\n", limit: int = 4, short: bool = False) -> str:
    """The transformation found, without the parameters left at the identity (``"identity"`` when all are).

    >>> params_text({"angle_deg": 12.5, "tx_px": 0.0, "scale_x": 1.0}, sep=" ", short=True)
    'a=12.5'
    """
    parts = []
    for k, v in sorted(p.items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v - IDENTITY.get(k, float("nan"))) < 1e-6:
            continue
        name = SHORT_NAMES.get(k, k) if short else k
        if isinstance(v, float):
            parts.append(f"{name}={v:.3g}")
        elif isinstance(v, (int, str, bool)):
            parts.append(f"{name}={v}")
    return sep.join(parts[:limit]) or "identity"


def gallery(examples: dict, max_cols: int = 8) -> str:
    """Clean (top) vs adversarial (bottom) images with label -> prediction and the parameters found."""
    clean, adv = examples["clean"], examples["adversarial"]
    k = min(max_cols, clean.shape[0])
    fig, axes = plt.subplots(2, k, figsize=(1.55 * k, 3.9), squeeze=False)
    params = examples.get("params") or [{}] * k
    for i in range(k):
        _show(axes[0][i], clean[i])
        _show(axes[1][i], adv[i])
        axes[0][i].set_title(f"y={examples['label'][i]} pred={examples['clean_pred'][i]}", fontsize=7)
        ok = examples["adv_pred"][i] != examples["label"][i]
        axes[1][i].set_title(f"pred={examples['adv_pred'][i]}", fontsize=7,
                             color="crimson" if ok else "black")
        axes[1][i].set_xlabel(params_text(params[i] if i < len(params) else {}), fontsize=6)
    axes[0][0].set_ylabel("clean", fontsize=8)
    axes[1][0].set_ylabel("adversarial", fontsize=8)
    return to_data_uri(fig)


def sampling_figure(sampling: dict, clean, adversarial) -> str:
    """Deformable sampling locations (coloured, per layer) vs the regular grid (grey) on both images."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind, img in ((axes[0], "clean", clean), (axes[1], "adversarial", adversarial)):
        _show(ax, img)
        for i, (layer, d) in enumerate(sampling.items()):
            reg, pts = d["regular"].reshape(-1, 2), d[kind].reshape(-1, 2)
            ax.scatter(reg[:, 1], reg[:, 0], s=6, c="0.6", marker="x", linewidths=0.6)
            ax.scatter(pts[:, 1], pts[:, 0], s=9, color=colors[i % len(colors)], label=layer)
        h, w = img.shape[-2:]
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"{kind} image", fontsize=9)
    axes[1].legend(fontsize=6, loc="lower right")
    return to_data_uri(fig)


def graph_figure(rows: pd.DataFrame, degree_before, degree_after, title: str) -> str:
    """Left: insertions/deletions vs budget; right: degree change histogram at the largest budget."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    stats = rows.groupby("x")[["m:insertions", "m:deletions"]].mean().sort_index()
    width = (stats.index.max() - stats.index.min()) / max(4 * len(stats), 1) or 0.4
    axes[0].bar(stats.index - width / 2, stats["m:insertions"], width, label="insertions")
    axes[0].bar(stats.index + width / 2, stats["m:deletions"], width, label="deletions")
    axes[0].set_xlabel("% of edges perturbed")
    axes[0].set_ylabel("edges")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    if degree_before is not None and degree_after is not None:
        change = (degree_after - degree_before).numpy()
        lo, hi = int(change.min()), int(change.max())
        axes[1].hist(change, bins=range(lo, hi + 2), align="left", log=True, color="tab:purple")
        axes[1].set_xlabel("degree after - degree before")
        axes[1].set_ylabel("nodes (log)")
        axes[1].set_title(f"{int((change != 0).sum())} nodes changed degree", fontsize=8)
    else:
        axes[1].axis("off")
    fig.suptitle(title, fontsize=10)
    return to_data_uri(fig)


def duration_figure(frame: pd.DataFrame) -> str | None:
    """Seconds per cell, split into training and attack."""
    done = frame[frame["status"] == "done"]
    if not len(done):
        return None
    labels = [f"{m} x {a} {s}"[:40] for m, a, s in zip(done["model"], done["attack"], done["setting"])]
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(done) + 1))
    y = range(len(done))
    tr = done["train_seconds"].fillna(0).to_numpy()
    at = done["attack_seconds"].fillna(0).to_numpy()
    ax.barh(list(y), tr, label="training", color="tab:gray")
    ax.barh(list(y), at, left=tr, label="attack", color="tab:blue")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_xlabel("seconds")
    ax.legend(fontsize=7)
    ax.invert_yaxis()
    return to_data_uri(fig) if not math.isnan(float(tr.sum() + at.sum())) else None
