"""Differentiable affine warps of image batches, built on kornia.

One convention for the whole package, stated here once:

* images are ``(B, C, H, W)`` float tensors in ``[0, 1]``;
* coordinates are pixels, origin at the centre of the top-left pixel, x to the right,
  y down (``align_corners=True`` in the warp); the image centre is ``((W-1)/2, (H-1)/2)``;
* ``angle_deg`` is in degrees, positive = counter-clockwise as the image is displayed;
* ``tx_px``/``ty_px`` shift the content right/down by that many pixels;
* ``scale_x``/``scale_y`` scale the *content* about the centre (``> 1`` enlarges it). The Keras
  ``zoom_range`` convention stretches the sampling grid instead: a Keras zoom ``z`` is a content
  scale of ``1 / z`` (see :func:`keras_zoom_to_scale`);
* ``shear_deg`` shears along x (degrees).

A transform is applied in the order scale -> shear -> rotate -> shift, all about the centre. The
split follows kornia's augmentations: sample or optimise parameters -> build a ``(B, 3, 3)`` matrix
(:func:`affine_matrix`) -> warp (:func:`warp`). Each step is usable alone and stored parameters
replay a warp exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import kornia.geometry.transform as KT
import torch

from robustbench_geo.check import check_interval, check_shape

#: Interpolation and border settings used by every warp unless overridden; recorded in results.
WARP_DEFAULTS = {"mode": "bilinear", "padding_mode": "zeros", "align_corners": True}
#: Keras 2.0's resampling in ``ImageDataGenerator`` (``scipy.ndimage.affine_transform(order=0,
#: mode='nearest')``): nearest-neighbour sampling, out-of-image pixels take the nearest edge pixel
KERAS_WARP = {"mode": "nearest", "padding_mode": "border", "align_corners": True}


def affine_matrix(
    size: tuple[int, int],
    angle_deg: torch.Tensor | float = 0.0,
    tx_px: torch.Tensor | float = 0.0,
    ty_px: torch.Tensor | float = 0.0,
    scale_x: torch.Tensor | float = 1.0,
    scale_y: torch.Tensor | float | None = None,
    shear_deg: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Build forward affine matrices (source pixel -> destination pixel).

    Args:
        size: ``(H, W)`` of the images.
        angle_deg, tx_px, ty_px, scale_x, scale_y, shear_deg: scalars or ``(B,)`` tensors, see the
            module docstring for units. ``scale_y=None`` means isotropic (``scale_y = scale_x``).

    Returns:
        ``(B, 3, 3)`` float tensor, differentiable in every parameter.
    """
    if scale_y is None:
        scale_y = scale_x
    params = [angle_deg, tx_px, ty_px, scale_x, scale_y, shear_deg]
    tensors = [p for p in params if isinstance(p, torch.Tensor)]
    ref = tensors[0] if tensors else torch.zeros(())
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    angle, tx, ty, sx, sy, sh = torch.broadcast_tensors(
        *[torch.as_tensor(p, dtype=dtype, device=ref.device).reshape(-1) for p in params]
    )
    h, w = size
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a = torch.deg2rad(angle)
    cos, sin = torch.cos(a), torch.sin(a)
    k = torch.tan(torch.deg2rad(sh))
    # linear part L = R @ Shear @ S with R = [[cos, sin], [-sin, cos]] (counter-clockwise, y down)
    l00 = cos * sx
    l01 = cos * k * sy + sin * sy
    l10 = -sin * sx
    l11 = -sin * k * sy + cos * sy
    # about the centre: x' = L (x - c) + c + t
    t0 = cx + tx - (l00 * cx + l01 * cy)
    t1 = cy + ty - (l10 * cx + l11 * cy)
    zeros, ones = torch.zeros_like(l00), torch.ones_like(l00)
    rows = [torch.stack([l00, l01, t0], -1), torch.stack([l10, l11, t1], -1), torch.stack([zeros, zeros, ones], -1)]
    return torch.stack(rows, dim=-2)


