"""``rbgeo certify``: certify a checkpoint's smoothed classifier against a geometric transform (TSS)."""

from __future__ import annotations

from pathlib import Path

import click

from robustbench_geo.check import check_number
from robustbench_geo.cli.options import (
    check_seed_option, data_root_option, device_option, handle_errors, quiet_option, warn_differences,
)


def family_kwargs(transform: str, max_angle_deg: float, min_scale: float, max_scale: float, max_shift_px: float) -> dict:
    """The budget options that belong to ``transform``."""
    return {"rotation": {"max_angle_deg": max_angle_deg}, "scaling": {"min_scale": min_scale, "max_scale": max_scale},
            "translation": {"max_shift_px": max_shift_px}}.get(transform, {})


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("dataset")
@click.option("--transform", type=click.Choice(["rotation", "scaling", "translation"]), default="rotation", show_default=True)
@click.option("--max-angle-deg", type=float, default=30.0, show_default=True, help="Rotation: certify every angle in +-this (degrees).")
@click.option("--min-scale", type=float, default=0.8, show_default=True, help="Scaling: smallest content scale.")
@click.option("--max-scale", type=float, default=1.2, show_default=True, help="Scaling: largest content scale.")
@click.option("--max-shift-px", type=float, default=2.0, show_default=True, help="Translation: every shift in +-this (pixels).")
@click.option("--n", "n_images", type=int, default=100, show_default=True, help="Certify a seeded subset of this many test images.")
@click.option("--samples", type=int, default=1000, show_default=True, help="Estimation samples per node (Cohen's n).")
@click.option("--n0", type=int, default=100, show_default=True, help="Selection samples at the clean image.")
@click.option("--sigma", type=float, default=None, help="Smoothing noise (default: the checkpoint's training noise, else 0.25).")
@click.option("--alpha", type=float, default=0.001, show_default=True, help="Failure probability per image.")
@click.option("--cells", type=int, default=None, help="Cells per parameter axis (rotation 120, scaling 100, translation 40).")
@click.option("--substeps", type=int, default=None, help="Interpolation-bound sub-steps per cell and axis (rotation, scaling 1000; translation 10): fewer leave a Lipschitz term that floors the bound.")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Noisy images per model call.")
@click.option("--attack/--no-attack", default=True, show_default=True, help="Also run the grid attack on the smoothed and base classifier.")
@click.option("--attack-points", type=int, default=61, show_default=True, help="Grid points per parameter axis for the attacks.")
@click.option("--seed", type=int, default=0, show_default=True, callback=check_seed_option, help="Seed of the image subset and of the noise.")
@click.option("--dry-run", is_flag=True, help="Only estimate the work and time (one timed batch), then exit.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder for rows.csv and outcome.json.")
@device_option
@data_root_option
@quiet_option
@handle_errors
def certify(checkpoint, dataset, transform, max_angle_deg, min_scale, max_scale, max_shift_px, n_images, samples, n0,
            sigma, alpha, cells, substeps, batch_size, attack, attack_points, seed, dry_run, out, device, data_root, quiet):
    """Certify CHECKPOINT's smoothed classifier on DATASET against every transform in a range (TSS).

    Prints certified accuracy (a lower bound on robust accuracy) beside the grid attack's accuracy on the
    same smoothed classifier and on the base classifier (upper bounds). See docs/certification.md.

    \b
    Examples:
      rbgeo train small_cnn mnist --augment rotate-noise:angle_deg=35,sigma=0.5 --out checkpoints/rot
      rbgeo certify checkpoints/rot mnist --transform rotation --max-angle-deg 30 --n 500 --samples 1000
      rbgeo certify checkpoints/sc mnist --transform scaling --min-scale 0.8 --max-scale 1.2 --dry-run
    """
    from robustbench_geo.checkpoint import read_metadata
    from robustbench_geo.compose import evaluate_source
    from robustbench_geo.loading import load_evaluated
    from robustbench_geo.report.run_files import write_certificate_files
    from robustbench_geo.results_schema import ci_bounds
    from robustbench_geo.smoothing import certificate_config, estimate_cost

    if n_images <= 0:
        raise ValueError(f"--n: expected a positive number of images, got {n_images}")
    counts = {"--samples": samples, "--n0": n0, "--batch-size": batch_size, "--attack-points": attack_points,
              "--cells": cells, "--substeps": substeps}
    for option, value in counts.items():  # SmoothingConfig checks them again under its own names
        if value is not None:
            check_number(value, option, integer=True, low=1)
    if sigma is not None:
        check_number(sigma, "--sigma", low=0.0, low_open=True)
    task = read_metadata(checkpoint).get("task", "image")
    if task != "image":
        raise ValueError(f"certification applies to image models; checkpoint {checkpoint} is a {task} model")
    fam = family_kwargs(transform, max_angle_deg, min_scale, max_scale, max_shift_px)
    params = {"transform": transform, "family": fam, "sigma": sigma, "samples": samples, "n0": n0, "alpha": alpha,
              "cells": cells, "substeps": substeps, "batch_size": batch_size,
              "attack_points": attack_points if attack else 0}
    source = {"checkpoint": checkpoint, "n": n_images, "seed": seed, "data_root": data_root, "device": device,
              "force": True}
    if dry_run:
        loaded = load_evaluated(dataset, **source)
        warn_differences(loaded, None)
        est = estimate_cost(loaded.model, loaded.data.images[0], transform, images=len(loaded.data),
                            config=certificate_config(params, loaded.meta, seed), attack_points=attack_points, **fam)
        click.echo(f"dry run: {est['images']} images x ({est['forward_passes_per_image']} forward passes + "
                   f"{est['warps_per_image']} warps) on {est['device']}; at most ~{est['seconds_per_image']:.1f} s per "
                   f"image ({est['seconds_per_forward'] * 1e6:.1f} us per forward, {est['seconds_interpolation_bound']:.2f} s "
                   f"per interpolation bound), ~{est['seconds_total'] / 60:.1f} min in all")
        return
    run = evaluate_source(dataset, certificate=params, progress=not quiet,
                          on_loaded=lambda loaded: warn_differences(loaded, None), **source)
    (o,) = run.outcomes
    m = o.metrics

    def pct(key):
        lo, hi = (m[bound] for bound in ci_bounds(key))
        return f"{100 * m[key]:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"

    click.echo(f"{transform} {fam} sigma={o.params['sigma']} n={m['n']} images, {samples} samples/node, alpha={alpha} "
               f"({o.seconds:.1f} s)")
    click.echo(f"  certified accuracy      {pct('certified_accuracy')}  (lower bound; 95 % CI over images)")
    if attack:
        click.echo(f"  smoothed, grid attack   {pct('smoothed_attack_accuracy')}  (upper bound, same smoothed classifier)")
        click.echo(f"  base, grid attack       {pct('base_attack_accuracy')}  (upper bound, base classifier)")
    click.echo(f"  smoothed clean accuracy {pct('smoothed_accuracy')}, abstained {pct('abstention_rate')}")
    if out:
        written = write_certificate_files(Path(out), o, checkpoint=checkpoint, dataset=dataset)
        click.echo(f"wrote {', '.join(str(p) for p in written)}")
