"""``rbgeo attack``: attack a checkpoint on a dataset and write per-sample results."""

from __future__ import annotations

import json
import statistics

import click

from robustbench_geo.cli.options import (
    check_output_path, check_seed_option, data_root_option, deform_backend_option, device_option, handle_errors,
    model_source_options, parse_params, quiet_option, split_model_args,
)

#: images attacked and attack batch size when --n / --batch-size are not given
DEFAULT_N, DEFAULT_BATCH = 1000, 256


@click.command()
@click.argument("args", nargs=-1, metavar="[CHECKPOINT] DATASET")
@model_source_options
@click.option("--attack", "attack_name", required=True, help="Attack name (rbgeo list attacks).")
@click.option("--param", "params", multiple=True, help="Attack parameter key=value (repeatable).")
@click.option("--n", type=int, default=None, help=f"Images: attack N test images (seeded subset) [default: {DEFAULT_N}].")
@click.option("--batch-size", type=int, default=None, help=f"Images: attack batch size [default: {DEFAULT_BATCH}].")
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
    import pandas as pd

    from robustbench_geo.attacks import get_attack
    from robustbench_geo.attacks.base import check_params
    from robustbench_geo.check import check_number
    from robustbench_geo.checkpoint import check_dataset_fit
    from robustbench_geo.data import dataset_info, load_dataset
    from robustbench_geo.evaluation import evaluate_attack
    from robustbench_geo.evaluation.graph import write_artefacts as write_graph_artefacts
    from robustbench_geo.evaluation.image import write_artefacts as write_image_artefacts
    from robustbench_geo.models import set_deform_backend
    from robustbench_geo.loading import load_model
    from robustbench_geo.models.vote import MajorityVote
    from robustbench_geo.report.plots import budget_curve_png

    entry = get_attack(attack_name)  # unknown names fail before loading anything
    attack_params = check_params(entry, parse_params(params))
    check_number(seeds, "--seeds", integer=True, low=1)
    given = {"image": {"--n": n, "--batch-size": batch_size, "--vote": vote},
             "graph": {"--budget": budget, "--mode": mode}}
    for domain, options in given.items():
        extra_opts = [k for k, v in options.items() if v is not None and not entry.applies_to(domain)]
        if extra_opts:
            verb, article = "applies" if len(extra_opts) == 1 else "apply", "an" if entry.domain == "image" else "a"
            raise ValueError(f"{', '.join(extra_opts)} {verb} to {domain} attacks only; {attack_name!r} is {article} "
                             f"{entry.domain} attack")
    out = check_output_path(out, "--out", folder=True)
    checkpoint, dataset = split_model_args(args, model_spec, weights)
    task = dataset_info(dataset).task
    if not entry.applies_to(task):
        raise ValueError(f"attack {attack_name!r} is a {entry.domain} attack but dataset {dataset!r} is {task} data")
    if task == "image":
        n = DEFAULT_N if n is None else check_number(n, "--n", integer=True, low=1)
        model, meta = load_model(model_spec, checkpoint, weights, data=dataset_info(dataset), preprocessing=preprocessing,
                                 device=device)
        ds = load_dataset(dataset, split="test", root=data_root, seed=seed, subset=n)
        extra = {"batch_size": check_number(DEFAULT_BATCH if batch_size is None else batch_size, "--batch-size",
                                            integer=True, low=1), "device": device, "progress": not quiet}
    else:
        if mode == "poisoning" and checkpoint is None:
            raise ValueError("--mode poisoning retrains the model from scratch with its training recipe, which only a "
                             "checkpoint records; a --model/--weights model supports --mode evasion")
        ds = load_dataset(dataset, root=data_root, seed=seed)
        model, meta = load_model(model_spec, checkpoint, weights, data=ds, preprocessing=preprocessing, device=device)
        extra = {"mode": mode or "evasion", "budget": None if budget is None else check_number(budget, "--budget", low=0.0),
                 "checkpoint_meta": meta, "device": device, "progress": not quiet}
    set_deform_backend(model, deform_backend)
    defense = None
    if vote is not None:
        model = MajorityVote(model, votes=check_number(vote, "--vote", integer=True, low=1), seed=seed,
                             randomness=vote_randomness)
        defense = model.describe()
    for line in check_dataset_fit(meta, ds, spec=dataset, force=force):
        click.echo(f"warning (--force): checkpoint and dataset differ: {line}", err=True)
    outcomes = []
    for s in range(seed, seed + seeds):
        o = evaluate_attack(model, ds, attack_name, attack_params, seed=s, **extra)
        outcomes.append(o)
        m = o.metrics
        click.echo(f"seed {s}: clean accuracy {100 * m['clean_accuracy']:.2f} %, robust accuracy "
                   f"{100 * m['robust_accuracy']:.2f} % ({o.seconds:.1f} s)")
    if seeds > 1:
        rob = [o.metrics["robust_accuracy"] * 100 for o in outcomes]
        cln = [o.metrics["clean_accuracy"] * 100 for o in outcomes]
        click.echo(f"{attack_name} over {seeds} seeds: clean {statistics.mean(cln):.2f} +- {statistics.stdev(cln):.2f} %, "
                   f"robust {statistics.mean(rob):.2f} +- {statistics.stdev(rob):.2f} %")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"seed": o.seed, **r} for o in outcomes for r in o.rows]
        pd.DataFrame(rows).to_csv(out / "rows.csv", index=False)
        summary = [{"attack": o.attack, "params": o.params, "seed": o.seed, "metrics": o.metrics, "seconds": o.seconds,
                    "config": o.config, "checkpoint": None if checkpoint is None else str(checkpoint),
                    "model": {k: meta.get(k) for k in ("model", "source", "weights_file", "weights_sha256", "preprocessing",
                                                       "defense")
                              if k in meta},
                    "dataset": dataset, "defense": defense} for o in outcomes]
        (out / "outcome.json").write_text(json.dumps(summary, indent=2, default=str))
        (write_image_artefacts if task == "image" else write_graph_artefacts)(outcomes[0], out)
        curves = [o.artefacts["budget_curve"] for o in outcomes if "budget_curve" in o.artefacts]
        if curves:
            label = meta.get("model") or model_spec or "model"
            budget_curve_png(out / "budget_curve.png", f"{attack_name} on {dataset}", curves, label)
            click.echo(f"wrote {out / 'budget_curve.png'} (accuracy at every budget, seeds pooled)")
        click.echo(f"wrote {out / 'rows.csv'}, {out / 'outcome.json'}")