def warp(
    images: torch.Tensor,
    matrix: torch.Tensor,
    *,
    mode: str = WARP_DEFAULTS["mode"],
    padding_mode: str = WARP_DEFAULTS["padding_mode"],
    align_corners: bool = WARP_DEFAULTS["align_corners"],
) -> torch.Tensor:
    """Warp ``(B, C, H, W)`` images with forward matrices ``(B, 3, 3)`` (or ``(1, 3, 3)``).

    Output pixel ``x`` takes the (interpolated) input value at ``matrix^-1 x``. Values stay in the
    input's range for bilinear and nearest interpolation.
    """
    check_shape(images, ["B", "C", "H", "W"], "images")
    check_shape(matrix, ["B", 3, 3], "matrix")
    if matrix.shape[0] == 1 and images.shape[0] != 1:
        matrix = matrix.expand(images.shape[0], 3, 3)
    if matrix.shape[0] != images.shape[0]:
        raise ValueError(f"matrix: expected {images.shape[0]} matrices (one per image), got {matrix.shape[0]}")
    if images.shape[0] == 0:
        return images.clone()
    h, w = images.shape[-2:]
    out = KT.warp_affine(
        images, matrix[:, :2, :].to(images.dtype), dsize=(h, w), mode=mode, padding_mode=padding_mode,
        align_corners=align_corners,
    )
    return out


def flow_warp(
    images: torch.Tensor,
    flow: torch.Tensor,
    *,
    mode: str = WARP_DEFAULTS["mode"],
    padding_mode: str = WARP_DEFAULTS["padding_mode"],
    align_corners: bool = WARP_DEFAULTS["align_corners"],
) -> torch.Tensor:
    """Warp ``(B, C, H, W)`` images by a per-pixel flow field (the stAdv transform, Xiao et al. 2018).

    Output pixel ``(x, y)`` takes the (interpolated) input value at ``(x + flow[:, 0], y + flow[:, 1])``:
    ``flow`` is ``(B, 2, H, W)`` in pixels, channel 0 the x (right) and channel 1 the y (down)
    displacement of the *sampling* location. Zero flow is the identity. Differentiable in
    ``images`` and ``flow``; warps through kornia's ``remap`` (pixel coordinates need
    ``align_corners=True``, the package convention).
    """
    check_shape(images, ["B", "C", "H", "W"], "images")
    check_shape(flow, [images.shape[0], 2, images.shape[2], images.shape[3]], "flow")
    if not align_corners:
        raise ValueError("align_corners: expected True (flow fields are in pixel coordinates), got False")
    if images.shape[0] == 0:
        return images.clone()
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    return KT.remap(images, xs + flow[:, 0], ys + flow[:, 1], mode=mode, padding_mode=padding_mode,
                    align_corners=True, normalized_coordinates=False)


@dataclass(frozen=True)
class AffineParams:
    """Per-sample affine parameters (each a ``(B,)`` tensor), replayable with :meth:`apply`."""

    angle_deg: torch.Tensor
    tx_px: torch.Tensor
    ty_px: torch.Tensor
    scale_x: torch.Tensor
    scale_y: torch.Tensor
    shear_deg: torch.Tensor

    @classmethod
    def identity(cls, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "AffineParams":
        z = torch.zeros(n, device=device, dtype=dtype)
        return cls(z, z.clone(), z.clone(), z + 1, z + 1, z.clone())

    def matrix(self, size: tuple[int, int]) -> torch.Tensor:
        return affine_matrix(size, self.angle_deg, self.tx_px, self.ty_px, self.scale_x, self.scale_y, self.shear_deg)

    def apply(self, images: torch.Tensor, **warp_kwargs) -> torch.Tensor:
        return warp(images, self.matrix(tuple(images.shape[-2:])).to(images.device), **warp_kwargs)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in asdict(self).items()}

    def __len__(self) -> int:
        return int(self.angle_deg.shape[0])


