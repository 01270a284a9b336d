"""Reports from a sweep's output folder: ``report.html``, ``results.csv``, ``summary.md``, ``json/<model>.json``.

>>> from robustbench_geo.report import write_report          # doctest: +SKIP
>>> write_report("reports/quick")["html"]                      # doctest: +SKIP

``report.html`` is one self-contained file (figures embedded as base64 PNG, no scripts, no
external resources) rendered by Jinja2 with autoescaping, so every user-provided string (model,
dataset and attack labels, parameters, errors) appears as text.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import jinja2

from robustbench_geo._version import __version__
from robustbench_geo.report import plots
from robustbench_geo.report.certify import certification_markdown, certification_rows, certification_table
from robustbench_geo.report.compare import compare, headline, lines, pivots, threat_models
from robustbench_geo.report.study import study_headline
from robustbench_geo.report.tables import (
    cells_frame, fmt_metric, fmt_pct, model_json, summary_frame, summary_markdown, tidy_frame,
)
from robustbench_geo.results_schema import write_json

#: at most this many galleries / sampling figures / graph figures in one report
MAX_FIGURES = 24


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("robustbench_geo.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def safe_filename(label: str) -> str:
    """A file name for a user label (anything outside ``[A-Za-z0-9._-]`` becomes ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "model"
    return name[:80]


def _figures(frame, folder: Path) -> dict:
    from robustbench_geo.sweep.runner import read_artefacts

    overlays, per_model = [], {}
    for tm in threat_models(frame)[:MAX_FIGURES]:
        ls = lines(frame, tm)
        warnings = [c.warning for c in compare(frame, tm) if c.warning]
        overlays.append({"title": tm.label, "uri": plots.overlay(tm, ls, warnings[0] if warnings else None),
                         "warnings": warnings, "models": [ln.model for ln in ls],
                         "budget": tm.axis_label or "clean vs attacked"})
        if tm.task == "graph":
            for ln in ls:
                per_model.setdefault((ln.model, tm.dataset), []).append((tm, ln))
    graph_attacks = [{"model": m, "dataset": d, "uri": plots.graph_attacks(m, d, entries)}
                     for (m, d), entries in list(per_model.items())[:MAX_FIGURES]]
    galleries, sampling, graphs = [], [], []
    done = frame[frame["status"] == "done"] if len(frame) else frame
    curves = _budget_curves(done, folder)
    for (model, attack, dataset), g in done.groupby(["model", "attack", "dataset"], sort=False) if len(done) else []:
        if g["attack_name"].iloc[0] == "none":
            continue
        pick = g.sort_values(["seed"]).iloc[-1] if g["task"].iloc[0] == "image" else g.iloc[-1]
        art = read_artefacts(folder / pick["artefact_dir"]) if pick["artefact_dir"] else {}
        ex = art.get("examples")
        caption = {"model": model, "attack": attack, "dataset": dataset, "setting": pick["setting"], "seed": int(pick["seed"])}
        if isinstance(ex, dict) and "clean" in ex and len(galleries) < MAX_FIGURES:
            galleries.append({**caption, "uri": plots.gallery(ex)})
            if art.get("sampling") and len(sampling) < MAX_FIGURES:
                sampling.append({**caption, "uri": plots.sampling_figure(art["sampling"], ex["clean"][0], ex["adversarial"][0])})
        if "m:insertions" in g and g["m:insertions"].notna().any() and len(graphs) < MAX_FIGURES:
            for mode, gm in g.groupby([str(gp.get("mode", "")) for gp in g["grid_point"]]):
                gm = gm.copy()
                gm["x"] = [100 * float(gp.get("budget") or 0) for gp in gm["grid_point"]]
                last = gm.sort_values("x").iloc[-1]
                art = read_artefacts(folder / last["artefact_dir"]) if last["artefact_dir"] else {}
                graphs.append({**caption, "setting": f"mode={mode}" if mode else "-",
                               "uri": plots.graph_figure(gm, art.get("degree_before"), art.get("degree_after"),
                                                         f"{model} x {attack} ({mode or 'default'})")})
    return {"overlays": overlays, "graph_attacks": graph_attacks, "galleries": galleries, "sampling": sampling,
            "graphs": graphs, "curves": curves}


def _budget_curves(done, folder: Path) -> list[dict]:
    """One figure per (attack, dataset) whose cells recorded per-image smallest fooling budgets (``manifool``,
    ``grid`` in the orders that allow it): every model's accuracy at every budget, seeds pooled."""
    from robustbench_geo.sweep.runner import read_artefacts

    out = []
    if not len(done):
        return out
    for (attack, dataset), g in done.groupby(["attack", "dataset"], sort=False):
        if g["task"].iloc[0] != "image" or len(out) >= MAX_FIGURES:
            continue
        per_model, unit = {}, None
        for row in g.to_dict("records"):
            art = read_artefacts(folder / row["artefact_dir"]) if row["artefact_dir"] else {}
            bc = art.get("budget_curve")
            if isinstance(bc, dict) and "min_fooling_budget" in bc:
                unit = unit or bc.get("unit", "budget")
                per_model.setdefault((row["model"], row["setting"]), []).append(bc)
        if not per_model:
            continue
        lines_ = [plots.pooled_curve(model + (f" ({setting})" if setting and setting != "-" else ""), parts)
                  for (model, setting), parts in per_model.items()]
        out.append({"attack": attack, "dataset": dataset, "unit": unit, "models": [ln[0] for ln in lines_],
                    "uri": plots.budget_curves(f"{attack} on {dataset}: accuracy at every budget", unit, lines_)})
    return out


def _metadata(frame, store_meta: dict) -> dict:
    done = frame[frame["status"] == "done"] if len(frame) else frame
    infos = list(done["info"]) if len(done) else []
    versions = infos[0].get("versions", {}) if infos else {}
    uniq = lambda key: sorted({str(i.get(key)) for i in infos if i.get(key) is not None})  # noqa: E731
    return {
        "versions": versions, "seeds": sorted(int(s) for s in frame["seed"].unique()) if len(frame) else [],
        "devices": uniq("device"), "backends": uniq("deform_backend") or ["(no deformable layers)"],
        "hosts": uniq("host"), "threads": uniq("threads"),
        "seconds": float(done["seconds"].sum()) if len(done) else 0.0,
        "train_seconds": float(done["train_seconds"].fillna(0).sum()) if len(done) else 0.0,
        "attack_seconds": float(done["attack_seconds"].fillna(0).sum()) if len(done) else 0.0,
        "store": store_meta,
    }


def _read_store(folder: Path) -> tuple[list[dict], str, dict[str, int], str]:
    from robustbench_geo.sweep.store import ResultStore

    with ResultStore(folder, create=False) as store:
        return store.cells(), store.sweep, store.status_counts(), str(store.path)


def report_headline(folder: str | Path) -> list[str]:
    """The headline of the sweep in ``folder`` (what the report and ``rbgeo sweep`` print); see :func:`compare.headline`."""
    cells, _, counts, _ = _read_store(Path(folder))
    frame = cells_frame(cells)
    lines_ = study_headline(frame, folder) + headline(frame)
    if not counts.get("done"):
        lines_ = [status_message(counts)]
    return lines_


def status_message(counts: dict[str, int]) -> str:
    """One sentence for a store with no finished cell: empty, all pending, or all failed."""
    if not counts:
        return "The store holds no cells: nothing to report (run rbgeo sweep first)."
    what = ", ".join(f"{v} {k}" for k, v in counts.items())
    if counts.get("failed") and not counts.get("done"):
        return (f"No finished cells ({what}): every cell that ran failed; see report.html's failed-cells table, "
                f"rbgeo results show CELL and the log under logs/.")
    return f"No finished cells yet ({what}): nothing to compare; run the sweep to fill the store."


def _check_writable(paths: dict[str, Path], tmp: Path) -> None:
    """Refuse before writing anything when a report file's name is taken by a folder (or ``json`` by a file)."""
    for key, p in [*paths.items(), ("html", tmp)]:
        if key == "json" and p.exists() and not p.is_dir():
            raise ValueError(f"report: {p} is a file, expected the folder of per-model JSON files; nothing was "
                             "written: move the file away")
        if key != "json" and p.is_dir():
            raise ValueError(f"report: {p} is a folder, expected the report file {p.name}; nothing was written: "
                             "move the folder away")
    if not os.access(paths["html"].parent, os.W_OK):
        raise PermissionError(f"report: folder {paths['html'].parent} is not writable; nothing was written")


def write_report(folder: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write the report files of the sweep in ``folder`` (which holds ``results.sqlite``).

    A store without finished cells (empty, only pending cells after ``--limit 0``, or every cell
    failed) still gets every file: the HTML says why there are no numbers and lists the failures.

    Returns:
        Paths: ``html``, ``csv``, ``markdown`` and ``json`` (the folder of per-model JSON files).
    """
    folder = Path(folder)
    cells, sweep, counts, store_path = _read_store(folder)
    store_meta = {"path": store_path, "counts": counts}
    frame = cells_frame(cells)
    summary = summary_frame(frame)
    paths = {"csv": folder / "results.csv", "markdown": folder / "summary.md", "json": folder / "json",
             "html": folder / "report.html"}
    _check_writable(paths, paths["html"].with_suffix(".html.tmp"))
    tidy_frame(cells, sweep).to_csv(paths["csv"], index=False)
    cert_rows = certification_rows(frame)
    paths["markdown"].write_text(summary_markdown(summary, sweep) + certification_markdown(cert_rows))
    paths["json"].mkdir(exist_ok=True)
    models = list(dict.fromkeys(frame["model"])) if len(frame) else []
    names = {}
    for m in models:
        fname = safe_filename(m)
        while fname in names.values():
            fname += "_"
        names[m] = fname
        write_json(paths["json"] / f"{fname}.json", model_json(frame, summary, m, sweep))
    rows = [{**r, "clean": fmt_metric(r, "clean_accuracy"), "robust": fmt_metric(r, "robust_accuracy"),
             "success": fmt_metric(r, "success_rate"), "n": "n/a" if r["n"] is None else f"{r['n']:g}"}
            for r in summary.to_dict("records")]
    failed = [{"hash": r["hash"][:12], "model": r["model"], "attack": r["attack"], "dataset": r["dataset"],
               "setting": r["setting"], "seed": r["seed"], "error": (r["error"] or "").strip().splitlines()[-1:] or [""]}
              for r in frame.to_dict("records") if r["status"] == "failed"] if len(frame) else []
    cells_table = [{"hash": r["hash"][:12], "model": r["model"], "attack": r["attack"], "dataset": r["dataset"],
                    "setting": r["setting"], "seed": r["seed"], "status": r["status"],
                    "seconds": "" if r["seconds"] != r["seconds"] or r["seconds"] is None else f"{r['seconds']:.1f}",
                    "clean": fmt_pct(r.get("m:clean_accuracy")), "robust": fmt_pct(r.get("m:robust_accuracy"))}
                   for r in frame.to_dict("records")] if len(frame) else []
    durations = plots.duration_figure(frame) if len(frame) else None
    html = _env().get_template("report.html").render(
        title=title or f"robustbench_geo sweep: {sweep}", sweep=sweep, generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        package_version=__version__, summary=rows, cells=cells_table, failed=failed,
        headline=study_headline(frame, folder) + headline(frame) if counts.get("done") else [status_message(counts)],
        pivots=pivots(frame),
        counts=counts,
        figures=_figures(frame, folder), meta=_metadata(frame, store_meta), durations=durations,
        json_files=[f"json/{names[m]}.json" for m in models], certification=certification_table(cert_rows))
    tmp = paths["html"].with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(paths["html"])
    return paths
