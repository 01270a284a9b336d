"""Seeded geometric variants of image datasets: ``mnist-scaled`` and ``mnist-rotated``.

Each sample is warped once with parameters drawn from a generator seeded by ``seed`` and the split,
so the same call always returns the same images. The per-sample parameters are kept in
``dataset.meta["params"]`` (tensors) and the sampler settings in ``dataset.meta["transform"]``.

* ``mnist-scaled``: the "Scaled MNIST" of the deformable-convolution reference experiment. Keras
  ``zoom_range=[1.0, 2.5]`` (the sampling grid is stretched, so the digit shrinks to 40-100 % of its
  size; x and y drawn independently as Keras does, ``isotropic=True`` for one factor) and
  ``width/height_shift_range=0.2`` (shift up to 20 % of width/height). Bilinear resampling by default;
  ``interpolation="nearest"`` resamples as the reference's Keras 2.0 generator did (nearest neighbour,
  edges repeated), which makes the shrunken digits harder (``--augment scale-nearest`` trains on it).
* ``mnist-rotated``: uniform rotation in ``[-max_angle_deg, max_angle_deg]`` (default 45).

The samplers are the ones ``--augment scale`` / ``--augment rotate`` use during training
(:data:`robustbench_geo.geometry.AUGMENTATIONS`), so train-time and test-time variants agree.
"""

from __future__ import annotations

import dataclasses

import torch

from robustbench_geo.check import check_number
from robustbench_geo.data.base import ImageDataset
from robustbench_geo.geometry import AUGMENTATIONS, AffineParams, AffineSampler

_SPLIT_OFFSET = {"train": 0, "test": 1}


def apply_sampler(base: ImageDataset, name: str, sampler: AffineSampler, seed: int, chunk: int = 4096) -> ImageDataset:
    """Warp every image of ``base`` once with parameters drawn from ``sampler`` (seeded)."""
    g = torch.Generator().manual_seed(seed * 2 + _SPLIT_OFFSET.get(base.meta.get("split"), 0))
    params = sampler.sample(len(base), base.image_size, g)
    out = torch.empty_like(base.images)
    for i in range(0, len(base), chunk):
        sl = slice(i, i + chunk)
        p = AffineParams(*(v[sl] for v in params.as_dict().values()))
        out[sl] = p.apply(base.images[sl], **sampler.warp_kwargs).clamp_(0.0, 1.0)
    meta = {**base.meta, "dataset": name, "base": base.name, "seed": seed, "transform": sampler.describe(),
            "params": params.as_dict()}
    return ImageDataset(name, out, base.labels, base.classes, meta)


#: resampling of ``mnist-scaled``: ours (bilinear, zeros outside) or the reference's Keras 2.0 generator's
SCALED_INTERPOLATIONS = {"bilinear": "scale", "nearest": "scale-nearest"}


def load_mnist_scaled(split="train", root=None, download=True, seed: int = 0, isotropic: bool = False,
                      interpolation: str = "bilinear") -> ImageDataset:
    from robustbench_geo.check import unknown_name_error
    from robustbench_geo.data.images import load_mnist

    if interpolation not in SCALED_INTERPOLATIONS:
        raise unknown_name_error("mnist-scaled interpolation", interpolation, SCALED_INTERPOLATIONS)
    sampler = dataclasses.replace(AUGMENTATIONS[SCALED_INTERPOLATIONS[interpolation]], isotropic=isotropic)
    return apply_sampler(load_mnist(split, root, download), "mnist-scaled", sampler, seed)


def load_mnist_rotated(split="train", root=None, download=True, seed: int = 0, max_angle_deg: float = 45.0) -> ImageDataset:
    from robustbench_geo.data.images import load_mnist

    max_angle_deg = check_number(max_angle_deg, "max_angle_deg", low=0.0, high=180.0)
    sampler = dataclasses.replace(AUGMENTATIONS["rotate"], angle_deg=(-float(max_angle_deg), float(max_angle_deg)))
    return apply_sampler(load_mnist(split, root, download), "mnist-rotated", sampler, seed)
