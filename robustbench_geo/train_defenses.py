"""Spatial defenses applied while training an image model: what each training batch becomes.

A defense is named by a spec ``NAME[:key=value,...]`` (``rbgeo train --defense``, a sweep model's
``defense = ...``, :func:`~robustbench_geo.training.fit`'s ``defense=``) and turns every training
batch into the batch the model is updated on:

* ``augment``: one transform per image drawn uniformly from the box (data augmentation);
* ``worst_of_k``: ``k`` transforms per image drawn uniformly from the box; the image is replaced by
  the draw with the highest cross-entropy loss (Engstrom et al., ICML 2019, "worst-of-10");
* ``affine_pgd``: first-order adversarial training: projected sign-gradient ascent of the
  cross-entropy on the transform parameters through the differentiable warp, from a random start
  in the box, keeping per image the iterate with the highest loss. It optimises the threat model
  of the ``affine_pgd`` attack (angle, shifts, log-scale), but for training: it never stops early
  on an image that is already misclassified, since the update wants the worst image, not the first
  mistake.

Every defense shares the box of the affine attacks, in their units: ``max_angle_deg`` (rotations
in ``[-max, max]`` degrees, counter-clockwise), ``max_shift_px`` (shifts in ``[-max, max]`` pixels
along x and y) and ``min_scale``/``max_scale`` (content scale factors, ``1``/``1`` = no scaling;
drawn and optimised in log space). The default box is Engstrom et al.'s MNIST setting (+-30
degrees, +-3 px, no scaling), the box of the ``grid`` and ``worst_of_k`` attacks.

Draws happen on the CPU from the generator the training loop passes, so a defense is deterministic
for the training seed. The loss of a candidate is measured with the model in eval mode (batch-norm
statistics are neither used from the batch nor updated by the search); the model's modes are restored
before the update. Checkpoints record the canonical spec (every parameter written out), and
:attr:`SpatialDefense.label` gives the short tag reports append to a model's name (``cnn+wo10``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.check import check_number, check_positive_int, unknown_name_error
from robustbench_geo.geometry import affine_matrix, warp

#: the box every defense shares: parameter -> default (Engstrom et al.'s MNIST box)
BOX_DEFAULTS = {"max_angle_deg": 30.0, "max_shift_px": 3.0, "min_scale": 1.0, "max_scale": 1.0}

#: defense name -> (its own parameters with defaults, one-line description)
DEFENSES = {
    "none": ({}, "no defense: the training batch as given"),
    "augment": (dict(BOX_DEFAULTS), "one random transform per image from the box (data augmentation)"),
    "worst_of_k": ({"k": 10, **BOX_DEFAULTS},
                   "per image, the highest-loss of k random transforms from the box (Engstrom et al. 2019)"),
    "affine_pgd": ({"steps": 5, "step_frac": 0.25, **BOX_DEFAULTS},
                   "projected sign-gradient ascent on angle, shifts and log-scale from a random start; "
                   "the highest-loss iterate per image"),
}

_INTEGER = {"k", "steps"}

#: parameter -> meaning and unit (``rbgeo list defenses``)
PARAM_DOCS = {
    "k": "random transforms per image; the highest-loss one is trained on",
    "steps": "gradient steps per batch (each one forward + backward pass), plus one last forward pass",
    "step_frac": "step size as a fraction of each parameter's range width (scale: of its log range)",
    "max_angle_deg": "rotations in [-max, max] degrees, counter-clockwise",
    "max_shift_px": "shifts in [-max, max] pixels along x and y",
    "min_scale": "smallest content scale factor (1 = no scaling; drawn log-uniformly)",
    "max_scale": "largest content scale factor",
}


def list_defenses() -> list[str]:
    """Defense names, ``none`` first."""
    return list(DEFENSES)


def describe_params(name: str) -> list[str]:
    """``"key = default: meaning"`` per parameter of defense ``name``."""
    if name not in DEFENSES:
        raise unknown_name_error("defense", name, DEFENSES)
    return [f"{k} = {v}: {PARAM_DOCS[k]}" for k, v in DEFENSES[name][0].items()]


@dataclass(frozen=True)
class SpatialDefense:
    """A parsed defense: its name and every parameter (defaults filled in). Build with :func:`get_defense`."""

    name: str
    params: tuple[tuple[str, float | int], ...]

    @property
    def options(self) -> dict:
        return dict(self.params)

    @property
    def spec(self) -> str:
        """The canonical spec (every parameter written out, in a fixed order): what checkpoints record."""
        if not self.params:
            return self.name
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in self.params)

    @property
    def label(self) -> str:
        """Short tag for reports: ``""`` (none), ``aug``, ``wo10`` (worst-of-10), ``pgd5`` (5 ascent steps)."""
        o = self.options
        return {"none": "", "augment": "aug", "worst_of_k": f"wo{o.get('k')}",
                "affine_pgd": f"pgd{o.get('steps')}"}[self.name]

    @property
    def cost(self) -> float:
        """Training cost per batch in plain training steps (forward + backward ~ 3 forward passes): 1 for
        ``none``/``augment``, ``1 + k/3`` for worst-of-k, ``1 + steps + 1/3`` for the first-order ascent."""
        o = self.options
        return {"worst_of_k": 1 + o.get("k", 0) / 3, "affine_pgd": 1 + o.get("steps", 0) + 1 / 3}.get(self.name, 1.0)

    def box(self) -> dict[str, tuple[float, float]]:
        """The free parameters and their ranges (scale as factors); a zero-width range is left out."""
        o = self.options
        box = {"angle_deg": (-o["max_angle_deg"], o["max_angle_deg"]), "tx_px": (-o["max_shift_px"], o["max_shift_px"]),
               "ty_px": (-o["max_shift_px"], o["max_shift_px"]), "scale": (o["min_scale"], o["max_scale"])}
        return {k: v for k, v in box.items() if v[0] < v[1]}

    def describe(self) -> dict:
        """What checkpoints record beside the spec: name, parameters and label."""
        return {"name": self.name, "params": self.options, "label": self.label}

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """The batch the model is updated on, ``(B, C, H, W)`` in ``[0, 1]`` (``images`` itself for ``none``)."""
        return self.transform(model, images, labels, generator)[0]

    def transform(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The defended batch and the transform chosen per image (``angle_deg``, ``tx_px``, ``ty_px``, ``scale``: ``(B,)``)."""
        if self.name == "none" or images.shape[0] == 0:
            return images, identity(images.shape[0])
        if self.name == "augment":
            params = {k: v[0] for k, v in sample_box(self.box(), 1, images.shape[0], generator).items()}
            return apply_params(images, params), params
        with eval_mode(model):
            if self.name == "worst_of_k":
                params, _, _ = worst_of_k_search(model, images, labels, sample_box(self.box(), self.options["k"],
                                                                                   images.shape[0], generator))
            else:
                params = first_order_search(model, images, labels, self.box(), self.options["steps"],
                                            self.options["step_frac"], generator)
        return apply_params(images, params), params


