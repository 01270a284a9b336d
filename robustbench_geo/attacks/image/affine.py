"""Affine threat models: ``grid``, ``worst_of_k``, ``random``, ``affine_pgd`` and ``scale``.

Units: angles in degrees (counter-clockwise), shifts in pixels (right/down), scales as content
factors (``> 1`` enlarges), shear in degrees; see :mod:`robustbench_geo.geometry`. The default box
is the MNIST/CIFAR setting of Engstrom et al. 2019 (rotations within +-30 degrees, shifts within
+-3 pixels).
"""

from __future__ import annotations

import itertools

import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.image.core import ImageAttack
from robustbench_geo.attacks.image.search import FIELDS, by_size, full_params, projected_ascent, search_candidates
from robustbench_geo.check import check_cost, check_interval, check_number, check_positive_int, unknown_name_error

_BOX_DOCS = {
    "max_angle_deg": "rotation budget: angles in [-max, max] degrees, counter-clockwise",
    "max_shift_px": "translation budget: shifts in [-max, max] pixels along x and y",
}


#: budgets beyond these repeat transforms (angles) or move the whole image out of view (shifts); larger
#: values only reach float32 overflow and NaN images
MAX_ANGLE_DEG, MAX_SHIFT_PX, MAX_SHEAR_DEG = 180.0, 1e4, 89.0
#: scales beyond this blow one pixel up past any image (1e300 overflowed the warp into NaN images)
MAX_SCALE = 1e4
#: memory of one grid point while the grid is built (Python tuples, sort keys, the six parameter tensors)
GRID_BYTES_PER_POINT = 600
#: memory of one worst_of_k draw per image (draws, the identity prepended, the six fields, float32)
K_BYTES_PER_DRAW = 3 * 6 * 4


