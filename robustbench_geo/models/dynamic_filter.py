"""Dynamic filter network (Jia et al. 2016): filters generated per input, per position.

A *dynamic local filtering* layer applies, at every output position ``p`` of every sample, a
``k x k`` filter that a small *filter-generating network* computed from that sample's input:

    y[b, c, p] = sum_t  w[b, g(c), t, p] * x[b, c, p + d_t]

where ``t`` runs over the ``k * k`` taps at displacements ``d_t`` (row-major, like ``nn.Conv2d``),
``g(c)`` is the filter group of channel ``c`` (``groups`` groups of ``C_in / groups`` channels share a
filter) and ``w = generator(x)`` has shape ``(B, groups * k * k, H_out, W_out)``. The generator is a
``3x3`` conv -> ReLU -> ``1x1`` conv; its last bias is the static (input-independent) part of the
filters, its weights the dynamic part. Dynamic filtering mixes positions only; a ``1x1`` convolution
afterwards mixes channels (``DynamicFilterConv`` = dynamic local filtering + pointwise conv), and
strides are applied by evaluating the filters at the strided positions only.

``dynamic_filter_cnn`` is ``cnn`` with its last three convolutions replaced by dynamic filter
convolutions; the widths are chosen so that the parameter count stays within a few per cent of
``cnn``'s (the generator weights are where the budget goes).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.models.cnn import STRIDES, ConvNet
from robustbench_geo.models.registry import register_model

DF_CHANNELS = (48, 96, 176, 176)


def dynamic_local_filter(x: torch.Tensor, filters: torch.Tensor, kernel_size: int = 3, stride: int = 1,
                         padding: int = 1, dilation: int = 1) -> torch.Tensor:
    """Apply per-sample, per-position filters.

    Args:
        x: ``(B, C, H, W)`` input.
        filters: ``(B, G * k * k, H_out, W_out)``; channel ``c`` uses group ``c // (C / G)``; tap order row-major.
        kernel_size, stride, padding, dilation: as for ``nn.Conv2d`` (square).

    Returns:
        ``(B, C, H_out, W_out)``.
    """
    b, c, h, w = x.shape
    k2 = kernel_size * kernel_size
    if filters.dim() != 4 or filters.shape[1] % k2:
        raise ValueError(f"filters: expected shape (B, G*{k2}, H_out, W_out), got {tuple(filters.shape)}")
    g = filters.shape[1] // k2
    if c % g:
        raise ValueError(f"filters: expected a number of groups dividing the {c} input channels, got {g}")
    ho, wo = filters.shape[-2:]
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=padding, stride=stride)  # (B, C*k2, L)
    if cols.shape[-1] != ho * wo:
        raise ValueError(f"filters: expected spatial size matching the output ({cols.shape[-1]} positions), got {ho}x{wo}")
    cols = cols.view(b, g, c // g, k2, ho * wo)
    wts = filters.reshape(b, g, 1, k2, ho * wo)
    return (cols * wts).sum(dim=3).reshape(b, c, ho, wo)


class DynamicFilterConv(nn.Module):
    """Filter-generating network + dynamic local filtering + pointwise (1x1) channel mixing.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size, stride, padding: of the dynamic filters.
        groups: filter groups (``in_channels`` = one filter per channel).
        hidden: channels of the generator's hidden layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 groups: int | None = None, hidden: int = 32):
        super().__init__()
        groups = in_channels if groups is None else groups
        if in_channels % groups:
            raise ValueError(f"groups: expected a divisor of in_channels ({in_channels}), got {groups}")
        self.kernel_size, self.stride, self.padding, self.groups = kernel_size, stride, padding, groups
        k2 = kernel_size * kernel_size
        self.generator = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size, stride, padding), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, groups * k2, 1),
        )
        # static part (bias): a Kaiming-scaled random filter per group; dynamic part starts small
        nn.init.normal_(self.generator[2].weight, std=0.01)
        nn.init.normal_(self.generator[2].bias, std=(2.0 / k2) ** 0.5)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.record = False
        self.last_filters: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filters = self.generator(x)
        if self.record:
            self.last_filters = filters.detach()
        y = dynamic_local_filter(x, filters, self.kernel_size, self.stride, self.padding)
        return self.pointwise(y)


class DynamicFilterCNN(ConvNet):
    """``cnn`` layout: a static first conv, then dynamic filter convs; BN, ReLU, GAP, linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size=(28, 28),
                 channels: Sequence[int] = DF_CHANNELS, strides: Sequence[int] = STRIDES, hidden: int = 32):
        super().__init__(in_channels, num_classes, image_size, channels, strides)
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        for i in convs[1:]:  # features = [conv, BN, ReLU] * layers
            old = self.features[i]
            self.features[i] = DynamicFilterConv(old.in_channels, old.out_channels, 3, old.stride[0], 1, hidden=hidden)


@register_model("dynamic_filter_cnn", task="image")
def dynamic_filter_cnn(in_channels=1, num_classes=10, image_size=(28, 28), channels=DF_CHANNELS, strides=STRIDES,
                       hidden: int = 32) -> DynamicFilterCNN:
    """Dynamic filter network (Jia et al. 2016): per-sample, per-position 3x3 filters from a generator; cnn's budget."""
    return DynamicFilterCNN(in_channels, num_classes, image_size, channels, strides, hidden)
