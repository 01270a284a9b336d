"""Input preprocessing inside the model, so attacks and re-verification stay in ``[0, 1]`` pixel space.

A model trained on normalised inputs (``(x - mean) / std``) is wrapped once; every attack then
perturbs and clips pixels in ``[0, 1]`` and the wrapper normalises right before the model.

Specs, in every place that takes one (``--preprocessing``, a sweep's ``preprocessing``, the API):

* ``None``: no preprocessing;
* ``"mean=0.1307,std=0.3081"`` or ``"mean=[0.485,0.456,0.406],std=[0.229,0.224,0.225]"``;
* ``(mean, std)`` or ``{"mean": ..., "std": ...}`` with numbers or one number per channel;
* a callable ``f(x) -> x'`` applied to ``(B, C, H, W)`` images in ``[0, 1]``.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn as nn

_ITEM = re.compile(r"\s*(mean|std)\s*=\s*(\[[^\]]*\]|\([^)]*\)|[^,]+)\s*(,|$)")


def parse_preprocessing(spec) -> tuple[tuple[float, ...], tuple[float, ...]] | Callable | None:
    """Normalise a preprocessing spec to ``(mean, std)`` tuples, a callable, or None.

    Raises:
        ValueError: malformed text, missing mean or std, non-finite values, or std <= 0.
    """
    if spec is None or callable(spec):
        return spec
    if isinstance(spec, str):
        text, items, pos = spec.strip(), {}, 0
        while pos < len(text):
            m = _ITEM.match(text, pos)
            if m is None or m.group(1) in items:
                raise ValueError(f"preprocessing: expected 'mean=M,std=S' (M, S numbers or [a,b,c] per channel), got {spec!r}")
            items[m.group(1)] = [v for v in re.split(r"[,\s]+", m.group(2).strip("[]()")) if v]
            pos = m.end()
        spec = items
    if isinstance(spec, dict):
        unknown = set(spec) - {"mean", "std"}
        if unknown or set(spec) != {"mean", "std"}:
            raise ValueError(f"preprocessing: expected keys mean and std, got {sorted(spec)}")
        spec = (spec["mean"], spec["std"])
    if not isinstance(spec, (tuple, list)) or len(spec) != 2:
        raise ValueError(f"preprocessing: expected (mean, std), 'mean=M,std=S' or a callable, got {spec!r}")
    mean, std = (_floats(v, name) for v, name in zip(spec, ("mean", "std")))
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ValueError(f"preprocessing: expected as many std as mean values (or one), got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"preprocessing: std: expected positive values, got {list(std)}")
    return mean, std


def _floats(value, name: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"preprocessing: {name}: expected numbers, got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"preprocessing: {name}: expected finite numbers, got {value!r}")
    return out


class Preprocessed(nn.Module):
    """``model(preprocess(x))`` for ``(B, C, H, W)`` images ``x`` in ``[0, 1]``.

    Attributes:
        model: the wrapped model (its ``state_dict`` keys gain the prefix ``model.``).
        spec: the normalised spec (``(mean, std)`` tuples or the callable), for records.
    """

    def __init__(self, model: nn.Module, spec):
        super().__init__()
        self.model, self.spec = model, spec
        if callable(spec):
            self.fn = spec
        else:
            mean, std = spec
            # not persistent: the state dict stays the wrapped model's (weights hashes are unchanged)
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
            self.fn = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.fn(x) if self.fn is not None else (x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def describe(self) -> dict | str:
        """JSON-ready description of the preprocessing (for metadata and results)."""
        if self.fn is not None:
            return getattr(self.fn, "__qualname__", repr(self.fn))
        return {"mean": list(self.spec[0]), "std": list(self.spec[1])}


def with_preprocessing(model: nn.Module, spec) -> nn.Module:
    """Wrap ``model`` so it takes ``[0, 1]`` images and preprocesses them itself (``spec=None``: unchanged).

    Example:
        >>> net = with_preprocessing(net, "mean=0.1307,std=0.3081")   # doctest: +SKIP
    """
    parsed = parse_preprocessing(spec)
    return model if parsed is None else Preprocessed(model, parsed)
