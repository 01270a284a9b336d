"""The 4-layer CNN of the Scaled MNIST experiment, and its atrous and deformable variants.

Backbone (the reference Keras model of the deformable-convolution Scaled MNIST experiment)::

    conv11  3x3,  32, stride 1 -> BN -> ReLU
    conv12  3x3,  64, stride 2 -> BN -> ReLU
    conv21  3x3, 128, stride 1 -> BN -> ReLU
    conv22  3x3, 128, stride 2 -> BN -> ReLU
    global average pooling -> linear (num_classes)

(the reference puts ReLU before BN in every block: ``block_order="relu-bn"``).

``deform_cnn`` replaces the last ``num_deform`` convolutions (default 3, as the reference
placed offset layers before conv12, conv21 and conv22) by deformable ones (``offset_style="dcn"``,
Dai et al.'s deformable convolution; or ``"channel"``, the reference's own offset layer: each input
channel resampled at its own predicted offsets before the ordinary conv); ``atrous_cnn`` uses
dilation 2 in those layers instead (the fixed-receptive-field baseline of the deformable
ConvNets paper, Table 3).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from robustbench_geo.models.deformable import ChannelOffsetConv, DeformableConv
from robustbench_geo.models.registry import register_model

CHANNELS = (32, 64, 128, 128)
STRIDES = (1, 2, 1, 2)
OFFSET_STYLES = ("dcn", "channel", "keras")
#: a block's order after its convolution: ours, or the Keras reference's (ReLU, then batch norm)
BLOCK_ORDERS = ("bn-relu", "relu-bn")


class ConvNet(nn.Module):
    """Conv -> BN -> ReLU stack with per-layer kind ``conv``, ``atrous`` or ``deform``; GAP + linear head.

    Args:
        in_channels, num_classes: input channels and classes.
        image_size: ``(H, W)``; unused by the layers (global pooling) but kept for the protocol.
        channels, strides: per-layer widths and strides.
        kinds: per-layer kind.
        deform: ``"v1"`` (offsets only) or ``"v2"`` (modulated, with a mask).
        offset_groups: offset groups of the deformable layers.
        offset_style: ``"dcn"`` (:class:`DeformableConv`), ``"channel"`` (:class:`ChannelOffsetConv`;
            ``deform`` and ``offset_groups`` do not apply to it) or ``"keras"`` (``ChannelOffsetConv``
            with the reference's own reshaping of the predicted offsets, ``layout="keras"``).
        block_order: ``"bn-relu"`` (conv, BN, ReLU) or ``"relu-bn"`` (conv, ReLU, BN: the reference
            Keras model's order).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size=(28, 28),
                 channels: Sequence[int] = CHANNELS, strides: Sequence[int] = STRIDES,
                 kinds: Sequence[str] = ("conv",) * 4, deform: str = "v1", offset_groups: int = 1,
                 offset_style: str = "dcn", block_order: str = "bn-relu"):
        super().__init__()
        if offset_style not in OFFSET_STYLES:
            raise ValueError(f"offset_style: expected one of {list(OFFSET_STYLES)}, got {offset_style!r}")
        if block_order not in BLOCK_ORDERS:
            raise ValueError(f"block_order: expected one of {list(BLOCK_ORDERS)}, got {block_order!r}")
        if not len(channels) == len(strides) == len(kinds):
            raise ValueError(f"channels, strides and kinds must have equal lengths, got {len(channels)}, {len(strides)}, {len(kinds)}")
        layers, cin = [], in_channels
        for cout, stride, kind in zip(channels, strides, kinds):
            if kind == "conv":
                conv = nn.Conv2d(cin, cout, 3, stride, padding=1)
            elif kind == "atrous":
                conv = nn.Conv2d(cin, cout, 3, stride, padding=2, dilation=2)
            elif kind == "deform" and offset_style != "dcn":
                layout = "keras" if offset_style == "keras" else "paired"
                conv = ChannelOffsetConv(cin, cout, 3, stride, padding=1, layout=layout)
            elif kind == "deform":
                conv = DeformableConv(cin, cout, 3, stride, padding=1, version=deform, offset_groups=offset_groups)
            else:
                raise ValueError(f"kinds: expected 'conv', 'atrous' or 'deform', got {kind!r}")
            bn, relu = nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            layers += [conv, bn, relu] if block_order == "bn-relu" else [conv, relu, bn]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        # Without deformable layers the whole stack runs channels-last (NHWC): oneDNN's convolutions
        # then skip their layout reorders, measured 20 % faster training and 14 % faster inference
        # for ``cnn`` on one CPU thread. The deformable op works in NCHW, where NHWC gains ~2 % only.
        self.channels_last = all(kind != "deform" for kind in kinds)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x).mean(dim=(2, 3)))


def _kinds(num_special: int, kind: str, n: int = 4) -> tuple[str, ...]:
    if not 0 <= num_special <= n:
        raise ValueError(f"expected between 0 and {n} {kind} layers, got {num_special}")
    return ("conv",) * (n - num_special) + (kind,) * num_special


