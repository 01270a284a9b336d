"""Input checks shared by the whole package (messages read "expected ..., got ...")."""

from __future__ import annotations

import difflib
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


def check_interval(value: Sequence[float], name: str, *, nonnegative: bool = False) -> tuple[float, float]:
    """Validate a ``(min, max)`` pair and return it as floats."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a (min, max) pair of numbers, got {value!r}") from None
    if low > high:
        raise ValueError(f"{name}: expected min <= max, got ({low}, {high})")
    if nonnegative and low < 0:
        raise ValueError(f"{name}: expected non-negative values, got ({low}, {high})")
    return low, high


def check_nonnegative(value: float, name: str) -> float:
    """Validate a non-negative number (budgets, radii)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if value < 0 or value != value:
        raise ValueError(f"{name}: expected a non-negative number, got {value}")
    return value


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
