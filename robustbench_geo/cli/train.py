"""``rbgeo train`` and ``rbgeo eval``."""

from __future__ import annotations

import click

from robustbench_geo.cli.options import (
    data_root_option, deform_backend_option, device_option, handle_errors, parse_params, quiet_option, seed_option,
)


@click.command()
@click.argument("model")
@click.argument("dataset")
@click.option("--epochs", type=int, default=None, help="Epochs (images: 10; graphs: at most 1000, early stopping).")
@click.option("--lr", type=float, default=None, help="Learning rate (images: 1e-3; graphs: 0.01).")
@click.option("--batch-size", type=int, default=None, help="Batch size for images (128).")
@seed_option
@click.option("--augment", default="none", show_default=True, help="Augmentation: none, scale, rotate, affine, or for smoothing noise, rotate-noise, scale-noise, "
              "translate-noise with key=value options (e.g. rotate-noise:angle_deg=35,sigma=0.5).")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint stem (writes STEM.safetensors + STEM.json); default checkpoints/MODEL_DATASET_sSEED.")
@click.option("--subset", type=int, default=None, help="Train on a seeded random subset of this many images.")
@click.option("--test-subset", type=int, default=None, help="Evaluate on a seeded subset of this many test images.")
@click.option("--param", "params", multiple=True, help="Model kwarg key=value (e.g. num_deform=2, deform=v2, hidden=32).")
@click.option("--deform", type=click.Choice(["v1", "v2"]), default=None, help="Deformable version for deformable models.")
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Learning-rate schedule for images (cosine: annealed to 0 over all steps).")
@click.option("--trainable", type=click.Choice(["all", "offsets"]), default="all", show_default=True,
              help="Train all parameters, or only the deformable offset predictors.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None, help="Start from this checkpoint.")
@deform_backend_option
@data_root_option
@quiet_option
@handle_errors
def train(model, dataset, epochs, lr, batch_size, seed, augment, device, out, subset, test_subset, params, deform,
          schedule, trainable, init_from, deform_backend, data_root, quiet):
    """Train MODEL on DATASET and save a checkpoint.

    \b
    Examples:
      rbgeo train cnn mnist --epochs 10 --out checkpoints/cnn_mnist
      rbgeo train deform_cnn mnist --deform v2 --augment scale --out checkpoints/dcnn_v2
      rbgeo train gcn cora --seed 1
      rbgeo train my_models.py:make_net mnist --epochs 1
    """
    from robustbench_geo.training import fit

    model_kwargs = parse_params(params)
    if deform:
        model_kwargs["deform"] = deform
    if out is None:
        safe = model.replace("/", "_").replace(":", "_").replace(".py", "")
        out = f"checkpoints/{safe}_{dataset.replace(':', '_')}_s{seed}"
    result = fit(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, augment=augment, device=device,
                 out=out, data_root=data_root, subset=subset, test_subset=test_subset, deform_backend=deform_backend,
                 trainable=trainable, init_from=init_from, model_kwargs=model_kwargs, schedule=schedule,
                 progress=not quiet)
    m = result.meta
    click.echo(f"{model} on {dataset}: clean accuracy {100 * m['clean_accuracy']:.2f} % "
               f"({m['epochs_run']} epochs, {m['train_seconds']:.1f} s, seed {seed})")
    click.echo(f"checkpoint: {result.checkpoint}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("dataset")
@click.option("--subset", type=int, default=None, help="Evaluate on a seeded subset of this many test images.")
@seed_option
@device_option
@deform_backend_option
@data_root_option
@handle_errors
def evaluate(checkpoint, dataset, subset, seed, device, deform_backend, data_root):
    """Print the clean accuracy of CHECKPOINT on DATASET (test images / test nodes).

    \b
    Examples:
      rbgeo eval checkpoints/cnn_mnist mnist-scaled
      rbgeo eval checkpoints/gcn_cora_s0 cora
    """
    from robustbench_geo.checkpoint import load_checkpoint
    from robustbench_geo.data import load_dataset
    from robustbench_geo.evaluation import evaluate as _evaluate
    from robustbench_geo.models import check_model_output, set_deform_backend
    from robustbench_geo.models.registry import model_kwargs_for

    model, meta = load_checkpoint(checkpoint, device=device)
    set_deform_backend(model, deform_backend)
    kwargs = {"split": "test"} if meta.get("task") == "image" else {}
    ds = load_dataset(dataset, root=data_root, seed=seed, subset=subset, **kwargs)
    expected = model_kwargs_for(meta["model"], ds)
    stored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in meta["model_kwargs"].items()}
    for k in ("in_channels", "num_classes", "image_size", "in_features"):
        if k in expected and stored.get(k) != expected[k]:
            raise ValueError(f"checkpoint was built for {k}={stored.get(k)} but dataset {dataset!r} has {k}={expected[k]}")
    check_model_output(model, meta["model"], meta.get("task", "image"), stored)
    acc = _evaluate(model, ds)
    click.echo(f"{meta['model']} ({checkpoint}) on {dataset}: clean accuracy {100 * acc:.2f} % (n={_size(ds)})")


def _size(ds) -> int:
    return len(ds.idx_test) if hasattr(ds, "idx_test") else len(ds)