@register_model("cnn", task="image")
def cnn(in_channels=1, num_classes=10, image_size=(28, 28), channels=CHANNELS, strides=STRIDES,
        block_order: str = "bn-relu") -> ConvNet:
    """4-conv CNN (32-64-128-128, 3x3, ReLU/BN, global pooling) of the Scaled MNIST experiment."""
    return ConvNet(in_channels, num_classes, image_size, channels, strides, block_order=block_order)


@register_model("deform_cnn", task="image")
def deform_cnn(in_channels=1, num_classes=10, image_size=(28, 28), channels=CHANNELS, strides=STRIDES,
               num_deform: int = 3, deform: str = "v1", offset_groups: int = 1, offset_style: str = "dcn",
               block_order: str = "bn-relu") -> ConvNet:
    """``cnn`` with the last ``num_deform`` convs deformable (v1, or modulated v2); offsets start at zero.

    ``offset_style="channel"`` uses the reference experiment's offset layer instead (one offset per
    input channel and pixel, resampling before an ordinary conv, Gaussian-initialised predictor);
    ``"keras"`` the same with the reference code's reshaping of the predicted offsets (see
    :class:`~robustbench_geo.models.deformable.ChannelOffsetConv`, ``layout``).
    """
    if deform not in ("v1", "v2"):
        raise ValueError(f"deform: expected 'v1' or 'v2', got {deform!r}")
    return ConvNet(in_channels, num_classes, image_size, channels, strides, _kinds(num_deform, "deform"), deform,
                   offset_groups, offset_style, block_order)


@register_model("atrous_cnn", task="image")
def atrous_cnn(in_channels=1, num_classes=10, image_size=(28, 28), channels=CHANNELS, strides=STRIDES,
               num_atrous: int = 3) -> ConvNet:
    """``cnn`` with dilation 2 in the last ``num_atrous`` convs (the atrous baseline of DCN Table 3)."""
    return ConvNet(in_channels, num_classes, image_size, channels, strides, _kinds(num_atrous, "atrous"))


class MadryCNN(nn.Module):
    """The MNIST CNN of Madry et al. 2018, the "standard CNN" that Engstrom et al. 2019 attack.

    ``conv 5x5, 32 -> ReLU -> maxpool 2 -> conv 5x5, 64 -> ReLU -> maxpool 2 -> fc 1024 -> ReLU ->
    fc num_classes`` ("same" padding). With ``deform`` the second convolution is deformable (its
    offsets start at zero, so a fresh model computes exactly the regular one).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size=(28, 28), deform: str | None = None):
        super().__init__()
        h, w = image_size
        if h % 4 or w % 4:
            raise ValueError(f"image_size: expected sides divisible by 4 (two 2x2 poolings), got {tuple(image_size)}")
        conv2 = (nn.Conv2d(32, 64, 5, padding=2) if deform is None
                 else DeformableConv(32, 64, 5, 1, padding=2, version=deform))
        self.features = nn.Sequential(nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      conv2, nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 1024), nn.ReLU(inplace=True),
                                  nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("madry_cnn", task="image")
def madry_cnn(in_channels=1, num_classes=10, image_size=(28, 28)) -> MadryCNN:
    """Madry et al.'s MNIST CNN (2 conv 5x5 + max pooling, fc 1024): Engstrom et al.'s reference model."""
    return MadryCNN(in_channels, num_classes, image_size)


@register_model("deform_madry_cnn", task="image")
def deform_madry_cnn(in_channels=1, num_classes=10, image_size=(28, 28), deform: str = "v1") -> MadryCNN:
    """``madry_cnn`` with a deformable second convolution (v1, or modulated v2)."""
    if deform not in ("v1", "v2"):
        raise ValueError(f"deform: expected 'v1' or 'v2', got {deform!r}")
    return MadryCNN(in_channels, num_classes, image_size, deform)


class SmallCNN(nn.Module):
    """A small MNIST CNN (about 0.9 M multiply-adds per 28x28 image at ``width=1``, 15x fewer than ``madry_cnn``).

    ``conv 5x5 stride 2, 16 w -> ReLU -> conv 5x5 stride 2, 32 w -> ReLU -> fc 128 w -> ReLU -> fc
    num_classes`` ("same" padding, ``w = width``). Meant for randomized smoothing on the CPU, where the
    base classifier runs on every one of many noisy samples per image; ``width=2`` costs about 4x the
    multiply-adds (3.5 M) for a base classifier that is more confident under noise.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size=(28, 28), width: int = 1):
        super().__init__()
        h, w = image_size
        if h % 4 or w % 4:
            raise ValueError(f"image_size: expected sides divisible by 4 (two stride-2 convolutions), got {tuple(image_size)}")
        if int(width) != width or width < 1:
            raise ValueError(f"width: expected a positive integer channel multiplier, got {width!r}")
        c1, c2, hidden = 16 * int(width), 32 * int(width), 128 * int(width)
        self.features = nn.Sequential(nn.Conv2d(in_channels, c1, 5, 2, padding=2), nn.ReLU(inplace=True),
                                      nn.Conv2d(c1, c2, 5, 2, padding=2), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("small_cnn", task="image")
def small_cnn(in_channels=1, num_classes=10, image_size=(28, 28), width=1) -> SmallCNN:
    """A small CNN (2 strided conv 5x5 + fc 128, ``width`` multiplies the channels) for smoothing on the CPU."""
    return SmallCNN(in_channels, num_classes, image_size, width)
