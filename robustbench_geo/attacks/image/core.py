"""What every image attack shares: the result type, losses, the base class and work counting.

Conventions (the warp conventions themselves live in :mod:`robustbench_geo.geometry`):

* images are ``(B, C, H, W)`` float tensors in ``[0, 1]``, labels ``(B,)`` int64;
* an attack is untargeted: a sample is *fooled* when ``argmax model(x_adv) != label``;
* ``forward_passes`` / ``backward_passes`` count **images** pushed through the model (a call on
  a batch of 256 counts 256), so they compare directly with a plain evaluation of that many images;
* every attack is deterministic for its ``seed`` (random draws happen on the CPU with a
  ``torch.Generator``, so results do not depend on the device);
* the parameters found per sample replay the adversarial images exactly
  (:meth:`ImageAttackResult.replay`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.check import check_finite, check_number, check_positive_int, check_shape, unknown_name_error
from robustbench_geo.geometry import WARP_DEFAULTS, AffineParams

#: images per model call when ``max_batch`` is not given: small CPU batches keep a CNN's activations
#: in cache (MNIST cnn, 1 thread: about 0.55 ms per image at 16-64 images, 1.3 ms at 512), large GPU
#: batches keep the device busy
DEFAULT_MAX_BATCH = {"cpu": 64, "cuda": 1024}


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(B,)``."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample C&W margin ``max_{j != y} z_j - z_y`` on logits ``(B,)``; ``> 0`` means fooled."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


#: Losses every attack maximises, looked up by name (``loss=...``).
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ce": ce_loss, "margin": margin_loss}

INTERPOLATIONS = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")


def get_loss(name: str):
    if name not in LOSSES:
        raise unknown_name_error("loss", name, LOSSES)
    return LOSSES[name]


@dataclass(frozen=True)
class ImageAttackResult:
    """What an image attack returns for one batch.

    Attributes:
        adversarial: ``(B, C, H, W)`` adversarial images in ``[0, 1]``.
        success: ``(B,)`` bool, the model misclassifies ``adversarial`` (checked by a forward pass of
            exactly these images at the end of the attack).
        params: per-sample transform parameters: ``kind == "affine"``: the fields of
            :class:`~robustbench_geo.geometry.AffineParams` (``(B,)`` each); ``kind == "flow"``:
            ``{"flow": (B, 2, H, W)}`` in pixels; ``kind == "none"``: ``{}`` (non-geometric attacks).
        loss: ``(B,)`` attack loss of ``adversarial`` (higher = closer to / further into a mistake).
        forward_passes, backward_passes: images pushed through the model forward / backward.
        kind: how ``params`` replay (``"affine"``, ``"flow"`` or ``"none"``).
        warp: interpolation/padding/align_corners used by the warp.
        info: attack-specific per-sample extras (``(B,)`` tensors, e.g. flow magnitude) and numbers.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    params: dict[str, torch.Tensor]
    loss: torch.Tensor
    forward_passes: int
    backward_passes: int
    kind: str = "affine"
    warp: dict = field(default_factory=lambda: dict(WARP_DEFAULTS))
    info: dict = field(default_factory=dict)

    def replay(self, images: torch.Tensor) -> torch.Tensor:
        """Re-apply the stored parameters to ``images`` (the clean batch) and return the warped batch."""
        if self.kind == "affine":
            return AffineParams(**self.params).apply(images, **self.warp)
        if self.kind == "flow":
            from robustbench_geo.geometry import flow_warp

            return flow_warp(images, self.params["flow"].to(images.device), **self.warp)
        raise ValueError(f"result of kind {self.kind!r} has no geometric parameters to replay")

    def flat_params(self) -> list[dict]:
        """Per-sample parameters as plain Python dicts (one per sample) for tables and CSV rows."""
        b = self.success.shape[0]
        cols = {k: v for k, v in self.params.items() if v.dim() == 1}
        cols.update({k: v for k, v in self.info.items() if isinstance(v, torch.Tensor) and v.dim() == 1 and v.shape[0] == b})
        lists = {k: v.detach().cpu().tolist() for k, v in cols.items()}
        return [{k: lists[k][i] for k in lists} for i in range(b)]


class Work:
    """Counts images pushed through a model during one attack call."""

    def __init__(self):
        self.forward = 0
        self.backward = 0


