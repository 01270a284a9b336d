"""Transformation families for certification and TSS's sampling-based interpolation-error bound.

A family is an interval (rotation, scaling) or a square (translation) of transform parameters ``t``,
split into ``cells`` equal cells. Each cell has a *node*, its lower corner ``t_j``. The certificate
(:mod:`robustbench_geo.smoothing.tss`) proves the smoothed classifier right at every node with an l2
margin, and this module bounds how far any transform in the cell can move the image from the node's:

    M_j^2 >= max_{t in cell j} || phi(x, t) - phi(x, t_j) ||_2^2

following Li et al. (TSS, CCS 2021, Section 5 and Appendix "sampling-based interpolation bound";
code: AI-secure/semantic-randomized-smoothing, ``strict_rotation_aliasing_analyze.py``). The cell is
split into ``substeps`` sub-cells of width ``h``; ``f(t) = ||phi(x, t) - phi(x, t_j)||^2`` is computed
at their corners and, with a Lipschitz constant ``L`` of ``f`` on the cell,

* 1-D (rotation, scaling): ``f(t) <= (f(a) + f(b)) / 2 + L h / 2`` on a sub-cell ``[a, b]``
  (add ``f(t) <= f(a) + L (t - a)`` and ``f(t) <= f(b) + L (b - t)``);
* 2-D (translation): ``f(t) <= mean of the 4 corners + L h (2 + sqrt 2) / 4`` on a square sub-cell of
  side ``h`` (average ``f(t) <= f(c) + L |t - c|`` over the corners ``c``; the mean distance to the
  corners is convex in ``t`` and largest, ``h (2 + sqrt 2) / 4``, at a corner).

The Lipschitz constant is TSS's: output pixel ``p`` reads the bilinear interpolant ``I`` of the
zero-padded image at a source point ``s_p(t)``. On a pixel cell, ``|dI/dx|, |dI/dy| <= D`` (the cell's
max - min), so ``||grad I||_2 <= sqrt 2 D``; ``|phi_p(t) - phi_p(t_j)| <= V`` (the largest value, both
being convex combinations of non-negative pixels); and ``|d s_p / d t| <= speed_p``. Hence

    |f'(t)| <= 2 sum_p |phi_p(t) - phi_p(t_j)| |d phi_p / dt| <= 2 sqrt 2 sum_p speed_p V_p D_p,

with ``V_p``, ``D_p`` the largest value and range over every pixel cell ``s_p`` can visit while ``t``
stays in the cell: the cells within ``k = ceil(max displacement)`` of the node's cell in each axis.
Speeds: rotation ``|p - c| pi / 180`` per degree; scaling ``|p - c|`` per unit of ``u = 1 / scale``
(cells are uniform in ``u``, like TSS's); translation ``1`` per pixel of shift (l2 in ``(tx, ty)``).
Images must be non-negative (``V`` bounds a difference of two non-negative values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustbench_geo.attacks.image.affine import MAX_ANGLE_DEG, MAX_SHIFT_PX
from robustbench_geo.check import check_number, unknown_name_error
from robustbench_geo.geometry import WARP_DEFAULTS, affine_matrix, warp


@dataclass(frozen=True)
class Family:
    """A parameter box of one geometric transform (see subclasses); ``dims`` parameters per transform."""

    dims = 1
    name = "family"
    unit = ""

    def box(self) -> list[tuple[float, float]]:
        """``dims`` ``(low, high)`` ranges of the cell parameter ``t``."""
        raise NotImplementedError

    def fields(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Affine fields (:func:`~robustbench_geo.geometry.affine_matrix` kwargs) for parameters ``(P, dims)``."""
        raise NotImplementedError

    def speed(self, size: tuple[int, int]) -> torch.Tensor:
        """``(H, W)`` bound on ``|d s_p / d t|`` (pixels per unit of ``t``) for every output pixel."""
        raise NotImplementedError

    def identity(self) -> torch.Tensor:
        """``(dims,)`` parameter of the identity transform."""
        return torch.zeros(self.dims, dtype=torch.float64)

    def to_user(self, t: torch.Tensor) -> torch.Tensor:
        """Parameters in the user's unit (degrees, content scale, pixels)."""
        return t

    def describe(self) -> dict:
        raise NotImplementedError

    def full_radius(self) -> float:
        """Largest-axis distance from the identity to the farthest box edge (the radius when every cell passes)."""
        ident = self.identity().tolist()
        return max(max(i - lo, hi - i) for i, (lo, hi) in zip(ident, self.box()))

    # -- cells ----------------------------------------------------------------------------------
    def cells(self, per_axis: int) -> tuple[torch.Tensor, float]:
        """Lower corners ``(K, dims)`` (float64) of ``per_axis ** dims`` equal cells, and the cell width."""
        if int(per_axis) != per_axis or per_axis < 1:
            raise ValueError(f"cells: expected a positive integer, got {per_axis!r}")
        axes, width = [], 0.0
        for lo, hi in self.box():
            width = (hi - lo) / per_axis
            axes.append(lo + width * torch.arange(per_axis, dtype=torch.float64))
        grids = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], 1), width

    def cell_distance(self, lower: torch.Tensor, width: float) -> torch.Tensor:
        """``(K,)`` largest-axis distance from the identity to each cell (0 for cells that contain it)."""
        ident = self.identity()
        below = (ident - (lower + width)).clamp(min=0)
        above = (lower - ident).clamp(min=0)
        return torch.maximum(below, above).amax(1)

    def warp(self, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Warp ``images`` ``(P, C, H, W)`` (or ``(1, C, H, W)``, broadcast) with parameters ``(P, dims)``.

        This is :func:`robustbench_geo.geometry.warp` (bilinear, zero padding, ``align_corners=True``) of
        :func:`~robustbench_geo.geometry.affine_matrix`: the attacks' warp.
        """
        m = affine_matrix(tuple(images.shape[-2:]), **{k: v.float() for k, v in self.fields(t).items()})
        if images.shape[0] == 1 and m.shape[0] > 1:
            images = images.expand(m.shape[0], *images.shape[1:])
        return warp(images, m.to(images.device), **WARP_DEFAULTS)

    def fast_warp(self, image: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:meth:`warp` of one image ``(1, C, H, W)`` to ``(P, C, H, W)`` by one ``grid_sample`` (several times
        faster than kornia's path; agrees with it to float32 rounding, see ``tests/smoothing``)."""
        h, w = image.shape[-2:]
        inv = torch.linalg.inv(affine_matrix((h, w), **{k: v.double() for k, v in self.fields(t).items()}))
        norm = torch.tensor([[2.0 / max(w - 1, 1), 0, -1], [0, 2.0 / max(h - 1, 1), -1]], dtype=torch.float64)
        a = (norm @ inv).to(image.dtype)  # (P, 2, 3): output pixel (x, y, 1) -> normalised source point
        ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
        pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, dtype=image.dtype)])  # (3, HW)
        # (P, 2, 3) @ (3, HW): 3x faster on the CPU than broadcasting the points over P and multiplying by a^T
        grid = torch.matmul(a, pts).transpose(1, 2).reshape(t.shape[0], h, w, 2).to(image.device)
        return F.grid_sample(image.expand(t.shape[0], *image.shape[1:]), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True)

    def max_displacement(self, size: tuple[int, int], width: float) -> float:
        """Largest distance (pixels, per axis) a source point moves within one cell."""
        return float(self.speed(size).max()) * width * math.sqrt(self.dims)