def get_defense(spec: str | SpatialDefense | None) -> SpatialDefense:
    """Parse ``NAME[:key=value,...]`` (``None`` is ``none``); unknown names and keys list the valid ones.

    >>> get_defense("worst_of_k").label
    'wo10'
    >>> get_defense("worst_of_k:k=4,max_angle_deg=15").spec
    'worst_of_k:k=4,max_angle_deg=15.0,max_shift_px=3.0,min_scale=1.0,max_scale=1.0'
    """
    if isinstance(spec, SpatialDefense):
        return spec
    spec = "none" if spec is None else spec
    if not isinstance(spec, str):
        raise ValueError(f"defense: expected a spec such as 'worst_of_k:k=10', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    if name not in DEFENSES:
        raise unknown_name_error("defense", name, DEFENSES)
    defaults = DEFENSES[name][0]
    given = {}
    for item in filter(None, (t.strip() for t in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in defaults:
            valid = ", ".join(defaults) or "none"
            raise ValueError(f"defense {name!r}: unknown parameter {key!r}; valid parameters: {valid}")
        try:
            given[key] = float(value)
        except ValueError:
            raise ValueError(f"defense {spec!r}: expected key=number items, got {item!r}") from None
    o = {**defaults, **given}
    for key in o:
        if key in _INTEGER:
            o[key] = check_positive_int(check_number(o[key], key, integer=True), key)
        else:
            o[key] = float(o[key])
    if o:
        check_number(o["max_angle_deg"], "max_angle_deg", low=0.0, high=180.0)
        check_number(o["max_shift_px"], "max_shift_px", low=0.0, high=1e4)
        check_number(o["min_scale"], "min_scale", low=0.0, low_open=True, high=100.0)
        check_number(o["max_scale"], "max_scale", low=o["min_scale"], high=100.0)
    if "step_frac" in o:
        check_number(o["step_frac"], "step_frac", low=0.0, low_open=True, high=1.0)
    return SpatialDefense(name, tuple((k, o[k]) for k in defaults))


def identity(n: int) -> dict[str, torch.Tensor]:
    return {"angle_deg": torch.zeros(n), "tx_px": torch.zeros(n), "ty_px": torch.zeros(n), "scale": torch.ones(n)}


def sample_box(box: dict[str, tuple[float, float]], k: int, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``(k, n)`` draws per parameter, uniform in the box (scale log-uniform); parameters not in ``box`` are the identity.

    The draws are made in a fixed order (angle, shifts, scale) on the CPU, one ``(k, n)`` block each.
    """
    out = {key: v[None].expand(k, n).clone() for key, v in identity(n).items()}
    for key, (lo, hi) in box.items():
        u = torch.rand(k, n, generator=generator)
        out[key] = lo * (hi / lo) ** u if key == "scale" else lo + (hi - lo) * u
    return out


def apply_params(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Warp ``(B, C, H, W)`` images by per-image ``(B,)`` parameters (isotropic scale); clamped to ``[0, 1]``."""
    dev = images.device
    m = affine_matrix(tuple(images.shape[-2:]), params["angle_deg"].to(dev), params["tx_px"].to(dev),
                      params["ty_px"].to(dev), params["scale"].to(dev))
    return warp(images, m).clamp(0.0, 1.0)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Run the block with every module in eval mode; each module's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def worst_of_k_search(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      draws: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per image, the draw with the highest cross-entropy (the first of equal ones).

    Args:
        draws: ``(k, B)`` per parameter (from :func:`sample_box`).

    Returns:
        ``(params, losses, pick)``: the chosen parameters ``(B,)`` each, every draw's loss ``(k, B)``
        and the index of the chosen draw ``(B,)``.
    """
    k = next(iter(draws.values())).shape[0]
    losses = torch.empty(k, images.shape[0])
    with torch.no_grad():
        for j in range(k):
            x = apply_params(images, {key: v[j] for key, v in draws.items()})
            losses[j] = F.cross_entropy(model(x).float(), labels, reduction="none").cpu()
    pick = losses.argmax(0)
    cols = torch.arange(images.shape[0])
    return {key: v[pick, cols] for key, v in draws.items()}, losses, pick


def first_order_search(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, box: dict[str, tuple[float, float]],
                       steps: int, step_frac: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Projected sign-gradient ascent of the cross-entropy on the parameters in ``box``; the highest-loss iterate.

    Starts uniformly in the box (log-uniform scale); every step moves each free parameter by
    ``step_frac`` times its range width (scale: its log range) in the direction of the gradient's
    sign and projects back onto the box. ``steps`` gradient steps cost ``steps`` forward + backward
    passes and one last forward pass. Model parameters get no gradients.
    """
    n, dev = images.shape[0], images.device
    start = {key: v[0] for key, v in sample_box(box, 1, n, generator).items()}
    free = {key: (start[key].log() if key == "scale" else start[key]) for key in box}
    lo = {key: math.log(a) if key == "scale" else a for key, (a, b) in box.items()}
    hi = {key: math.log(b) if key == "scale" else b for key, (a, b) in box.items()}
    best, best_loss = {key: v.clone() for key, v in start.items()}, torch.full((n,), -math.inf)
    for step in range(steps + 1):
        last = step == steps
        theta = {key: v.detach().to(dev).requires_grad_(not last) for key, v in free.items()}
        params = {key: (theta[key].exp() if key == "scale" else theta[key]) if key in theta else start[key].to(dev)
                  for key in start}
        with torch.set_grad_enabled(not last):
            loss = F.cross_entropy(model(apply_params(images, params)).float(), labels, reduction="none")
            grads = torch.autograd.grad(loss.sum(), list(theta.values())) if not last and theta else None
        loss = loss.detach().cpu()
        better = loss > best_loss
        for key in best:
            best[key] = torch.where(better, params[key].detach().cpu(), best[key])
        best_loss = torch.where(better, loss, best_loss)
        if grads is None:
            break
        for (key, v), g in zip(free.items(), grads):
            free[key] = (v + step_frac * (hi[key] - lo[key]) * g.sign().cpu()).clamp(lo[key], hi[key])
    return best