class ImageAttack:
    """Base class: model handling, loss lookup, warp settings, counted model calls.

    Subclasses list their threat-model parameters as keyword-only ``__init__`` arguments (the
    registry reads them) and implement :meth:`run`.
    """

    kind = "affine"
    #: parameter name -> meaning and unit (shown by ``rbgeo list attacks``); subclasses extend it
    param_docs = {
        "seed": "random seed (draws on the CPU; results do not depend on the device)",
        "loss": f"loss maximised when no transform fools the model: {', '.join(LOSSES)}",
        "max_batch": "images per model call (compute only; does not change results); default: "
                     f"{DEFAULT_MAX_BATCH['cpu']} on the CPU (activations stay in cache), {DEFAULT_MAX_BATCH['cuda']} on a GPU",
        "interpolation": f"warp interpolation: {', '.join(INTERPOLATIONS)}",
        "padding": f"value outside the image: {', '.join(PADDINGS)} ('zeros' = black)",
    }

    def __init__(self, model: nn.Module, *, seed: int = 0, loss: str = "ce", max_batch: int | None = None,
                 interpolation: str = "bilinear", padding: str = "zeros"):
        self.model = model
        self.seed = check_number(seed, "seed", integer=True)
        self.loss_name = loss
        self.loss_fn = get_loss(loss)
        self._max_batch = None if max_batch is None else check_positive_int(max_batch, "max_batch")
        if interpolation not in INTERPOLATIONS:
            raise unknown_name_error("interpolation", interpolation, INTERPOLATIONS)
        if padding not in PADDINGS:
            raise unknown_name_error("padding", padding, PADDINGS)
        self.warp = {"mode": interpolation, "padding_mode": padding, "align_corners": WARP_DEFAULTS["align_corners"]}

    @property
    def max_batch(self) -> int:
        """Images per model call: the given ``max_batch``, else the default for the model's device."""
        if self._max_batch is not None:
            return self._max_batch
        tensors = itertools.chain(self.model.parameters(), self.model.buffers())
        dev = next(tensors, torch.empty(0)).device
        return DEFAULT_MAX_BATCH["cuda" if dev.type == "cuda" else "cpu"]

    # -- helpers for subclasses -------------------------------------------------------------
    def logits(self, x: torch.Tensor, work: Work, *, backward: bool = False) -> torch.Tensor:
        work.forward += x.shape[0]
        if backward:
            work.backward += x.shape[0]
        return self.model(x)

    def predict(self, x: torch.Tensor, work: Work) -> torch.Tensor:
        """Logits of ``x`` in chunks of ``max_batch`` without gradients."""
        with torch.inference_mode():
            outs = [self.logits(x[i:i + self.max_batch], work) for i in range(0, x.shape[0], self.max_batch)]
        return torch.cat(outs) if outs else x.new_zeros(0, 0)

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    # -- public API -------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, seed: int | None = None) -> ImageAttackResult:
        """Attack a batch.

        Args:
            images: ``(B, C, H, W)`` in ``[0, 1]`` on the model's device.
            labels: ``(B,)`` true labels.
            seed: overrides the attack's ``seed`` for this call (the runner passes one per batch).

        Returns:
            :class:`ImageAttackResult`.
        """
        check_shape(images, ["B", "C", "H", "W"], "images")
        check_shape(labels, [images.shape[0]], "labels")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"images: expected values in [0, 1], got [{images.min().item():.4g}, {images.max().item():.4g}]")
        was_training = self.model.training
        self.model.eval()
        saved_seed = self.seed
        if seed is not None:
            self.seed = int(seed)
        try:
            labels = labels.to(images.device)
            work = Work()
            if images.shape[0] == 0:
                return ImageAttackResult(images.clone(), torch.zeros(0, dtype=torch.bool, device=images.device),
                                         self.identity_params(images), images.new_zeros(0), 0, 0, self.kind,
                                         dict(self.warp), {})
            params, info = self.run(images, labels, work)
            with torch.no_grad():  # a NaN image or logit would count as "fooled": fail instead
                adv = check_finite(self.apply(images, params, info), f"{type(self).__name__}: adversarial images").clamp_(0, 1)
            logits = check_finite(self.predict(adv, work), f"{type(self).__name__}: model logits on adversarial images")
            success = logits.argmax(1) != labels
            loss = self.loss_fn(logits, labels) if logits.numel() else images.new_zeros(0)
            return ImageAttackResult(adv, success, params, loss, work.forward, work.backward, self.kind, dict(self.warp), info)
        finally:
            self.seed = saved_seed
            self.model.train(was_training)

    def apply(self, images: torch.Tensor, params: dict, info: dict) -> torch.Tensor:
        """The adversarial batch for the found ``params`` (a replay of the warp; non-geometric attacks override)."""
        probe = ImageAttackResult(images, images.new_zeros(0, dtype=torch.bool), params, images.new_zeros(0), 0, 0,
                                  self.kind, self.warp)
        return probe.replay(images)

    def identity_params(self, images: torch.Tensor) -> dict:
        """Parameters of the identity transform for ``images`` (what an empty or no-op attack returns)."""
        if self.kind == "flow":
            return {"flow": images.new_zeros(images.shape[0], 2, *images.shape[-2:]).cpu()}
        if self.kind == "affine":
            return AffineParams.identity(images.shape[0]).as_dict()
        return {}

    def run(self, images: torch.Tensor, labels: torch.Tensor, work: Work) -> tuple[dict, dict]:
        """Return ``(params, info)`` for the batch; ``params`` as in :class:`ImageAttackResult`."""
        raise NotImplementedError

    def config(self) -> dict:
        """Parameters and warp settings, for results."""
        return {"loss": self.loss_name, "seed": self.seed, "warp": dict(self.warp), "kind": self.kind}
