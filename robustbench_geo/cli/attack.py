"""``rbgeo attack``: attack a checkpoint on a dataset and write per-sample results."""

from __future__ import annotations

import click

from robustbench_geo.cli.options import (
    check_output_path, check_seed_option, data_root_option, deform_backend_option, device_option, handle_errors,
    model_source_options, parse_params, quiet_option, split_model_args, warn_differences,
)


@click.command()
@click.argument("args", nargs=-1, metavar="[CHECKPOINT] DATASET")
@model_source_options
@click.option("--attack", "attack_name", required=True, help="Attack name (rbgeo list attacks).")
@click.option("--param", "params", multiple=True, help="Attack parameter key=value (repeatable).")
@click.option("--n", type=int, default=None, help="Images: attack N test images (seeded subset) [default: 1000].")
@click.option("--batch-size", type=int, default=None, help="Images: attack batch size [default: 256].")
@click.option("--budget", type=float, default=None, help="Graphs: fraction of edges (global) or flips per target (targeted).")
@click.option("--mode", type=click.Choice(["evasion", "poisoning"]), default=None, help="Graphs: protocol [default: evasion].")
@click.option("--seed", type=int, default=0, show_default=True, callback=check_seed_option, help="First attack seed.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Number of seeds (seed, seed+1, ...): mean +- std.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder for CSV rows, JSON and figures.")
@click.option("--force", is_flag=True, help="Attack even on another dataset variant or split than the checkpoint's.")
@click.option("--vote", type=int, default=None, metavar="VOTES",
              help="Images: attack the test-time majority vote of the model over VOTES random rotations + shifts "
                   "(+-30 deg, +-3 px; Engstrom et al. 2019), seeded by --seed.")
@click.option("--vote-randomness", type=click.Choice(["fresh", "fixed"]), default="fresh", show_default=True,
              help="With --vote: new draws on every model call (as deployed) or the same draws on every call.")
@device_option
@deform_backend_option
@data_root_option
@quiet_option
@handle_errors
def attack(args, model_spec, weights, preprocessing, attack_name, params, n, batch_size, budget, mode, seed, seeds, out,
           force, vote, vote_randomness, device, deform_backend, data_root, quiet):
    """Attack CHECKPOINT (or --model) on DATASET; print clean and robust accuracy.

    \b
    Examples:
      rbgeo attack checkpoints/cnn_mnist mnist --attack grid --n 1000 --out runs/grid
      rbgeo attack checkpoints/cnn_mnist mnist --attack worst_of_k --param k=10 --param max_angle_deg=30
      rbgeo attack checkpoints/cnn_mnist mnist --attack stadv --n 100
      rbgeo attack checkpoints/cnn_mnist mnist --attack art:ProjectedGradientDescent --param eps=0.3
      rbgeo attack checkpoints/gcn_cora cora --attack metattack --budget 0.05 --mode poisoning --seeds 5
      rbgeo attack --model my_models.py:trained_net mnist --attack grid --n 500
      rbgeo attack --model my_models.py:net --weights net.safetensors --preprocessing mean=0.1307,std=0.3081 \\
          mnist --attack stadv --n 100
      rbgeo attack --model my_gnn.py:make_gcn --weights gcn.pt cora --attack pgd --budget 0.05
      rbgeo attack checkpoints/cnn_mnist mnist --attack manifool --n 500 --out runs/manifool
      rbgeo attack checkpoints/cnn_mnist mnist --attack grid --vote 10 --n 200
    """
    from robustbench_geo.compose import evaluate_source
    from robustbench_geo.report.run_files import write_attack_files

    def show(o):
        m = o.metrics
        click.echo(f"seed {o.seed}: clean accuracy {100 * m['clean_accuracy']:.2f} %, robust accuracy "
                   f"{100 * m['robust_accuracy']:.2f} % ({o.seconds:.1f} s)")

    out = check_output_path(out, "--out", folder=True)
    checkpoint, dataset = split_model_args(args, model_spec, weights)
    run = evaluate_source(dataset, attack_name, parse_params(params), spec=model_spec, checkpoint=checkpoint,
                          weights=weights, preprocessing=preprocessing, n=n, seed=seed, seeds=seeds,
                          batch_size=batch_size, budget=budget, mode=mode, vote=vote, vote_randomness=vote_randomness,
                          deform_backend=deform_backend, device=device, data_root=data_root, force=force,
                          progress=not quiet, on_outcome=show, on_loaded=warn_differences)
    if seeds > 1:
        (cln, cln_sd), (rob, rob_sd) = run.spread("clean_accuracy"), run.spread("robust_accuracy")
        click.echo(f"{attack_name} over {seeds} seeds: clean {100 * cln:.2f} +- {100 * cln_sd:.2f} %, "
                   f"robust {100 * rob:.2f} +- {100 * rob_sd:.2f} %")
    if out:
        written = write_attack_files(out, run, attack=attack_name, dataset=dataset, checkpoint=checkpoint,
                                     label=run.meta.get("model") or model_spec or "model")
        if written[-1].name == "budget_curve.png":
            click.echo(f"wrote {written[-1]} (accuracy at every budget, seeds pooled)")
        click.echo(f"wrote {out / 'rows.csv'}, {out / 'outcome.json'}")