def _radius_map(size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.sqrt((xs - (w - 1) / 2) ** 2 + (ys - (h - 1) / 2) ** 2)


@dataclass(frozen=True)
class Rotation(Family):
    """Rotations by every angle in ``[-max_angle_deg, max_angle_deg]`` degrees (counter-clockwise)."""

    max_angle_deg: float = 30.0
    name = "rotation"
    unit = "deg"

    def __post_init__(self):
        check_number(self.max_angle_deg, "max_angle_deg", low=0.0, high=MAX_ANGLE_DEG)

    def box(self):
        return [(-float(self.max_angle_deg), float(self.max_angle_deg))]

    def fields(self, t):
        return {"angle_deg": t[:, 0]}

    def speed(self, size):
        return _radius_map(size) * math.pi / 180.0

    def describe(self):
        return {"transform": "rotation", "max_angle_deg": float(self.max_angle_deg)}


@dataclass(frozen=True)
class Scaling(Family):
    """Isotropic content scales ``s`` in ``[min_scale, max_scale]`` about the centre; cells are uniform in ``1/s``."""

    min_scale: float = 0.8
    max_scale: float = 1.2
    name = "scaling"
    unit = "x"

    def __post_init__(self):
        for name in ("min_scale", "max_scale"):
            check_number(getattr(self, name), name, low=0.0, low_open=True)
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"scaling: expected 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")

    def box(self):
        return [(1.0 / self.max_scale, 1.0 / self.min_scale)]

    def identity(self):
        return torch.ones(1, dtype=torch.float64)

    def fields(self, t):
        return {"scale_x": 1.0 / t[:, 0]}

    def to_user(self, t):
        return 1.0 / t

    def speed(self, size):
        return _radius_map(size)

    def describe(self):
        return {"transform": "scaling", "min_scale": float(self.min_scale), "max_scale": float(self.max_scale)}


