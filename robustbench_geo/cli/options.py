"""Options and error handling shared by the ``rbgeo`` commands."""

from __future__ import annotations

import functools

import click

from robustbench_geo.check import UnknownNameError


class UserInputError(click.ClickException):
    """Bad input (unknown name, bad value): exit code 2, like click's usage errors."""

    exit_code = 2


def handle_errors(fn):
    """Turn the package's user-facing exceptions into clean CLI errors (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from robustbench_geo.checkpoint import CheckpointError, PluginNotAllowedError
        from robustbench_geo.data.root import ChecksumError, DataMissingError

        try:
            return fn(*args, **kwargs)
        except PluginNotAllowedError as e:  # the user must name the plug-in: bad input, not a broken file
            raise UserInputError(str(e)) from None
        except (DataMissingError, CheckpointError, ChecksumError) as e:
            raise click.ClickException(str(e)) from None
        except (UnknownNameError, ValueError, TypeError) as e:
            raise UserInputError(str(e)) from None

    return wrapper


def parse_params(items: tuple[str, ...], option: str = "--param") -> dict:
    """Parse repeated ``key=value`` options; values are read as int, float, bool, list or string."""
    from robustbench_geo.data import _coerce

    out = {}
    for item in items:
        if "=" not in item:
            raise UserInputError(f"{option}: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        value = value.strip()
        if value.startswith("(") or value.startswith("["):
            out[key.strip()] = [_coerce(v.strip()) for v in value.strip("()[]").split(",") if v.strip()]
        else:
            out[key.strip()] = _coerce(value)
    return out


data_root_option = click.option("--data-root", type=click.Path(file_okay=False), default=None, envvar="RBGEO_DATA",
                                help="Data root (else $RBGEO_DATA, else ~/.cache/robustbench_geo).")
device_option = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
deform_backend_option = click.option("--deform-backend", default="auto", show_default=True,
                                     help="Deformable-convolution backend: auto, native, torchvision or triton (CUDA).")


def model_source_options(fn):
    """``--model``, ``--weights`` and ``--preprocessing``: evaluate a model that was not trained by ``rbgeo train``."""
    for opt in reversed((
        click.option("--model", "model_spec", default=None, metavar="SPEC",
                     help="Plug-in factory returning a trained model (module:factory or file.py:factory), or the "
                          "architecture for --weights (also a registered name). With a CHECKPOINT: allows the plug-in "
                          "its metadata names (never imported otherwise)."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="State dict for --model: .safetensors, or torch.save(model.state_dict()) (no other pickles)."),
        click.option("--preprocessing", default=None, metavar="mean=M,std=S",
                     help="Normalisation the --model expects, applied inside it so attacks stay in [0, 1] pixels, "
                          "e.g. mean=0.1307,std=0.3081 or mean=[0.49,0.48,0.45],std=[0.25,0.24,0.26]."),
    )):
        fn = opt(fn)
    return fn


def split_model_args(args: tuple[str, ...], model_spec: str | None, weights: str | None) -> tuple[str | None, str]:
    """``[CHECKPOINT] DATASET`` -> ``(checkpoint or None, dataset)``; a checkpoint or ``--model`` is required."""
    if len(args) == 2:
        if weights is not None:
            raise UserInputError(f"expected a CHECKPOINT or --weights, got both ({args[0]} and {weights})")
        return args[0], args[1]
    if len(args) == 1 and model_spec is not None:
        return None, args[0]
    if len(args) == 1:
        raise UserInputError(f"expected CHECKPOINT DATASET, or --model SPEC [--weights FILE] DATASET, got only {args[0]!r}")
    raise UserInputError(f"expected [CHECKPOINT] DATASET, got {len(args)} arguments: {' '.join(args) or 'none'}")
