"""The certification bracket of a sweep: certified accuracy beside the attacks on the same models.

For every model x ``[certify.LABEL]`` setting x dataset (mean over seeds), the bracket
``[certified, smoothed-attack, base-attack]``: certified accuracy of the smoothed classifier is a
lower bound on its robust accuracy over the whole transformation range; the grid attack on the same
smoothed classifier and on the base classifier give upper bounds. Each number carries its 95 %
Clopper-Pearson interval over the test images (first seed) and ``n``.
"""

from __future__ import annotations

import pandas as pd

from robustbench_geo.results_schema import ci_bounds

COLUMNS = ["model", "dataset", "certify", "transform", "sigma", "n", "certified", "smoothed_attack", "base_attack",
           "smoothed_clean", "abstained"]


def _budget(params: dict) -> str:
    fam = params.get("family", {})
    return f"{params.get('transform', '?')} " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in sorted(fam.items()))


def _pct(g: pd.DataFrame, key: str) -> str:
    col = f"m:{key}"
    if col not in g or g[col].dropna().empty:
        return "-"
    mean = 100 * float(g[col].dropna().mean())
    lo, hi = (g.get(f"m:{bound}") for bound in ci_bounds(key))
    ci = f" [{100 * float(lo.iloc[0]):.1f}, {100 * float(hi.iloc[0]):.1f}]" if lo is not None and hi is not None else ""
    return f"{mean:.1f} %{ci}"


def certification_rows(frame: pd.DataFrame) -> list[dict]:
    """One row per model x certify setting x dataset (done cells only); empty when the sweep certifies nothing."""
    if not len(frame) or "kind" not in frame:
        return []
    done = frame[(frame["status"] == "done") & (frame["kind"] == "certificate")]
    rows = []
    for (model, attack, dataset), g in done.groupby(["model", "attack", "dataset"], sort=False):
        params = g["params"].iloc[0]
        rows.append({"model": model, "dataset": dataset, "certify": attack, "transform": _budget(params),
                     "sigma": params.get("sigma"), "n": int(g["m:n"].iloc[0]) if "m:n" in g else None,
                     "seeds": len(g), "certified": _pct(g, "certified_accuracy"),
                     "smoothed_attack": _pct(g, "smoothed_attack_accuracy"), "base_attack": _pct(g, "base_attack_accuracy"),
                     "smoothed_clean": _pct(g, "smoothed_accuracy"), "abstained": _pct(g, "abstention_rate")})
    return rows


def certification_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = ("\n## Certified robustness (TSS randomized smoothing)\n\n"
            "Certified accuracy is a lower bound, the grid attacks are upper bounds "
            "(95 % Clopper-Pearson interval over n test images).\n\n"
            "| model | dataset | transform | sigma | n | certified | attack on smoothed | attack on base | smoothed clean | abstained |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    return head + "".join(f"| {r['model']} | {r['dataset']} | {r['transform']} | {r['sigma']} | {r['n']} | {r['certified']} | "
                          f"{r['smoothed_attack']} | {r['base_attack']} | {r['smoothed_clean']} | {r['abstained']} |\n"
                          for r in rows)


def certification_table(rows: list[dict]) -> dict | None:
    """The certification section of the HTML report (``report.html`` renders and escapes it): column
    names and one list of cells per row; None when the store holds no certificate cells."""
    if not rows:
        return None
    cols = ["model", "dataset", "transform", "sigma", "n", "certified", "smoothed_attack", "base_attack",
            "smoothed_clean", "abstained"]
    names = ["model", "dataset", "transform", "sigma", "n", "certified (lower bound)", "grid attack on smoothed",
             "grid attack on base", "smoothed clean", "abstained"]
    return {"columns": names, "rows": [[str(r[c]) for c in cols] for r in rows]}