@dataclass(frozen=True)
class Translation(Family):
    """Shifts by every ``(tx, ty)`` in ``[-max_shift_px, max_shift_px]^2`` pixels (sub-pixel, bilinear)."""

    max_shift_px: float = 3.0
    dims = 2
    name = "translation"
    unit = "px"

    def __post_init__(self):
        check_number(self.max_shift_px, "max_shift_px", low=0.0, high=MAX_SHIFT_PX)

    def box(self):
        m = float(self.max_shift_px)
        return [(-m, m), (-m, m)]

    def fields(self, t):
        return {"tx_px": t[:, 0], "ty_px": t[:, 1]}

    def speed(self, size):
        return torch.ones(size, dtype=torch.float64)

    def max_displacement(self, size, width):
        return width

    def describe(self):
        return {"transform": "translation", "max_shift_px": float(self.max_shift_px)}


#: l2 slack added to every interpolation bound for float32 rounding between warp implementations
WARP_SLACK = 1e-4

FAMILIES = {"rotation": Rotation, "scaling": Scaling, "translation": Translation}

#: default cells per axis and sub-steps per cell (trade the bound's tightness against time)
DEFAULT_CELLS = {"rotation": 120, "scaling": 100, "translation": 40}
DEFAULT_SUBSTEPS = {"rotation": 1000, "scaling": 1000, "translation": 10}


def make_family(name: str, **kwargs) -> Family:
    """``rotation`` (``max_angle_deg``), ``scaling`` (``min_scale``, ``max_scale``) or ``translation`` (``max_shift_px``)."""
    if isinstance(name, Family):
        return name
    if name not in FAMILIES:
        raise unknown_name_error("transformation", name, FAMILIES)
    return FAMILIES[name](**kwargs)


# -- the interpolation-error bound ------------------------------------------------------------------
def _neighbourhood_maps(image: torch.Tensor, k: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel cell of the zero-padded image: the largest value and range over the ``(2k+1)^2`` cells around it.

    Returns ``(C, H + 2 pad - 1, W + 2 pad - 1)`` maps; cell ``(i, j)`` spans padded pixels ``i..i+1, j..j+1``.
    """
    x = F.pad(image.double(), (pad, pad, pad, pad))[None]
    cmax = F.max_pool2d(x, 2, stride=1)
    cmin = -F.max_pool2d(-x, 2, stride=1)
    vmax = F.max_pool2d(cmax, 2 * k + 1, stride=1, padding=k)
    dmax = F.max_pool2d(cmax - cmin, 2 * k + 1, stride=1, padding=k)
    return vmax[0], dmax[0]


def source_points(family: Family, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(P, H, W, 2)`` source coordinates ``(x, y)`` read by each output pixel under parameters ``(P, dims)``."""
    m = affine_matrix(size, **{k: v.double() for k, v in family.fields(t).items()})
    inv = torch.linalg.inv(m)
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)
    src = torch.einsum("pij,nj->pni", inv, pts)[..., :2]
    return src.reshape(t.shape[0], h, w, 2)


