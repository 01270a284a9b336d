"""Tables from a results store: per-cell frame, tidy CSV, summary (mean and std over seeds), JSON per model.

Accuracies are fractions in ``[0, 1]`` everywhere in data files; only the human-facing HTML and
Markdown show percentages. Every accuracy comes with ``n`` (the samples behind it: test images,
test nodes or targets) and its 95 % Wilson interval (pooled over seeds; :mod:`robustbench_geo.stats`).
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd

from robustbench_geo.results_schema import ci_bounds, model_entry, result_row
from robustbench_geo.stats import accuracy_interval, estimate
from robustbench_geo.train_defenses import get_defense

#: metrics that are accuracies of n samples (they get an interval); the success rate's denominator is the
#: clean-correct samples, not n, so it is reported as mean ± std over seeds only
ACCURACY_METRICS = ("clean_accuracy", "robust_accuracy")
SUMMARY_METRICS = ACCURACY_METRICS + ("success_rate",)

CELL_COLUMNS = ["hash", "model", "model_name", "trained_as", "deformable", "task", "dataset", "dataset_spec", "attack", "kind", "attack_name",
                "setting", "seed", "status", "seconds", "train_seconds", "attack_seconds", "grid_point", "params", "error",
                "artefact_dir", "info", "config", "n", "clean_n"]


def sample_count(metrics: dict, metric: str = "robust_accuracy") -> float:
    """Samples behind a cell's accuracy ``metric``: ``n`` (images, nodes), else ``targets``, else nan.

    Targeted graph attacks measure robust accuracy on their targets but clean accuracy on all test
    nodes (``clean_n``).
    """
    keys = ("clean_n", "n", "targets") if metric == "clean_accuracy" else ("n", "targets")
    for key in keys:
        v = metrics.get(key)
        if v is not None and math.isfinite(float(v)) and float(v) > 0:
            return float(v)
    return float("nan")


def setting_of(grid_point: dict) -> str:
    """``"budget=0.05, mode=poisoning"``: the varying part of an attack configuration."""
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(grid_point.items())) or "-"


def _num(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def trained_as(config: dict, info: dict | None = None) -> str:
    """The architecture, its training defense and test-time vote: ``cnn+wo10``, ``cnn+vote10`` (``cnn`` without).

    The defense comes from the checkpoint the cell used (``info["defense"]``, so evaluated checkpoints are
    labelled too), else from the cell's training settings.
    """
    name = config["model"]["name"]
    vote = f"+vote{config['model']['vote']}" if config["model"].get("vote") else ""
    d = (info or {}).get("defense")
    if isinstance(d, dict) and d.get("label"):
        return f"{name}+{d['label']}{vote}"
    train = (config.get("training") or {}).get("train") or {}
    label = get_defense(train["defense"]).label if train.get("defense") else ""
    return (f"{name}+{label}" if label else name) + vote


def cells_frame(cells: list[dict]) -> pd.DataFrame:
    """One row per cell (any status) with its labels, setting, timings and metrics as columns."""
    rows = []
    for r in cells:
        cfg = r["config"]
        row = {"hash": r["hash"], "model": r["model"], "model_name": cfg["model"]["name"],
               "trained_as": trained_as(cfg, r["info"]), "deformable": bool(r["info"].get("deform_backend")) if r["info"] else _is_deform(cfg["model"]["name"]),
               "task": "graph" if "n" not in cfg["attack"]["runner"] else "image",
               "dataset": r["dataset"], "dataset_spec": cfg["dataset"]["spec"], "attack": r["attack"],
               "kind": cfg["attack"]["kind"], "attack_name": cfg["attack"]["name"],
               "setting": setting_of(cfg["attack"]["grid_point"]), "seed": r["seed"], "status": r["status"], "seconds": r["seconds"], "train_seconds": r["train_seconds"],
               "attack_seconds": r["attack_seconds"], "grid_point": cfg["attack"]["grid_point"],
               "params": cfg["attack"]["params"], "error": r["error"], "artefact_dir": r["artefact_dir"],
               "info": r["info"], "config": cfg, "n": sample_count(r["metrics"]),
               "clean_n": sample_count(r["metrics"], "clean_accuracy")}
        row.update({f"m:{k}": v for k, v in r["metrics"].items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else CELL_COLUMNS)


def _is_deform(name: str) -> bool:
    return "deform" in name


def tidy_frame(cells: list[dict], sweep: str) -> pd.DataFrame:
    """One row per cell x metric (``results.csv``); ``value`` is a float.

    Accuracy metrics also carry ``n`` and ``ci_low``/``ci_high`` (95 % Wilson); other metrics leave them empty.
    """
    rows = []
    for r in cells:
        if r["status"] != "done":
            continue
        cfg = r["config"]
        for name, value in sorted(r["metrics"].items()):
            value = float("nan") if value is None else float(value)
            n = sample_count(r["metrics"], name)
            lo, hi = accuracy_interval(value, n) if name in ACCURACY_METRICS else (float("nan"), float("nan"))
            rows.append({"sweep": sweep, "hash": r["hash"], "model": r["model"], "model_name": cfg["model"]["name"],
                         "dataset": r["dataset"], "dataset_spec": cfg["dataset"]["spec"], "attack": r["attack"],
                         "attack_name": cfg["attack"]["name"], "setting": setting_of(cfg["attack"]["grid_point"]),
                         "params": json.dumps(cfg["attack"]["params"], sort_keys=True), "seed": r["seed"],
                         "metric": name, "value": value, "n": n if name in ACCURACY_METRICS else float("nan"),
                         "ci_low": lo, "ci_high": hi})
    cols = ["sweep", "hash", "model", "model_name", "dataset", "dataset_spec", "attack", "attack_name", "setting",
            "params", "seed", "metric", "value", "n", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


SUMMARY_KEYS = ["model", "model_name", "trained_as", "deformable", "dataset", "attack", "attack_name", "setting"]


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model x attack setting x dataset: mean, std over seeds and pooled 95 % interval of each accuracy.

    Columns: the keys, ``seeds``, ``n`` (samples per seed), ``<metric>``, ``<metric>_std``,
    ``<metric>_ci_low``, ``<metric>_ci_high`` for clean/robust accuracy and success rate, ``seconds``.
    An empty or all-failed frame gives an empty frame with these columns.
    """
    done = frame[frame["status"] == "done"] if len(frame) else frame
    cols = SUMMARY_KEYS + ["seeds", "n"] + [k for m in SUMMARY_METRICS for k in (m, f"{m}_std", *ci_bounds(m))]
    out = []
    for key, g in done.groupby(SUMMARY_KEYS, sort=False, dropna=False) if len(done) else []:
        row = dict(zip(SUMMARY_KEYS, key))
        row["seeds"] = len(g)
        for m in SUMMARY_METRICS:
            col = f"m:{m}"
            vals = [float("nan") if v is None else float(v) for v in g[col]] if col in g else []
            ns = list(g["clean_n" if m == "clean_accuracy" else "n"]) if m in ACCURACY_METRICS else [float("nan")] * len(vals)
            est = estimate(vals, ns) if vals else None
            ok = est is not None and not math.isnan(est.mean)
            row[m] = est.mean if ok else None
            row[f"{m}_std"] = est.std if ok else None
            low, high = ci_bounds(m)
            row[low] = est.low if ok and not math.isnan(est.low) else None
            row[high] = est.high if ok and not math.isnan(est.high) else None
            if m == "robust_accuracy":
                row["n"] = est.n if est is not None and not math.isnan(est.n) else None
        row["seconds"] = float(g["seconds"].sum())
        out.append(row)
    return pd.DataFrame(out, columns=cols + ["seconds"])


