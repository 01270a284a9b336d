"""Forward passes of a model over a dataset, batched, in eval mode; clean accuracy.

This is how every higher layer runs a model on data (training's checkpoint accuracy, the
evaluation runners' re-verification): inputs move to the model's device, the model never moves,
and logits come back on the CPU.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from robustbench_geo.check import check_finite
from robustbench_geo.data.base import GraphDataset, ImageDataset


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without either."""
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def on_device(model: nn.Module, device: str | torch.device | None) -> nn.Module:
    """``model`` itself when ``device`` is ``None`` or where it already is, else a copy on ``device``.

    The caller's model is never moved (``nn.Module.to`` moves in place).
    """
    if device is None or _same_device(model_device(model), torch.device(device)):
        return model
    return copy.deepcopy(model).to(device)


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode, for re-measuring a result independently of the run that produced it.

    The copy shares no state with ``model``: the caches of the registered models
    (:class:`~robustbench_geo.models.tensor_cache.TensorCache`, ``ContentCache``) deep-copy empty, and
    anything else an attack left on ``model`` after the copy is not seen. The evaluators take one
    pristine copy before the attack runs and re-measure every graph on a new copy of it.
    """
    return copy.deepcopy(model).eval()


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits ``(N, num_classes)`` of ``images`` ``(N, C, H, W)``, batched, in eval mode (on CPU)."""
    model.eval()
    dev = model_device(model)
    outs = [model(images[i:i + batch_size].to(dev)).float().cpu() for i in range(0, images.shape[0], batch_size)]
    return check_finite(torch.cat(outs), "model logits") if outs else torch.empty(0, 0)


def image_accuracy(model: nn.Module, dataset: ImageDataset, batch_size: int = 512) -> float:
    """Top-1 accuracy in ``[0, 1]``."""
    if len(dataset) == 0:
        raise ValueError("dataset: expected at least one sample to compute accuracy, got 0")
    pred = predict_logits(model, dataset.images, batch_size).argmax(1)
    return (pred == dataset.labels).float().mean().item()


@torch.inference_mode()
def graph_logits(model: nn.Module, graph: GraphDataset, edge_index: torch.Tensor | None = None,
                 edge_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``(N, num_classes)`` of every node (on CPU), in eval mode, on ``edge_index`` (default: the graph's)."""
    model.eval()
    dev = model_device(model)
    ei = graph.edge_index if edge_index is None else edge_index
    out = model(graph.x.to(dev), ei.to(dev), None if edge_weight is None else edge_weight.to(dev)).cpu()
    return check_finite(out, "model logits")


def graph_accuracy(model: nn.Module, graph: GraphDataset, nodes: str | torch.Tensor = "test",
                   edge_index: torch.Tensor | None = None) -> float:
    """Accuracy on ``nodes`` (``"train"``, ``"val"``, ``"test"`` or a tensor of ids) in ``[0, 1]``."""
    idx = getattr(graph, f"idx_{nodes}") if isinstance(nodes, str) else nodes
    pred = graph_logits(model, graph, edge_index).argmax(1)
    return (pred[idx.cpu()] == graph.y.cpu()[idx.cpu()]).float().mean().item()


def accuracy(model: nn.Module, dataset) -> float:
    """Clean accuracy for either kind of dataset (test nodes for graphs)."""
    if isinstance(dataset, GraphDataset):
        return graph_accuracy(model, dataset)
    return image_accuracy(model, dataset)
