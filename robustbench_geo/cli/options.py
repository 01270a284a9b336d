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
        from robustbench_geo.checkpoint import CheckpointError
        from robustbench_geo.data.root import ChecksumError, DataMissingError

        try:
            return fn(*args, **kwargs)
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
