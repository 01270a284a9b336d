"""``rbgeo train`` and ``rbgeo eval``."""

from __future__ import annotations

import click

from robustbench_geo.cli.options import (
    check_output_path, data_root_option, deform_backend_option, device_option, handle_errors, model_source_options,
    parse_params, quiet_option, seed_option, split_model_args, warn_differences,
)


@click.command()
@click.argument("model")
@click.argument("dataset")
@click.option("--epochs", type=int, default=None, help="Epochs (images: 10; graphs: at most 1000, early stopping).")
@click.option("--lr", type=float, default=None, help="Learning rate (images: 1e-3; graphs: 0.01).")
@click.option("--batch-size", type=int, default=None, help="Batch size for images (128).")
@seed_option
@click.option("--augment", default="none", show_default=True, help="Augmentation: none, scale, scale-nearest, rotate, affine, or for smoothing noise, rotate-noise, scale-noise, "
              "translate-noise with key=value options (e.g. rotate-noise:angle_deg=35,sigma=0.5).")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint stem (writes STEM.safetensors + STEM.json); default checkpoints/MODEL_DATASET_sSEED.")
@click.option("--subset", type=int, default=None, help="Train on a seeded random subset of this many images.")
@click.option("--test-subset", type=int, default=None, help="Evaluate on a seeded subset of this many test images.")
@click.option("--param", "params", multiple=True, help="Model kwarg key=value (e.g. num_deform=2, deform=v2, hidden=32).")
@click.option("--deform", type=click.Choice(["v1", "v2"]), default=None, help="Deformable version for deformable models.")
@click.option("--defense", default="none", show_default=True,
              help="Spatial defense while training (images): none, augment, worst_of_k or affine_pgd, with key=value "
                   "options (e.g. worst_of_k:k=10,max_angle_deg=30,max_shift_px=3); see rbgeo list defenses.")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Learning-rate schedule for images (cosine: annealed to 0 over all steps).")
@click.option("--trainable", type=click.Choice(["all", "offsets", "offsets+bn"]), default="all", show_default=True,
              help="Train all parameters, only the deformable offset predictors (batch norm frozen), or the "
                   "offsets and the batch-norm layers.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None, help="Start from this checkpoint.")
@deform_backend_option
@data_root_option
@quiet_option
@handle_errors
def train(model, dataset, epochs, lr, batch_size, seed, augment, device, out, subset, test_subset, params, deform,
          defense, schedule, trainable, init_from, deform_backend, data_root, quiet):
    """Train MODEL on DATASET and save a checkpoint.

    \b
    Examples:
      rbgeo train cnn mnist --epochs 10 --out checkpoints/cnn_mnist
      rbgeo train deform_cnn mnist --deform v2 --augment scale --out checkpoints/dcnn_v2
      rbgeo train cnn mnist --defense worst_of_k:k=10 --out checkpoints/cnn_wo10
      rbgeo train gcn cora --seed 1
      rbgeo train my_models.py:make_net mnist --epochs 1
    """
    from robustbench_geo.checkpoint import trained_label
    from robustbench_geo.data import dataset_info
    from robustbench_geo.train_defenses import get_defense
    from robustbench_geo.training import fit

    image_only = [k for k, v in (("--subset", subset), ("--test-subset", test_subset), ("--batch-size", batch_size))
                  if v is not None]
    if image_only and dataset_info(dataset).task == "graph":  # they would be ignored
        raise ValueError(f"{', '.join(image_only)} {'applies' if len(image_only) == 1 else 'apply'} to image datasets "
                         f"only; graphs train full-batch on their whole split")
    model_kwargs = parse_params(params)
    if deform:
        model_kwargs["deform"] = deform
    if out is None:
        safe = model.replace("/", "_").replace(":", "_").replace(".py", "")
        out = f"checkpoints/{safe}_{dataset.replace(':', '_')}_s{seed}"
    get_defense(defense)  # a bad spec fails before the output path is checked or data is loaded
    check_output_path(out, "--out", folder=False)
    result = fit(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, augment=augment, device=device,
                 out=out, data_root=data_root, subset=subset, test_subset=test_subset, deform_backend=deform_backend,
                 trainable=trainable, init_from=init_from, model_kwargs=model_kwargs, schedule=schedule,
                 defense=defense, progress=not quiet)
    m = result.meta
    click.echo(f"{trained_label(m, model)} on {dataset}: clean accuracy {100 * m['clean_accuracy']:.2f} % "
               f"({m['epochs_run']} epochs, {m['train_seconds']:.1f} s, seed {seed})")
    click.echo(f"checkpoint: {result.checkpoint}")


@click.command("eval")
@click.argument("args", nargs=-1, metavar="[CHECKPOINT] DATASET")
@model_source_options
@click.option("--subset", type=int, default=None, help="Evaluate on a seeded subset of this many test images.")
@click.option("--force", is_flag=True, help="Evaluate even on another dataset variant or split than the checkpoint's.")
@seed_option
@device_option
@deform_backend_option
@data_root_option
@handle_errors
def evaluate(args, model_spec, weights, preprocessing, subset, force, seed, device, deform_backend, data_root):
    """Print the clean accuracy of CHECKPOINT (or of --model) on DATASET (test images / test nodes).

    \b
    Examples:
      rbgeo eval checkpoints/cnn_mnist mnist-scaled
      rbgeo eval checkpoints/gcn_cora_s0 cora
      rbgeo eval --model my_models.py:trained_net mnist
      rbgeo eval --model cnn --weights cnn.safetensors mnist
      rbgeo eval --model my_models.py:net --weights net.pt --preprocessing mean=0.1307,std=0.3081 mnist
    """
    from robustbench_geo.compose import evaluate_source

    checkpoint, dataset = split_model_args(args, model_spec, weights)
    run = evaluate_source(dataset, "none", spec=model_spec, checkpoint=checkpoint, weights=weights,
                          preprocessing=preprocessing, n=subset, image_defaults=None, seed=seed, deform_backend=deform_backend,
                          device=device, data_root=data_root, force=force, on_loaded=warn_differences)
    (o,) = run.outcomes
    click.echo(f"{run.meta['model']} ({checkpoint or weights or 'factory'}) on {dataset}: clean accuracy "
               f"{100 * o.metrics['clean_accuracy']:.2f} % (n={o.metrics['n']:g})")