def keras_zoom_to_scale(zoom: torch.Tensor) -> torch.Tensor:
    """Convert a Keras ``zoom_range`` factor (grid stretch) to a content scale (``1 / zoom``)."""
    return 1.0 / zoom


@dataclass(frozen=True)
class AffineSampler:
    """Random affine transforms, the same code for dataset variants and training augmentation.

    Ranges are ``(min, max)`` and sampled uniformly (p=1, as kornia ``RandomAffine`` with p=1).

    Args:
        angle_deg: rotation range in degrees.
        shift_frac: maximum shift as a fraction of width/height (Keras ``width_shift_range``).
        keras_zoom: Keras-convention zoom range (grid stretch); content scale is ``1 / zoom``.
        isotropic: one zoom for both axes; Keras' ``ImageDataGenerator`` draws x and y
            independently (``isotropic=False``), which is what the reference experiment did.
        shear_deg: shear range in degrees.
    """

    angle_deg: tuple[float, float] = (0.0, 0.0)
    shift_frac: float = 0.0
    keras_zoom: tuple[float, float] = (1.0, 1.0)
    isotropic: bool = False
    shear_deg: tuple[float, float] = (0.0, 0.0)
    warp_kwargs: dict = field(default_factory=lambda: dict(WARP_DEFAULTS))

    def __post_init__(self):
        check_interval(self.angle_deg, "angle_deg")
        check_interval(self.keras_zoom, "keras_zoom")
        check_interval(self.shear_deg, "shear_deg")
        if self.keras_zoom[0] <= 0:
            raise ValueError(f"keras_zoom: expected positive factors, got {self.keras_zoom}")
        if not 0 <= self.shift_frac < 1:
            raise ValueError(f"shift_frac: expected a fraction in [0, 1), got {self.shift_frac}")

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator) -> AffineParams:
        """Draw ``n`` transforms on the CPU with ``generator`` (deterministic for its seed)."""
        h, w = size

        def u(lo_hi, *shape):
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(*shape, n, generator=generator)

        angle = u(self.angle_deg)
        tx = u((-self.shift_frac * w, self.shift_frac * w))
        ty = u((-self.shift_frac * h, self.shift_frac * h))
        zx = u(self.keras_zoom)
        zy = zx.clone() if self.isotropic else u(self.keras_zoom)
        shear = u(self.shear_deg)
        return AffineParams(angle, tx, ty, keras_zoom_to_scale(zx), keras_zoom_to_scale(zy), shear)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], tuple(images.shape[-2:]), generator)
        return params.apply(images, **self.warp_kwargs).clamp_(0.0, 1.0)

    def describe(self) -> dict:
        return {
            "angle_deg": list(self.angle_deg), "shift_frac": self.shift_frac, "keras_zoom": list(self.keras_zoom),
            "isotropic": self.isotropic, "shear_deg": list(self.shear_deg), **self.warp_kwargs,
        }