def fmt_pct(mean, std=None, seeds: int = 1, low=None, high=None) -> str:
    """``"45.20"``, ``"45.20 ± 1.30"`` over seeds, then ``" [40.9, 49.6]"`` when an interval is given."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    s = f"{100 * mean:.2f}"
    if seeds > 1 and std is not None:
        s += f" ± {100 * std:.2f}"
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        s += f" [{100 * low:.1f}, {100 * high:.1f}]"
    return s


def fmt_metric(row: dict, metric: str) -> str:
    """A summary row's accuracy with its std over seeds and 95 % interval."""
    low, high = ci_bounds(metric)
    return fmt_pct(row[metric], row.get(f"{metric}_std"), row["seeds"], row.get(low), row.get(high))


def md_escape(text) -> str:
    """A label as literal Markdown text: no table breaks, HTML, code spans, emphasis or links."""
    out = " ".join(str(text).splitlines())
    for ch in "\\`*[]<>|":
        out = out.replace(ch, "\\" + ch)
    return out


def summary_markdown(summary: pd.DataFrame, sweep: str) -> str:
    """``summary.md``: the summary table in Markdown (percentages, mean ± std over seeds)."""
    esc = md_escape
    lines = [f"# Sweep {esc(sweep)}", "", f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Accuracies in %, mean ± std over seeds, [95 % Wilson interval] of the n samples (pooled over seeds).", "",
             "| model | dataset | attack | setting | seeds | n | clean | robust | success rate |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary.to_dict("records"):
        lines.append(f"| {esc(model_text(r))} | {esc(r['dataset'])} | {esc(r['attack'])} | {esc(r['setting'])} | {r['seeds']} | "
                     f"{_count(r.get('n'))} | {fmt_metric(r, 'clean_accuracy')} | {fmt_metric(r, 'robust_accuracy')} | "
                     f"{fmt_metric(r, 'success_rate')} |")
    if not len(summary):
        lines.append("| (no finished cells) | | | | | | | | |")
    return "\n".join(lines) + "\n"


def tagged(model: str, trained: str) -> str:
    """A model's label, followed by what it is when a training defense makes it more than its architecture:
    ``robust (cnn+wo10)``; the label alone when it already says so (or there is no defense)."""
    return model if "+" not in (trained or "") or trained == model else f"{model} ({trained})"


def model_text(row: dict) -> str:
    """:func:`tagged` of a summary or cell row."""
    return tagged(row["model"], row.get("trained_as") or "")


def _count(n) -> str:
    return "n/a" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n:g}"


