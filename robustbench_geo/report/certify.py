"""The certification bracket of a sweep: certified accuracy beside the attacks on the same models.

For every model x ``[certify.LABEL]`` setting x dataset (mean over seeds), the bracket
``[certified, smoothed-attack, base-attack]``: certified accuracy of the smoothed classifier is a
lower bound on its robust accuracy over the whole transformation range; the grid attack on the same
smoothed classifier and on the base classifier give upper bounds. Each number carries its 95 %
Clopper-Pearson interval over the test images (first seed) and ``n``.
"""

from __future__ import annotations

import html

import pandas as pd

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
    lo, hi = g.get(f"m:{key}_ci95_low"), g.get(f"m:{key}_ci95_high")
    ci = f" [{100 * float(lo.iloc[0]):.1f}, {100 * float(hi.iloc[0]):.1f}]" if lo is not None and hi is not None else ""
    return f"{mean:.1f} %{ci}"


def certification_rows(frame: pd.DataFrame) -> list[dict]:
    """One row per model x certify setting x dataset (done cells only); empty when the sweep certifies nothing."""
    if not len(frame) or "attack_name" not in frame:
        return []
    done = frame[(frame["status"] == "done") & (frame["attack_name"] == "certify")]
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


def certification_html(rows: list[dict]) -> str:
    """A self-contained ``<section>`` (every value escaped); empty when there are no rows."""
    if not rows:
        return ""
    cols = ["model", "dataset", "transform", "sigma", "n", "certified", "smoothed_attack", "base_attack",
            "smoothed_clean", "abstained"]
    names = ["model", "dataset", "transform", "sigma", "n", "certified (lower bound)", "grid attack on smoothed",
             "grid attack on base", "smoothed clean", "abstained"]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    return ('<section id="certification"><h2>Certified robustness (TSS randomized smoothing)</h2>'
            "<p>Certified accuracy of the smoothed classifier is a lower bound on its robust accuracy over the whole "
            "transformation range; the grid attacks on the same smoothed classifier and on the base classifier are "
            "upper bounds. 95 % Clopper-Pearson intervals over the n test images.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")