def lipschitz_constants(family: Family, image: torch.Tensor, lower: torch.Tensor, width: float) -> torch.Tensor:
    """``(K,)`` Lipschitz constants of ``f`` on each cell (see the module docstring)."""
    if image.numel() and image.min() < 0:
        raise ValueError(f"images: expected non-negative pixel values for the interpolation bound, got min {image.min().item():.4g}")
    size = tuple(image.shape[-2:])
    k = max(1, math.ceil(family.max_displacement(size, width) - 1e-12))
    src = source_points(family, lower, size)
    pad = k + 2
    vmax, dmax = _neighbourhood_maps(image, k, pad)
    hc, wc = vmax.shape[-2:]
    iy = (torch.floor(src[..., 1]).long() + pad).clamp(0, hc - 1)  # out-of-range points clamp into the zero border
    ix = (torch.floor(src[..., 0]).long() + pad).clamp(0, wc - 1)
    prod = (vmax * dmax).sum(0)  # (Hc, Wc), summed over channels as f sums over them
    speed = family.speed(size)
    return 2.0 * math.sqrt(2.0) * (prod[iy, ix] * speed).sum(dim=(1, 2))


def interpolation_bound(family: Family, image: torch.Tensor, cells: int, substeps: int,
                        chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Bound the l2 interpolation error of every cell for one image.

    Args:
        family: the transformation family.
        image: ``(C, H, W)`` clean image with non-negative values.
        cells: cells per parameter axis (``cells ** dims`` in all).
        substeps: sub-cells per axis of each cell where ``f`` is evaluated.
        chunk: warps per batch (rounded down to whole cells, at least one).

    Returns:
        ``(lower, M, width)``: cell lower corners (nodes) ``(K, dims)``, the bound ``M_j`` (l2 norm, not
        squared) ``(K,)`` float64, and the cell width.
    """
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps: expected a positive integer, got {substeps!r}")
    lower, width = family.cells(cells)
    lip = lipschitz_constants(family, image.cpu(), lower, width)
    h = width / substeps
    d = family.dims
    offs = torch.arange(substeps + 1, dtype=torch.float64) * h
    grid = torch.stack([g.reshape(-1) for g in torch.meshgrid(*([offs] * d), indexing="ij")], 1)  # (G, d)
    g = grid.shape[0]
    x = image[None].cpu().float()
    nodes = family.fast_warp(x, lower)  # (K, C, H, W)
    k = lower.shape[0]
    f = torch.empty(k, g, dtype=torch.float64)
    step = max(1, chunk // g)  # whole cells per batch: the node broadcasts over its sub-steps, no gather
    for s in range(0, k, step):
        e = min(s + step, k)
        pts = (lower[s:e, None, :] + grid[None]).reshape(-1, d)
        diff = family.fast_warp(x, pts).view(e - s, g, -1) - nodes[s:e].view(e - s, 1, -1)
        f[s:e] = diff.square_().sum(-1).double()
    if d == 1:
        sub = (f[:, :-1] + f[:, 1:]) / 2 + lip[:, None] * h / 2
    else:
        f2 = f.view(-1, substeps + 1, substeps + 1)
        corners = (f2[:, :-1, :-1] + f2[:, 1:, :-1] + f2[:, :-1, 1:] + f2[:, 1:, 1:]) / 4
        sub = corners.reshape(f2.shape[0], -1) + lip[:, None] * h * (2 + math.sqrt(2)) / 4
    # + WARP_SLACK: the attacks' warp (kornia) and fast_warp differ by float32 rounding only
    return lower, sub.amax(1).clamp(min=0).sqrt() + WARP_SLACK, width
