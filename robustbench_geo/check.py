"""Input checks shared by the whole package (messages read "expected ..., got ...")."""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Iterable, Sequence

import torch


def check_shape(x: torch.Tensor, shape: Sequence[str | int], name: str = "input") -> None:
    """Check that ``x`` has ``len(shape)`` dims and that integer entries match exactly.

    Args:
        x: tensor to check.
        shape: symbolic dims, e.g. ``["B", 1, "H", "W"]``; strings match any size,
            integers must match.
        name: argument name used in the error message.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape):
        raise ValueError(f"{name}: expected shape {_fmt(shape)} ({len(shape)} dims), got {tuple(x.shape)}")
    for i, (want, got) in enumerate(zip(shape, x.shape)):
        if isinstance(want, int) and want != got:
            raise ValueError(f"{name}: expected shape {_fmt(shape)}, got {tuple(x.shape)} (dim {i} must be {want})")


def check_range(x: torch.Tensor, low: float = 0.0, high: float = 1.0, name: str = "input") -> None:
    """Check that all values lie in ``[low, high]``."""
    if x.numel() and (x.min() < low or x.max() > high):
        raise ValueError(f"{name}: expected values in [{low}, {high}], got [{x.min().item():.4g}, {x.max().item():.4g}]")


def check_number(value, name: str, *, integer: bool = False, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float | int:
    """The one check every numeric parameter goes through where it is parsed (attack, training, data).

    Rejects booleans (``true`` is not 1), strings (``"abc"``), NaN and infinities (an infinite budget
    gives NaN images and fake accuracies), non-integers where an integer is expected and values outside
    ``[low, high]`` (``(low, high]`` when ``low_open``).

    Args:
        value: the value as parsed (int, float, or anything else to be rejected).
        name: parameter name used in the message (``max_angle_deg``, ``--lr``, ``train_subset``).
        integer: require an integral value (``3`` or ``3.0``); returns an ``int``.
        low, high: inclusive bounds (``None``: unbounded on that side, but still finite).
        low_open: make the lower bound exclusive (positive numbers: ``low=0, low_open=True``).

    Returns:
        ``value`` as ``int`` (``integer=True``) or ``float``.
    """
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not _is_scalar_tensor(value):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"{name}: expected a finite number, got {as_float}")
    if integer and as_float != int(as_float):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    out = int(as_float) if integer else as_float
    if low is not None and (out < low or (low_open and out == low)):
        raise ValueError(f"{name}: expected {_bounds(what, low, high, low_open)}, got {out}")
    if high is not None and out > high:
        raise ValueError(f"{name}: expected {_bounds(what, low, high, low_open)}, got {out}")
    return out


def check_interval(value: Sequence[float], name: str, *, nonnegative: bool = False) -> tuple[float, float]:
    """Validate a finite ``(min, max)`` pair and return it as floats."""
    try:
        items = [] if isinstance(value, (str, bytes)) else [v.item() if _is_scalar_tensor(v) else v for v in value]
    except TypeError:
        items = []
    if len(items) != 2:
        raise ValueError(f"{name}: expected a (min, max) pair of numbers, got {value!r}")
    low, high = (check_number(v, f"{name}[{i}]", low=0.0 if nonnegative else None) for i, v in enumerate(items))
    if low > high:
        raise ValueError(f"{name}: expected min <= max, got ({low}, {high})")
    return low, high


def check_nonnegative(value: float, name: str) -> float:
    """Validate a finite non-negative number (budgets, radii)."""
    return check_number(value, name, low=0.0)


def check_positive_int(value, name: str) -> int:
    """Validate an integer ``>= 1`` (steps, counts, sizes)."""
    return check_number(value, name, integer=True, low=1)


def check_like(value, default, name: str):
    """Check a user-set parameter against the kind of its ``default`` (attack params, dataset options).

    Numbers go through :func:`check_number` (integers where the default is an integer, so
    ``angle_steps=true`` or ``angle_steps=abc`` name the parameter), booleans and strings must be
    booleans and strings, lists match the default's length element-wise; without a default
    (``None``), numbers must still be finite. Ranges are the caller's business (same checks).

    Returns:
        ``value``, with integral floats as ints where the default is an integer.
    """
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        return check_number(value, name, integer=True)
    elif isinstance(default, float):
        return check_number(value, name)
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise ValueError(f"{name}: expected a list of {len(default)} values like {list(default)}, got {value!r}")
        return type(value)(check_like(v, d, f"{name}[{i}]") for i, (v, d) in enumerate(zip(value, default)))
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
    elif isinstance(value, (tuple, list)):  # no default to compare with: numbers must still be finite
        return type(value)(check_like(v, None, f"{name}[{i}]") for i, v in enumerate(value))
    elif isinstance(value, float):
        return check_number(value, name)
    return value


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` holds NaN or infinite values (results are checked before they are stored)."""
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name}: expected finite values, got {bad} NaN/infinite of {x.numel()}")
    return x


class NonFiniteError(ValueError):
    """A computed result (logits, loss, images) holds NaN or infinite values."""


def _is_scalar_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool


def _bounds(what: str, low, high, low_open: bool) -> str:
    if high is None:
        return f"{what} {'>' if low_open else '>='} {low}"
    if low is None:
        return f"{what} <= {high}"
    return f"{what} in {'(' if low_open else '['}{low}, {high}]"


class DeviceUnavailableError(RuntimeError):
    """A valid device name whose hardware this machine lacks (``cuda`` without a GPU)."""


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here: bad names raise ``ValueError``, missing hardware
    :class:`DeviceUnavailableError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"expected a torch device such as cpu, cuda or cuda:1, got {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailableError(f"{device!r}: no CUDA device is available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise DeviceUnavailableError(f"{device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceUnavailableError(f"{device!r}: no MPS device is available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"expected a device of type cpu, cuda or mps, got {device!r}")
    return dev


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> KeyError:
    """A ``KeyError`` for an unknown registry name listing close matches and all valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


class UnknownNameError(KeyError):
    """Raised for unknown model, dataset, attack or loss names; the message lists valid names."""

    def __str__(self) -> str:  # KeyError quotes its message by default
        return str(self.args[0])


def _fmt(shape: Sequence[str | int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
