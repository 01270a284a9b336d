"""``rbgeo report``: write report.html, results.csv, summary.md and per-model JSON for a sweep folder."""

from __future__ import annotations

import click

from robustbench_geo.cli.options import handle_errors


@click.command()
@click.argument("output_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--title", default=None, help="Title of the HTML report.")
@handle_errors
def report(output_dir, title):
    """Write the report of the sweep in OUTPUT_DIR (the folder holding results.sqlite).

    \b
    Examples:
      rbgeo report reports/quick
      rbgeo report runs/my_sweep --title "Deformable vs regular, 3 seeds"
    """
    from robustbench_geo.report import report_headline, write_report

    paths = write_report(output_dir, title=title)
    for key in ("html", "csv", "markdown", "json"):
        click.echo(f"{key:8s} {paths[key]}")
    for line in report_headline(output_dir):
        click.echo(line)
