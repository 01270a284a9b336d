"""``rbgeo sweep``: run (or list, with ``--dry-run``) the cells of a sweep file or preset."""

from __future__ import annotations

import dataclasses

import click

from robustbench_geo.cli.options import check_device, check_output_path, data_root_option, handle_errors, quiet_option


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", default=None, help="A sweep shipped with the package instead of CONFIG (quick, paper, ...).")
@click.option("--output", type=click.Path(file_okay=False), default=None, help="Output folder (overrides sweep.output).")
@click.option("--dry-run", is_flag=True, help="List the cells and estimate the time; run nothing.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run cells here (local) or as Ray tasks (needs the 'ray' extra).")
@click.option("--jobs", type=int, default=None, help="Local worker processes (default: the sweep's 'jobs', else 1).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray instance).")
@click.option("--threads", type=int, default=None, help="torch threads per cell (Ray: CPUs requested per task).")
@click.option("--limit", type=int, default=None, help="Run at most this many unfinished cells.")
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@data_root_option
@quiet_option
@handle_errors
def sweep(config, preset, output, dry_run, executor, jobs, address, threads, limit, no_report, data_root, quiet):
    """Train and attack every model x attack setting x seed of a sweep; resume where it stopped.

    \b
    Examples:
      rbgeo sweep --preset quick
      rbgeo sweep --preset paper --dry-run
      rbgeo sweep my_sweep.toml --jobs 2
      rbgeo sweep my_sweep.toml --executor ray --address auto
      rbgeo sweep my_sweep.toml --output runs/again --quiet
    """
    from robustbench_geo.check import check_number
    from robustbench_geo.report import write_report
    from robustbench_geo.sweep import estimate_sweep, expand, list_presets, load_config, run_sweep
    from robustbench_geo.sweep.driver import check_datasets_present, unique_cells

    if (config is None) == (preset is None):
        raise ValueError(f"expected a sweep file CONFIG or --preset NAME (presets: {', '.join(list_presets())}), "
                         f"got {'both' if config else 'neither'}")
    if jobs is not None:
        check_number(jobs, "--jobs", integer=True, low=1)
    if threads is not None:
        check_number(threads, "--threads", integer=True, low=1)
    if limit is not None:
        check_number(limit, "--limit (cells to run)", integer=True, low=0)
    check_output_path(output, "--output", folder=True)
    if executor == "ray" and jobs not in (None, 1):
        raise ValueError("--jobs applies to the local executor; Ray schedules by the cluster's CPUs (use --threads)")
    cfg = load_config(preset or config, output=output)
    jobs = 1 if executor == "ray" else jobs or cfg.jobs
    if dry_run:
        check_datasets_present(cfg, data_root, sizes_only=True)  # test_subset = 100000 fails here, not in the run
        cells = unique_cells(expand(cfg))
        timed_on = cfg
        try:
            check_device(None, None, cfg.device)
        except click.ClickException:  # a GPU sweep listed on a machine without one: timed on this CPU instead
            timed_on = dataclasses.replace(cfg, device="cpu")
            click.echo(f"note: sweep.device {cfg.device!r} is not available on this machine: times below are estimated "
                       "on its CPU, and running the sweep here would fail", err=True)
        rows, total = estimate_sweep(timed_on, cells, jobs=jobs)
        click.echo(f"sweep {cfg.name!r} ({cfg.source}): {len(cells)} cells, output {cfg.output}")
        for r in rows:
            c = r["cell"]
            t = "" if r["status"] == "done" else f"~{r['train_s'] + r['attack_s']:.0f} s ({r['source']})"
            click.echo(f"  {c.short}  {r['status']:8s} {c.describe():70s} {t}")
        left = sum(r["status"] != "done" for r in rows)
        click.echo(f"{left} cells to run, estimated {total / 60:.1f} min with {jobs} job(s) on this machine (rough: "
                   f"training is timed, attacks without history assume fixed passes per image)")
        return
    check_output_path(cfg.output, "sweep.output", folder=True)
    check_device(None, None, cfg.device)  # a GPU sweep on a machine without one fails here, not in every cell
    summary = run_sweep(cfg, executor=executor, jobs=jobs, address=address, data_root=data_root, threads=threads,
                        progress=not quiet, report=None if no_report else write_report, limit=limit)
    for line in summary.lines():
        click.echo(line)
    if summary.report:
        from robustbench_geo.report import report_headline

        click.echo("headline (95 % intervals in brackets; details in the report):")
        for line in report_headline(cfg.output):
            click.echo(f"  {line}")
    if summary.failed:
        raise click.ClickException(f"{len(summary.failed)} cell(s) failed; see the log and rbgeo results show CELL")