def _values(limit: float, steps: int, *, integer: bool = False) -> torch.Tensor:
    """``steps`` evenly spaced values in ``[-limit, limit]`` plus 0 (the identity is in every grid)."""
    v = torch.linspace(-limit, limit, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    if integer:
        v = torch.round(v)  # half to even, as numpy
    return torch.unique(torch.cat([v, torch.zeros(1, dtype=torch.float64)])).float()


class _AffineBox(ImageAttack):
    """Rotation + translation box shared by grid, worst-of-k and the first-order attack."""

    param_docs = {**ImageAttack.param_docs, **_BOX_DOCS}

    def _set_box(self, max_angle_deg, max_shift_px):
        self.max_angle_deg = check_number(max_angle_deg, "max_angle_deg", low=0.0, high=MAX_ANGLE_DEG)
        self.max_shift_px = check_number(max_shift_px, "max_shift_px", low=0.0, high=MAX_SHIFT_PX)

    def box(self) -> dict[str, tuple[float, float]]:
        a, s = self.max_angle_deg, self.max_shift_px
        return {"angle_deg": (-a, a), "tx_px": (-s, s), "ty_px": (-s, s)}


@register_attack("grid", domain="image", description="exhaustive per-sample grid over rotation x shift (Engstrom et al. 2019)")
class GridAttack(_AffineBox):
    """Exhaustive per-sample search over a rotation x horizontal shift x vertical shift grid.

    The default grid is Engstrom et al.'s MNIST/CIFAR setting: 31 angles in +-30 degrees and 5
    shifts in +-3 px per axis (775 points). The identity is always a grid point and is evaluated
    first, so samples misclassified already leave at once and robust accuracy <= clean accuracy.
    With ``order="smallest"`` (default) points are visited in order of increasing size (the largest
    of |angle| / max_angle_deg and |shift| / max_shift_px, then their sum), and per sample the first
    point that fools the model is kept, i.e. a smallest fooling transform; else the point with the
    highest loss. ``order="largest"`` visits them by decreasing size after the identity: the same
    points, so the same robust accuracy (the search is exhaustive either way), but a sample fooled
    only by large transforms leaves after a few points instead of after most of the grid, which
    saves most of the model calls on fooled samples; the kept fooling transform is then the first
    found from the outside in, not a smallest one. ``order="angle"`` visits points by increasing
    |angle| (then by shift size), so the first fooling point has the smallest |angle| of any fooling
    point of the grid.

    Where the order allows, ``info["min_fooling_budget"]`` records per sample the smallest budget at
    which the grid fools it (``inf`` when no point does, ``0`` when the clean image is misclassified):
    for ``order="angle"`` the smallest fooling |angle| in degrees, so one pass gives the accuracy of
    the grid restricted to every ``max_angle_deg`` up to the full one (same shifts, the grid's own
    angles); for ``order="smallest"`` the smallest box size ``s`` in ``[0, 1]`` (the box
    ``s * max_angle_deg`` x ``s * max_shift_px``) that holds a fooling point.
    """

    param_docs = {**_AffineBox.param_docs, "angle_steps": "number of angles (evenly spaced, 0 added if missing)",
                  "shift_steps": "number of shifts per axis (evenly spaced, 0 added if missing)",
                  "integer_shifts": "round shifts to whole pixels (half to even, like ART's SpatialTransformation)",
                  "order": "visit order after the identity: 'smallest' (increasing size; keeps a smallest fooling "
                           "transform), 'angle' (increasing |angle|; keeps a fooling transform of smallest |angle|) or "
                           "'largest' (decreasing size; same robust accuracy, fooled samples leave sooner)"}

    ORDERS = ("smallest", "angle", "largest")
    #: what ``info["min_fooling_budget"]`` measures, per order that allows it
    BUDGET_UNITS = {"smallest": "box size (fraction of max_angle_deg and max_shift_px)", "angle": "max angle (deg)"}

    def __init__(self, model, *, max_angle_deg: float = 30.0, angle_steps: int = 31, max_shift_px: float = 3.0,
                 shift_steps: int = 5, integer_shifts: bool = False, order: str = "smallest", loss: str = "ce",
                 seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear", padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        self._set_box(max_angle_deg, max_shift_px)
        self.angle_steps = check_positive_int(angle_steps, "angle_steps")
        self.shift_steps = check_positive_int(shift_steps, "shift_steps")
        points = (self.angle_steps + 1) * (self.shift_steps + 1) ** 2  # the grid, the identity included
        check_cost(f"grid attack: angle_steps={self.angle_steps} x shift_steps={self.shift_steps}^2 = {points:.3g} "
                   "transforms per image", nbytes=points * GRID_BYTES_PER_POINT, samples=points,
                   hint="use fewer angle_steps or shift_steps")
        self.integer_shifts = bool(integer_shifts)
        if order not in self.ORDERS:
            raise unknown_name_error("grid order", order, self.ORDERS)
        self.order = order

    def grid(self) -> dict[str, torch.Tensor]:
        """The grid points ``(T,)`` per field: the identity first, then by increasing size (largest normalised
        |value|, then the sum) for ``order="smallest"``, by increasing |angle| (then size) for ``order="angle"``,
        by decreasing size for ``order="largest"``."""
        angles = _values(self.max_angle_deg, self.angle_steps)
        shifts = _values(self.max_shift_px, self.shift_steps, integer=self.integer_shifts)
        pts = list(itertools.product(angles.tolist(), shifts.tolist(), shifts.tolist()))
        budget = (self.max_angle_deg, self.max_shift_px, self.max_shift_px)
        order = by_size(pts, (0.0, 0.0, 0.0), budget, groups=[[0], [1, 2]] if self.order == "angle" else None)
        pts = [pts[i] for i in order]  # the identity (size 0) is first
        if self.order == "largest":
            pts = pts[:1] + pts[:0:-1]
        t = torch.tensor(pts)
        return full_params(len(pts), angle_deg=t[:, 0], tx_px=t[:, 1], ty_px=t[:, 2])

    def run(self, images, labels, work):
        b = images.shape[0]
        cand = {k: v[:, None].expand(-1, b) for k, v in self.grid().items()}
        params, fooled, loss = search_candidates(self, images, labels, cand, work)
        if self.order not in self.BUDGET_UNITS:
            return params, {}
        a_max, s_max = max(self.max_angle_deg, 1e-12), max(self.max_shift_px, 1e-12)
        angle = params["angle_deg"].abs()
        if self.order == "smallest":
            angle = torch.stack([angle / a_max, params["tx_px"].abs() / s_max, params["ty_px"].abs() / s_max]).amax(0)
        inf = torch.full_like(angle, float("inf"))
        return params, {"min_fooling_budget": torch.where(fooled, angle, inf), "budget_unit": self.BUDGET_UNITS[self.order]}


@register_attack("worst_of_k", domain="image", description="k random rotations+shifts per sample, keep the worst")
class WorstOfK(_AffineBox):
    """``k`` transforms per sample drawn uniformly from the box; keep a fooling one, else the worst.

    The clean image (identity) is checked first, so misclassified samples exit at once. Draws
    happen on the CPU from ``seed`` before any model call, so the result does not depend on early
    exits or the device.
    """

    param_docs = {**_AffineBox.param_docs, "k": "random transforms per sample"}

    def __init__(self, model, *, k: int = 10, max_angle_deg: float = 30.0, max_shift_px: float = 3.0, loss: str = "ce",
                 seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear", padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        self._set_box(max_angle_deg, max_shift_px)
        self.k = check_positive_int(k, "k")
        self._check_cost(1)

    def _check_cost(self, b: int) -> None:
        check_cost(f"worst_of_k attack: k={self.k} transforms x {b} image(s)", nbytes=(self.k + 1) * b * K_BYTES_PER_DRAW,
                   samples=(self.k + 1) * b, hint="use a smaller k")

    def sample(self, b: int) -> dict[str, torch.Tensor]:
        """``(k + 1, b)`` candidates: the identity, then ``k`` uniform draws from the box."""
        self._check_cost(b)
        g = self.generator()
        draws = {name: lo + (hi - lo) * torch.rand(self.k, b, generator=g) for name, (lo, hi) in self.box().items()}
        return {k: torch.cat([torch.zeros(1, b) if k not in ("scale_x", "scale_y") else torch.ones(1, b), v])
                for k, v in full_params(b, **draws).items()}

    def run(self, images, labels, work):
        params, fooled, loss = search_candidates(self, images, labels, self.sample(images.shape[0]), work)
        return params, {}


@register_attack("random", domain="image", description="one random rotation+shift per sample (worst_of_k with k=1)")
class RandomTransform(WorstOfK):
    """One transform per sample drawn uniformly from the box (Engstrom et al.'s ``random``)."""

    param_docs = {k: v for k, v in WorstOfK.param_docs.items() if k != "k"}

    def __init__(self, model, *, max_angle_deg: float = 30.0, max_shift_px: float = 3.0, loss: str = "ce",
                 seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear", padding: str = "zeros"):
        super().__init__(model, k=1, max_angle_deg=max_angle_deg, max_shift_px=max_shift_px, loss=loss, seed=seed,
                         max_batch=max_batch, interpolation=interpolation, padding=padding)


def _scale_box(scale_range, name="scale_range") -> tuple[float, float]:
    lo, hi = check_interval(scale_range, name)
    for v in (lo, hi):
        check_number(v, name, low=0.0, low_open=True, high=MAX_SCALE)
    return lo, hi


@register_attack("affine_pgd", domain="image",
                 description="first-order attack on angle, shifts, log-scale and shear through the differentiable warp")
class AffinePGD(_AffineBox):
    """Projected sign-gradient ascent on the affine parameters with random restarts.

    Optimises angle, shifts, (log) scale and shear through the differentiable warp, projecting
    onto the box after every step. Restart 0 starts at the identity, the others uniformly in the
    box. Per sample, the first fooling iterate is kept, else the highest-loss one over all restarts.
    """

    param_docs = {**_AffineBox.param_docs,
                  "scale_range": "content scale factors (min, max); (1, 1) = no scaling; optimised in log space",
                  "max_shear_deg": "shear budget in degrees (along x)",
                  "steps": "gradient steps per restart (one forward + backward pass each)",
                  "restarts": "number of starts (the first at the identity, the rest random in the box)",
                  "step_frac": "step size as a fraction of each parameter's range width"}

    def __init__(self, model, *, max_angle_deg: float = 30.0, max_shift_px: float = 3.0, scale_range=(1.0, 1.0),
                 max_shear_deg: float = 0.0, steps: int = 40, restarts: int = 5, step_frac: float = 0.05,
                 loss: str = "ce", seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear",
                 padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        self._set_box(max_angle_deg, max_shift_px)
        self.scale_range = _scale_box(scale_range)
        self.max_shear_deg = check_number(max_shear_deg, "max_shear_deg", low=0.0, high=MAX_SHEAR_DEG)
        self.steps = check_positive_int(steps, "steps")
        self.restarts = check_positive_int(restarts, "restarts")
        self.step_frac = check_number(step_frac, "step_frac", low=0.0, high=1.0)

    def box(self):
        box = super().box()
        lo, hi = self.scale_range
        box.update({"scale_x": (lo, hi), "scale_y": (lo, hi), "shear_deg": (-self.max_shear_deg, self.max_shear_deg)})
        return {k: v for k, v in box.items() if v[0] < v[1]}  # fixed parameters are not optimised

    def run(self, images, labels, work):
        b, g, box = images.shape[0], self.generator(), self.box()
        scale_fixed = self.scale_range[0]
        best = full_params(b, scale_x=torch.full((b,), scale_fixed), scale_y=torch.full((b,), scale_fixed))
        best_loss = torch.full((b,), float("-inf"))
        fooled = torch.zeros(b, dtype=torch.bool)
        for r in range(self.restarts):
            starts = {k: v.clone() for k, v in best.items()}
            if r == 0:
                starts = full_params(b, scale_x=torch.full((b,), scale_fixed), scale_y=torch.full((b,), scale_fixed))
                if "scale_x" in box:  # start from scale 1 when it is inside the box, else the geometric middle
                    mid = 1.0 if box["scale_x"][0] <= 1 <= box["scale_x"][1] else (box["scale_x"][0] * box["scale_x"][1]) ** 0.5
                    starts["scale_x"] = starts["scale_y"] = torch.full((b,), mid)
            else:
                for k, (lo, hi) in box.items():
                    u = torch.rand(b, generator=g)
                    starts[k] = (lo * (hi / lo) ** u) if k.startswith("scale") else lo + (hi - lo) * u
            todo = (~fooled).nonzero().squeeze(1)
            if not todo.numel():
                break
            sub = {k: v[todo] for k, v in starts.items()}
            p, f, l = projected_ascent(self, images[todo.to(images.device)], labels[todo.to(labels.device)], sub, box,
                                       self.steps, self.step_frac, work)
            better = f | (l > best_loss[todo])
            for k in FIELDS:
                best[k][todo[better]] = p[k][better]
            best_loss[todo[better]] = l[better]
            fooled[todo[f]] = True
        return best, {}


@register_attack("scale", domain="image", description="isotropic (or anisotropic) scaling: grid, then gradient refinement")
class ScaleAttack(ImageAttack):
    """Scaling attack about the image centre: a grid over the factor range, then first-order refinement.

    The default range is the content-scale range of ``mnist-scaled`` (Keras zoom in [1, 2.5], i.e.
    digits shrunk to 40-100 %), the threat model of the Scaled MNIST experiment. With
    ``anisotropic=True`` the x and y factors are searched independently (a ``steps x steps`` grid).
    Samples not fooled by the grid are refined by projected ascent on the log-scale(s) from their
    best grid point.
    """

    param_docs = {**ImageAttack.param_docs,
                  "scale_range": "content scale factors (min, max); > 1 enlarges the digit",
                  "steps": "grid points per scale axis (log-spaced; 1 added when inside the range)",
                  "anisotropic": "search x and y scale independently",
                  "refine_steps": "gradient steps after the grid (0 = grid only)",
                  "step_frac": "refinement step as a fraction of the log-scale range"}

    def __init__(self, model, *, scale_range=(0.4, 1.0), steps: int = 21, anisotropic: bool = False,
                 refine_steps: int = 10, step_frac: float = 0.02, loss: str = "ce", seed: int = 0,
                 max_batch: int | None = None, interpolation: str = "bilinear", padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        self.scale_range = _scale_box(scale_range)
        self.steps = check_positive_int(steps, "steps")
        self.anisotropic = bool(anisotropic)
        self.refine_steps = check_number(refine_steps, "refine_steps", integer=True, low=0)
        self.step_frac = check_number(step_frac, "step_frac", low=0.0, high=1.0)

    def factors(self) -> torch.Tensor:
        lo, hi = self.scale_range
        v = torch.logspace(torch.tensor(lo).log10(), torch.tensor(hi).log10(), self.steps, dtype=torch.float64)
        if self.steps == 1:
            v = torch.tensor([lo], dtype=torch.float64)
        if lo <= 1.0 <= hi:
            v = torch.cat([torch.ones(1, dtype=torch.float64), v[(v - 1).abs() > 1e-12]])  # identity first
        return v.float()

    def run(self, images, labels, work):
        b, f = images.shape[0], self.factors()
        pairs = list(itertools.product(f.tolist(), f.tolist())) if self.anisotropic else [(s, s) for s in f.tolist()]
        t = torch.tensor(pairs)
        cand = {k: v[:, None].expand(-1, b) for k, v in full_params(len(pairs), scale_x=t[:, 0], scale_y=t[:, 1]).items()}
        best, fooled, loss = search_candidates(self, images, labels, cand, work)
        todo = (~fooled).nonzero().squeeze(1)
        if self.refine_steps and todo.numel() and self.scale_range[0] < self.scale_range[1]:
            box = {"scale_x": self.scale_range}
            if self.anisotropic:
                box["scale_y"] = self.scale_range
            p, fo, l = projected_ascent(self, images[todo.to(images.device)], labels[todo.to(labels.device)],
                                        {k: v[todo] for k, v in best.items()}, box, self.refine_steps, self.step_frac,
                                        work, tied=None if self.anisotropic else {"scale_y": "scale_x"})
            better = fo | (l > loss[todo])
            for k in FIELDS:
                best[k][todo[better]] = p[k][better]
        return best, {}
