"""Tables from a results store: per-cell frame, tidy CSV, summary (mean and std over seeds), JSON per model.

Accuracies are fractions in ``[0, 1]`` everywhere in data files; only the human-facing HTML and
Markdown show percentages.
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd

#: version of the per-model JSON layout (``<model>.json``)
JSON_SCHEMA_VERSION = 1

CELL_COLUMNS = ["hash", "model", "model_name", "deformable", "task", "dataset", "dataset_spec", "attack", "attack_name",
                "setting", "seed", "status", "seconds", "train_seconds", "attack_seconds"]


def setting_of(grid_point: dict) -> str:
    """``"budget=0.05, mode=poisoning"``: the varying part of an attack configuration."""
    return ", ".join(f"{k}={_num(v)}" for k, v in sorted(grid_point.items())) or "-"


def _num(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def cells_frame(cells: list[dict]) -> pd.DataFrame:
    """One row per cell (any status) with its labels, setting, timings and metrics as columns."""
    rows = []
    for r in cells:
        cfg = r["config"]
        row = {"hash": r["hash"], "model": r["model"], "model_name": cfg["model"]["name"],
               "deformable": bool(r["info"].get("deform_backend")) if r["info"] else _is_deform(cfg["model"]["name"]),
               "task": "graph" if "n" not in cfg["attack"]["runner"] else "image",
               "dataset": r["dataset"], "dataset_spec": cfg["dataset"]["spec"], "attack": r["attack"],
               "attack_name": cfg["attack"]["name"], "setting": setting_of(cfg["attack"]["grid_point"]),
               "seed": r["seed"], "status": r["status"], "seconds": r["seconds"], "train_seconds": r["train_seconds"],
               "attack_seconds": r["attack_seconds"], "grid_point": cfg["attack"]["grid_point"],
               "params": cfg["attack"]["params"], "error": r["error"], "artefact_dir": r["artefact_dir"],
               "info": r["info"], "config": cfg}
        row.update({f"m:{k}": v for k, v in r["metrics"].items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else CELL_COLUMNS)


def _is_deform(name: str) -> bool:
    return "deform" in name


def tidy_frame(cells: list[dict], sweep: str) -> pd.DataFrame:
    """One row per cell x metric (``results.csv``); ``value`` is a float."""
    rows = []
    for r in cells:
        if r["status"] != "done":
            continue
        cfg = r["config"]
        for name, value in sorted(r["metrics"].items()):
            rows.append({"sweep": sweep, "hash": r["hash"], "model": r["model"], "model_name": cfg["model"]["name"],
                         "dataset": r["dataset"], "dataset_spec": cfg["dataset"]["spec"], "attack": r["attack"],
                         "attack_name": cfg["attack"]["name"], "setting": setting_of(cfg["attack"]["grid_point"]),
                         "params": json.dumps(cfg["attack"]["params"], sort_keys=True), "seed": r["seed"],
                         "metric": name, "value": float("nan") if value is None else float(value)})
    cols = ["sweep", "hash", "model", "model_name", "dataset", "dataset_spec", "attack", "attack_name", "setting",
            "params", "seed", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of clean/robust accuracy and success rate per model x attack setting x dataset."""
    done = frame[frame["status"] == "done"] if len(frame) else frame
    out = []
    keys = ["model", "model_name", "deformable", "dataset", "attack", "attack_name", "setting"]
    for key, g in done.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key))
        row["seeds"] = len(g)
        for m in ("clean_accuracy", "robust_accuracy", "success_rate"):
            col = f"m:{m}"
            vals = [float(v) for v in g[col].dropna()] if col in g else []
            row[m] = sum(vals) / len(vals) if vals else None
            row[f"{m}_std"] = _std(vals) if vals else None
        row["seconds"] = float(g["seconds"].sum())
        out.append(row)
    return pd.DataFrame(out)


def _std(vals: list[float]) -> float:
    if len(vals) < 2:
        return 0.0
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt_pct(mean, std=None, seeds: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    s = f"{100 * mean:.2f}"
    if seeds > 1 and std is not None:
        s += f" ± {100 * std:.2f}"
    return s


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
             "Accuracies in %, mean ± std over seeds.", "",
             "| model | dataset | attack | setting | seeds | clean | robust | success rate |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in summary.to_dict("records"):
        lines.append(f"| {esc(r['model'])} | {esc(r['dataset'])} | {esc(r['attack'])} | {esc(r['setting'])} | {r['seeds']} | "
                     f"{fmt_pct(r['clean_accuracy'], r['clean_accuracy_std'], r['seeds'])} | "
                     f"{fmt_pct(r['robust_accuracy'], r['robust_accuracy_std'], r['seeds'])} | "
                     f"{fmt_pct(r['success_rate'], r['success_rate_std'], r['seeds'])} |")
    return "\n".join(lines) + "\n"


def model_json(frame: pd.DataFrame, summary: pd.DataFrame, model: str, sweep: str) -> dict:
    """RobustBench-style entry for one model label: numbers as numbers, fractions in [0, 1]."""
    cells = frame[(frame["model"] == model) & (frame["status"] == "done")]
    first = cells.iloc[0] if len(cells) else None
    rows = summary[summary["model"] == model]
    clean = [r for r in rows.to_dict("records") if r["attack_name"] == "none"]
    results = []
    for r in rows.to_dict("records"):
        results.append({"dataset": r["dataset"], "attack": r["attack"], "attack_name": r["attack_name"],
                        "setting": r["setting"], "seeds": int(r["seeds"]),
                        "clean_acc": _f(r["clean_accuracy"]), "clean_acc_std": _f(r["clean_accuracy_std"]),
                        "robust_acc": _f(r["robust_accuracy"]), "robust_acc_std": _f(r["robust_accuracy_std"]),
                        "success_rate": _f(r["success_rate"])})
    info = first["info"] if first is not None else {}
    return {
        "schema_version": JSON_SCHEMA_VERSION, "sweep": sweep, "name": model,
        "model": first["model_name"] if first is not None else None,
        "model_params": first["config"]["model"]["params"] if first is not None else {},
        "training": first["config"]["training"] if first is not None else {},
        "clean_acc": _f(clean[0]["clean_accuracy"]) if clean else (_f(rows["clean_accuracy"].iloc[0]) if len(rows) else None),
        "robust_acc_worst": _f(min((r["robust_acc"] for r in results if r["robust_acc"] is not None), default=None)),
        "results": results, "seeds": sorted(int(s) for s in cells["seed"].unique()) if len(cells) else [],
        "deform_backend": info.get("deform_backend"), "versions": info.get("versions", {}),
        "units": "accuracies are fractions in [0, 1]",
    }


def _f(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v
