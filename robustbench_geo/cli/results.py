"""``rbgeo results list|show|export``: read a sweep's results store."""

from __future__ import annotations

import json
import os

import click

from robustbench_geo.cli.options import UserInputError, check_output_path, handle_errors


@click.group("results")
def results_group():
    """Read the results store (results.sqlite) of a sweep folder.

    \b
    Examples:
      rbgeo results list reports/quick
      rbgeo results list reports/quick --status failed
      rbgeo results show reports/quick 5ee21438
      rbgeo results export reports/quick --format csv --out quick.csv
    """


def _open(folder):
    from robustbench_geo.sweep.store import ResultStore

    return ResultStore(folder, create=False)


@results_group.command("list")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--status", type=click.Choice(["pending", "running", "done", "failed"]), default=None, help="Only cells of this status.")
@handle_errors
def list_cmd(output_dir, status):
    """One line per cell: hash, status, model, attack, setting, seed, accuracies, seconds."""
    from robustbench_geo.report.tables import fmt_pct, setting_of

    with _open(output_dir) as store:
        rows = store.cells(status)
        counts = store.status_counts()
        click.echo(f"sweep {store.sweep!r} in {store.path}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for r in rows:
        m = r["metrics"]
        setting = setting_of(r["config"]["attack"]["grid_point"])
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f} s"
        click.echo(f"{r['hash'][:12]}  {r['status']:7s}  {r['model']} x {r['attack']}({setting}) on {r['dataset']} seed {r['seed']}"
                   f"  clean {fmt_pct(m.get('clean_accuracy'))}  robust {fmt_pct(m.get('robust_accuracy'))}  {secs}")


@results_group.command("show")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.argument("cell")
@handle_errors
def show_cmd(output_dir, cell):
    """Everything stored for one CELL (hash or unique prefix): config, metrics, timings, error, artefacts."""
    with _open(output_dir) as store:
        r = store.get(cell)
    click.echo(json.dumps(r, indent=2, sort_keys=True, default=str))


@results_group.command("export")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True,
              help="csv: tidy, one row per cell x metric; json: one object per cell.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File to write (default: stdout).")
@handle_errors
def export_cmd(output_dir, fmt, out):
    """Export finished cells as tidy CSV or JSON."""
    from robustbench_geo.report.tables import tidy_frame

    if out is not None:
        check_output_path(out, "--out", folder=False)
        if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise UserInputError(f"--out {out}: folder {os.path.dirname(os.path.abspath(out))} does not exist")
    with _open(output_dir) as store:
        rows, sweep = store.cells("done"), store.sweep
    if fmt == "csv":
        text = tidy_frame(rows, sweep).to_csv(index=False)
    else:
        text = json.dumps([{k: r[k] for k in ("hash", "model", "attack", "dataset", "seed", "metrics", "config", "info",
                                              "seconds", "train_seconds", "attack_seconds", "artefact_dir")} for r in rows],
                          indent=2, default=str)
    if out:
        with open(out, "w") as f:
            f.write(text)
        click.echo(f"wrote {len(rows)} cells to {out}")
    else:
        click.echo(text, nl=False)