@dataclass(frozen=True)
class NoisyAugmentation:
    """A random transform followed by additive Gaussian noise: the training augmentation of smoothing.

    Transformation-specific smoothing (TSS, Li et al., CCS 2021) trains the base classifier on
    ``phi(x, alpha) + eps`` with ``alpha`` uniform in the transformation's range (rotation, scaling or
    translation) and ``eps ~ N(0, noise_sd^2 I)``; the certificate then smooths with the same Gaussian
    noise (see :mod:`robustbench_geo.smoothing`). The noisy image is *not* clamped to ``[0, 1]`` (the
    smoothed classifier sees unclamped noise too).

    Args:
        sampler: the random transform (``None``: noise only).
        noise_sd: standard deviation of the Gaussian noise, in pixel-value units (images in ``[0, 1]``).
    """

    sampler: AffineSampler | None
    noise_sd: float

    def __post_init__(self):
        if not self.noise_sd >= 0:
            raise ValueError(f"noise_sd: expected a non-negative standard deviation, got {self.noise_sd}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images if self.sampler is None else self.sampler(images, generator)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + self.noise_sd * noise.to(x.device)

    def describe(self) -> dict:
        return {"transform": None if self.sampler is None else self.sampler.describe(), "noise_sd": self.noise_sd}


#: Named samplers shared by the dataset variants and ``--augment``.
AUGMENTATIONS: dict[str, AffineSampler | None] = {
    "none": None,
    # the Scaled MNIST transform: Keras zoom_range=[1.0, 2.5], width/height_shift_range=0.2
    "scale": AffineSampler(shift_frac=0.2, keras_zoom=(1.0, 2.5)),
    # the same draws resampled as Keras 2.0's ImageDataGenerator did (scipy order 0, fill_mode='nearest'):
    # nearest neighbour, edges repeated; shrinking a digit this way drops pixels instead of averaging them
    "scale-nearest": AffineSampler(shift_frac=0.2, keras_zoom=(1.0, 2.5), warp_kwargs=dict(KERAS_WARP)),
    "rotate": AffineSampler(angle_deg=(-45.0, 45.0)),
    "affine": AffineSampler(angle_deg=(-30.0, 30.0), shift_frac=0.1, keras_zoom=(0.9, 1.5), shear_deg=(-10.0, 10.0)),
}


def _noisy(family: str, args: dict[str, float]) -> NoisyAugmentation:
    sd = args.pop("sigma", 0.25)
    if family == "noise":
        sampler = None
    elif family == "rotate-noise":
        a = args.pop("angle_deg", 30.0)
        sampler = AffineSampler(angle_deg=(-a, a))
    elif family == "scale-noise":
        lo, hi = args.pop("min", 0.8), args.pop("max", 1.2)
        if not 0 < lo <= hi:
            raise ValueError(f"scale-noise: expected 0 < min <= max, got min={lo}, max={hi}")
        # content scale s in [min, max] is a Keras zoom 1/s in [1/max, 1/min]
        sampler = AffineSampler(keras_zoom=(1.0 / hi, 1.0 / lo), isotropic=True)
    else:  # translate-noise: the shift fraction is of the image side; 28 px for MNIST
        px, side = args.pop("px", 3.0), args.pop("side", 28.0)
        sampler = AffineSampler(shift_frac=px / side)
    if args:
        raise ValueError(f"{family}: unknown parameter(s) {', '.join(sorted(args))}")
    return NoisyAugmentation(sampler, float(sd))


#: Parametrised augmentations for smoothing: ``FAMILY[:key=value,...]`` (defaults in brackets).
NOISY_AUGMENTATIONS = {
    "noise": "Gaussian noise only [sigma=0.25]",
    "rotate-noise": "uniform rotation in +-angle_deg, then Gaussian noise [angle_deg=30, sigma=0.25]",
    "scale-noise": "uniform content scale in [min, max], then Gaussian noise [min=0.8, max=1.2, sigma=0.25]",
    "translate-noise": "uniform shift in +-px along x and y, then Gaussian noise [px=3, side=28, sigma=0.25]",
}


def get_augmentation(name: str) -> AffineSampler | NoisyAugmentation | None:
    """Look up an augmentation: a named sampler (``none``, ``scale``, ``rotate``, ``affine``) or a
    smoothing augmentation ``FAMILY[:key=value,...]`` from :data:`NOISY_AUGMENTATIONS`, e.g.
    ``rotate-noise:angle_deg=35,sigma=0.5`` or ``scale-noise:min=0.75,max=1.25,sigma=0.25``."""
    from robustbench_geo.check import unknown_name_error

    family, _, rest = name.partition(":")
    if family in NOISY_AUGMENTATIONS:
        args = {}
        for item in filter(None, (t.strip() for t in rest.split(","))):
            key, eq, value = item.partition("=")
            try:
                args[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"augmentation {name!r}: expected key=number items, got {item!r}") from None
        return _noisy(family, args)
    if name not in AUGMENTATIONS:
        raise unknown_name_error("augmentation", name, [*AUGMENTATIONS, *NOISY_AUGMENTATIONS])
    return AUGMENTATIONS[name]
