"""A one-entry cache of a value derived from a tensor, valid while that tensor is unchanged.

Graph models precompute things from the (fixed) feature matrix once per graph, e.g. the
non-zeros of ``X`` (:class:`~robustbench_geo.models.gnn.GCN`) or the Jaccard keep-mask
(``gcn_jaccard``). The entry is keyed by the tensor *object* (a weak reference, so a freed
tensor whose memory is reused by a new one never hits), its version counter (bumped by every
in-place change), shape, device and ``extra``.

Inference tensors (created under :func:`torch.inference_mode`, e.g. ``graph.x.to("cuda")`` in
an evaluation) have no version counter: reading ``x._version`` raises. Their values are
computed afresh on every call instead of cached. Values are always computed outside inference
mode (and without autograd), so an entry filled during an evaluation can later take part in an
attack's or training's autograd graph.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch


class TensorCache:
    """Cache ``compute(x)`` for the latest ``x`` (see the module docstring for the key)."""

    def __init__(self):
        self._entry: tuple | None = None  # (weakref to x, key, value)

    def get(self, x: torch.Tensor, compute: Callable[[torch.Tensor], Any], *extra) -> Any:
        """``compute(x)``, from the cache when ``x`` is the same unchanged tensor with the same ``extra``."""
        if x.is_inference():
            return self._compute(x, compute)
        key = (x._version, tuple(x.shape), x.device, *extra)
        if self._entry is not None and self._entry[0]() is x and self._entry[1] == key:
            return self._entry[2]
        value = self._compute(x, compute)
        self._entry = (weakref.ref(x), key, value)
        return value

    @staticmethod
    def _compute(x: torch.Tensor, compute: Callable[[torch.Tensor], Any]) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return compute(x)

    def clear(self) -> None:
        self._entry = None

    def __getstate__(self) -> dict:  # weak references do not pickle; a copy starts empty
        return {"_entry": None}

    def __deepcopy__(self, memo) -> "TensorCache":
        return TensorCache()
