"""Options and error handling shared by the ``rbgeo`` commands."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from robustbench_geo.check import UnknownNameError


class UserInputError(click.ClickException):
    """Bad input (unknown name, bad value, wrong path): exit code 2, like click's usage errors."""

    exit_code = 2


class EnvironmentProblem(click.ClickException):
    """The machine or the files on it (missing data, no GPU, a corrupt checkpoint, no write access): exit 1."""

    exit_code = 1


#: hint appended to errors the package did not anticipate
DEBUG_HINT = "(rerun with --debug for the traceback)"


def debug_enabled() -> bool:
    """``rbgeo --debug ...`` or ``RBGEO_DEBUG=1``: let exceptions through with their traceback."""
    ctx = click.get_current_context(silent=True)
    flag = bool(ctx and (ctx.find_root().params or {}).get("debug"))
    return flag or os.environ.get("RBGEO_DEBUG", "") not in ("", "0")


def as_click_error(e: BaseException) -> click.ClickException:
    """The CLI's one-line message and exit code (2: bad input, 1: environment) for an exception."""
    from robustbench_geo.attacks.graph.base import DenseGraphTooLarge
    from robustbench_geo.checkpoint import CheckpointError, DatasetMismatchError, PluginNotAllowedError
    from robustbench_geo.data.root import CacheError, ChecksumError, DataMissingError
    from robustbench_geo.models.registry import PluginError, UserCodeExit

    if isinstance(e, SystemExit):
        return EnvironmentProblem(f"the code called sys.exit({e.code!r}) (a model factory or plug-in?); nothing was "
                                  f"saved {DEBUG_HINT}")
    if isinstance(e, UserCodeExit):
        return EnvironmentProblem(str(e))
    if isinstance(e, (DatasetMismatchError, PluginNotAllowedError, PluginError, DenseGraphTooLarge)):
        return UserInputError(str(e))
    if isinstance(e, (DataMissingError, CheckpointError, ChecksumError, CacheError, PermissionError)):
        return EnvironmentProblem(str(e))
    if isinstance(e, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)):
        return UserInputError(str(e))
    if isinstance(e, OSError):
        return EnvironmentProblem(f"{type(e).__name__}: {e}")
    if isinstance(e, (UnknownNameError, ValueError, TypeError)):
        return UserInputError(str(e))
    return EnvironmentProblem(f"{type(e).__name__}: {e} {DEBUG_HINT}")


def handle_errors(fn):
    """Turn exceptions into one-line CLI errors (exit 2: bad input, 1: environment); ``--debug`` re-raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the CLI boundary: every error becomes a message
            if debug_enabled():
                raise
            raise as_click_error(e) from None

    return wrapper


def check_device(ctx, param, value: str) -> str:
    """``--device`` callback: a torch device name (exit 2) that exists on this machine (exit 1)."""
    from robustbench_geo.check import DeviceUnavailableError, check_device as _check

    try:
        return str(_check(value))
    except DeviceUnavailableError as e:
        raise EnvironmentProblem(f"--device: {e}") from None
    except ValueError as e:
        raise UserInputError(f"--device: {e}") from None


def check_seed_option(ctx, param, value: int) -> int:
    """``--seed`` callback: an integer in ``[0, 2**63 - 1]`` (the store and torch's generators hold 64-bit seeds)."""
    from robustbench_geo.check import check_seed

    try:
        return check_seed(value, f"--{param.name}")
    except ValueError as e:
        raise UserInputError(str(e)) from None


def check_backend(ctx, param, value: str) -> str:
    """``--deform-backend`` callback: the name is checked for every model, with or without deformable layers."""
    from robustbench_geo.ops.deform_conv import resolve_backend

    if value != "auto":
        try:
            resolve_backend(value)
        except KeyError as e:
            raise UserInputError(f"--deform-backend: {e}") from None
    return value


def check_output_path(path, option: str, *, folder: bool) -> Path | None:
    """Fail before any work when an output path cannot be written.

    Args:
        path: the folder (``folder=True``) or file/checkpoint stem to write; ``None`` passes.
        option: option name for the message.
        folder: whether ``path`` is a folder or a file / checkpoint stem (both are created with
            their missing parents).

    Raises:
        UserInputError: the path (or a parent) is a file where a folder is needed, or a folder
            where a file is needed (exit 2).
        EnvironmentProblem: the nearest existing folder is not writable (exit 1).
    """
    from robustbench_geo.data.root import folder_writable

    if path is None:
        return None
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise UserInputError(f"{option} {p}: expected a folder, got an existing file")
    if not folder and p.is_dir():
        raise UserInputError(f"{option} {p}: expected a file name, got an existing folder")
    base = p if folder else p.parent
    existing = base
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"{option} {p}: {existing} is a file, expected a folder")
    if not folder_writable(existing):
        raise EnvironmentProblem(f"{option} {p}: folder {existing} is not writable")
    return p


def warn_differences(loaded, option: str | None = "--force") -> None:
    """Print, on stderr, how the evaluation data differ from what the checkpoint was trained on (accepted by ``option``)."""
    said = f" ({option})" if option else ""
    for line in loaded.differences:
        click.echo(f"warning{said}: checkpoint and dataset differ: {line}", err=True)


def parse_params(items: tuple[str, ...], option: str = "--param") -> dict:
    """Parse repeated ``key=value`` options; values are read as int, float, bool, list or string."""
    from robustbench_geo.check import parse_value

    out = {}
    for item in items:
        if "=" not in item:
            raise UserInputError(f"{option}: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        value = value.strip()
        if value.startswith("(") or value.startswith("["):
            out[key.strip()] = [parse_value(v.strip()) for v in value.strip("()[]").split(",") if v.strip()]
        else:
            out[key.strip()] = parse_value(value)
    return out


data_root_option = click.option("--data-root", type=click.Path(file_okay=False), default=None, envvar="RBGEO_DATA",
                                help="Data root (else $RBGEO_DATA, else ~/.cache/robustbench_geo).")
device_option = click.option("--device", default="cpu", show_default=True, callback=check_device,
                             help="torch device, e.g. cpu, cuda or cuda:1.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, callback=check_seed_option,
                           help="Random seed.")
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
deform_backend_option = click.option("--deform-backend", default="auto", show_default=True, callback=check_backend,
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
