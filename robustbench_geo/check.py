"""Input checks shared by the whole package (messages read "expected ..., got ...")."""

from __future__ import annotations

import difflib
import math
import numbers
from pathlib import Path
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
    """Check that all values lie in ``[low, high]`` (NaN is out of every range)."""
    if x.numel() and x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError(f"{name}: expected values in [{low}, {high}], got {int(torch.isnan(x).sum())} NaN of {x.numel()}")
    if x.numel() and (x.min() < low or x.max() > high):
        lo, hi = x.min().item(), x.max().item()
        raise ValueError(f"{name}: expected values in [{low}, {high}], got [{_shown(lo, low, high)}, {_shown(hi, low, high)}]")


def check_images(images, name: str = "images") -> torch.Tensor:
    """Images handed to the toolkit: a non-empty float tensor ``(N, C, H, W)``, finite, in ``[0, 1]``.

    Returns ``images`` unchanged; raises ``TypeError`` for a non-tensor and ``ValueError`` otherwise,
    naming the argument.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (N, C, H, W) of floats in [0, 1], got {_kind(images)}")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected shape (N, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        hint = " (divide 8-bit images by 255)" if images.dtype == torch.uint8 else ""
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got {images.dtype}{hint}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one image, got 0")
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        raise ValueError(f"{name}: expected finite values in [0, 1], got {int(bad.sum())} NaN/infinite of {images.numel()}")
    check_range(images, 0.0, 1.0, f"{name} (pixel space; normalise inside the model with preprocessing=...)")
    return images


def check_labels(labels, n: int, name: str = "labels") -> torch.Tensor:
    """Class ids for ``n`` samples: an integer tensor ``(n,)`` (not boolean, not float), all ``>= 0``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor ({n},) of integer class ids, got {_kind(labels)}")
    if labels.dtype == torch.bool:
        raise ValueError(f"{name}: expected integer class ids, got torch.bool (for two classes pass labels.long())")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name}: expected integer class ids, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) (one class id per sample), got {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{name}: expected class ids >= 0, got {int(labels.min())}")
    return labels


def _kind(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} {tuple(shape)}" if shape is not None else type(value).__name__


def _shown(v: float, low: float, high: float) -> str:
    """A value as printed in a range message: short, but never rounded onto a limit (1.0001 is not "1")."""
    short = f"{v:.4g}"
    return repr(v) if float(short) in (low, high) and v not in (low, high) else short


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
    exact = isinstance(value, numbers.Integral) or _is_scalar_tensor(value) and not value.is_floating_point()
    out = (int(value) if exact else int(as_float)) if integer else as_float
    if low is not None and (out < low or (low_open and out == low)):
        raise ValueError(f"{name}: expected {_bounds(what, low, high, low_open)}, got {out}")
    if high is not None and out > high:
        raise ValueError(f"{name}: expected {_bounds(what, low, high, low_open)}, got {out}")
    return out


#: seeds are stored as SQLite integers and fed to ``torch.manual_seed``: both take signed 64-bit values
MAX_SEED = 2 ** 63 - 1


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**63 - 1]`` (larger ones overflow the store and torch's generators)."""
    return check_number(value, name, integer=True, low=0, high=MAX_SEED)


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


def check_materialised(model, name: str = "model") -> None:
    """Refuse a module whose parameters or buffers are on the ``meta`` device: they hold no values, so no
    accuracy can be computed (torch would fail deep inside with "cannot be called on meta tensors")."""
    tensors = [*model.parameters(), *model.buffers()]
    meta = sum(t.numel() for t in tensors if t.is_meta)
    if meta:
        raise ValueError(f"{name}: expected a model with values, got {meta} of its {sum(t.numel() for t in tensors)} "
                         "parameter/buffer values on the meta device (load its weights, e.g. "
                         "model.to_empty(device='cpu') then load_state_dict, first)")


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


#: a request whose model evaluations would take longer than this even at FASTEST_SAMPLE_SECONDS each is refused
MAX_RUN_SECONDS = 7 * 86400
#: a generous lower bound on the time of one sample through a model (a tiny model on a large GPU)
FASTEST_SAMPLE_SECONDS = 1e-7


class ResourceLimitError(ValueError):
    """A request (grid steps, cells, samples, epochs ...) that cannot fit in this machine's memory or in any
    reasonable time; raised with the estimate before any work."""


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of free RAM and the cgroup limit (``None``: unknown)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap.isdigit() and int(cap) < 1 << 60:
                found.append(int(cap) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            pass
    return max(min(found), 0) if found else None


def check_cost(what: str, *, nbytes: float = 0.0, samples: float = 0.0, hint: str = "") -> None:
    """Refuse, before any work, a request that cannot finish: an estimated allocation larger than the memory
    available here, or more samples through the model than :data:`MAX_RUN_SECONDS` allows even at
    :data:`FASTEST_SAMPLE_SECONDS` each (so a typo like ``--epochs 100000000000`` never starts).

    Args:
        what: the request in the user's words (``grid attack: angle_steps=100000000``).
        nbytes: estimated bytes the request allocates at once.
        samples: estimated samples (images, nodes) passed through the model.
        hint: what to change, appended to the message.

    Raises:
        ResourceLimitError: one line with the estimate.
    """
    tail = f"; {hint}" if hint else ""
    avail = available_memory()
    if nbytes and avail is not None and nbytes > avail:
        raise ResourceLimitError(f"{what}: would allocate ~{_bytes(nbytes)}, more than the {_bytes(avail)} of memory "
                                 f"available on this machine{tail}")
    seconds = samples * FASTEST_SAMPLE_SECONDS
    if seconds > MAX_RUN_SECONDS:
        raise ResourceLimitError(f"{what}: ~{samples:.3g} samples through the model, at least {_duration(seconds)} even at "
                                 f"{FASTEST_SAMPLE_SECONDS * 1e9:.0f} ns each (the limit is {_duration(MAX_RUN_SECONDS)}){tail}")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _duration(s: float) -> str:
    if s >= 365 * 86400:
        return f"{s / (365 * 86400):.3g} years"
    if s >= 86400:
        return f"{s / 86400:.3g} days"
    return f"{s / 3600:.3g} hours"


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


def parse_value(text: str):
    """A ``key=value`` option's value: an int, a float, ``true``/``false`` (any case) as a bool, else the string.

    >>> parse_value("3"), parse_value("0.5"), parse_value("False"), parse_value("v2")
    (3, 0.5, False, 'v2')
    """
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