def model_json(frame: pd.DataFrame, summary: pd.DataFrame, model: str, sweep: str) -> dict:
    """RobustBench-style entry for one model label: numbers as numbers, fractions in [0, 1]."""
    cells = frame[(frame["model"] == model) & (frame["status"] == "done")]
    first = cells.iloc[0] if len(cells) else None
    rows = summary[summary["model"] == model]
    clean = [r for r in rows.to_dict("records") if r["attack_name"] == "none"]
    results = [result_row(dataset=r["dataset"], attack=r["attack"], attack_name=r["attack_name"], setting=r["setting"],
                          seeds=r["seeds"], n=r["n"], clean_acc=r["clean_accuracy"], clean_std=r["clean_accuracy_std"],
                          clean_ci=tuple(r[k] for k in ci_bounds("clean_accuracy")),
                          robust_acc=r["robust_accuracy"], robust_std=r["robust_accuracy_std"],
                          robust_ci=tuple(r[k] for k in ci_bounds("robust_accuracy")),
                          success_rate=r["success_rate"])
               for r in rows.to_dict("records")]
    info = first["info"] if first is not None else {}
    clean_acc = clean[0]["clean_accuracy"] if clean else (rows["clean_accuracy"].iloc[0] if len(rows) else None)
    return model_entry(
        name=model, model=first["model_name"] if first is not None else None, clean_acc=clean_acc, results=results,
        seeds=sorted(int(s) for s in cells["seed"].unique()) if len(cells) else [], versions=info.get("versions", {}),
        sweep=sweep, trained_as=first["trained_as"] if first is not None else None,
        model_params=first["config"]["model"]["params"] if first is not None else {},
        training=first["config"]["training"] if first is not None else {}, deform_backend=info.get("deform_backend"))
