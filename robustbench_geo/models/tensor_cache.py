"""One-entry caches of values derived from tensors, and the rule that a copy of a model starts empty.

Two keys, both exact:

* :class:`TensorCache` (identity + version) for a large input that stays the same object, the
  feature matrix;
* :class:`ContentCache` (the contents themselves) for a small input that attacks rebuild as new
  objects with equal or nearly equal contents, the ``edge_index`` of a perturbed graph.

A deep copy or a pickle of either is empty, so a copy of a model (what the evaluators re-measure
on, :func:`~robustbench_geo.models.predict.fresh_copy`) never serves a value computed by the original.

:class:`TensorCache`: graph models precompute things from the (fixed) feature matrix once per graph, e.g. the
non-zeros of ``X`` (:class:`~robustbench_geo.models.gnn.GCN`) or the Jaccard keep-mask
(``gcn_jaccard``). The entry is keyed by the tensor *object* (a weak reference, so a freed
tensor whose memory is reused by a new one never hits), its version counter (bumped by every
in-place change through a torch operation), shape, device and ``extra``. Writes that bypass the
version counter (through ``x.data`` or a NumPy view of ``x``) are not seen: build a new tensor
instead of editing features that way.

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


class ContentCache:
    """Cache ``compute(*tensors)`` for the latest tensors, hit only when every one is equal in content.

    The key is the tensors' shapes, dtypes and devices, ``extra``, and their values compared with
    :func:`torch.equal` against a private copy taken when the entry was filled, so two different
    graphs never share an entry (no hash of the contents stands in for them: sums of indices collide,
    e.g. a 40-node graph with edge ``(1, 14)`` and one with ``(2, 13)`` instead). Comparing an
    ``edge_index`` costs O(E), far less than what the models here cache with it (an ``N x N``
    eigendecomposition or inverse). Values are computed outside inference mode and without
    autograd, from the private copy.
    """

    def __init__(self):
        self._entry: tuple | None = None  # (meta key, copies of the tensors, value)

    def get(self, tensors: tuple[torch.Tensor, ...], compute: Callable[..., Any], *extra) -> Any:
        """``compute(*tensors)``, from the cache when the tensors equal the cached ones and ``extra`` matches."""
        key = (tuple((tuple(t.shape), t.dtype, t.device) for t in tensors), extra)
        entry = self._entry
        if entry is not None and entry[0] == key and all(torch.equal(a, b) for a, b in zip(entry[1], tensors)):
            return entry[2]
        with torch.inference_mode(False), torch.no_grad():
            copies = tuple(t.detach().clone() for t in tensors)
            value = compute(*copies)
        self._entry = (key, copies, value)
        return value

    def clear(self) -> None:
        self._entry = None

    def __getstate__(self) -> dict:
        return {"_entry": None}

    def __deepcopy__(self, memo) -> "ContentCache":
        return ContentCache()
