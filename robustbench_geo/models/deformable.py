"""Deformable convolution layers with their own offset (and mask) predictors.

:class:`DeformableConv` is a drop-in ``nn.Conv2d`` replacement: a regular convolution predicts
per-pixel, per-tap offsets ``(dy, dx)`` in pixels (and, for DCNv2, a modulation mask), then
:func:`robustbench_geo.ops.deform_conv2d` samples the input at the shifted taps. The offset and
mask predictors are zero-initialised and the mask is ``2 * sigmoid(.)`` so that a fresh layer
computes exactly the regular convolution (offset 0, mask 1); training starts from there.

:class:`ChannelOffsetConv` is the other offset layer, that of the Keras deformable-convolution
Scaled MNIST experiment (its ``ConvOffset2D``): one ``(dy, dx)`` per input channel and pixel,
every channel resampled (:func:`robustbench_geo.ops.shift_channels`) before an ordinary convolution,
the offset predictor (3x3, no bias) initialised from a Gaussian (std 0.01) rather than zeros.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from robustbench_geo.ops import DeformConv2d, resolve_backend, shift_channels
from robustbench_geo.ops.channel_shift import IMPLS as SHIFT_IMPLS


class DeformableConv(nn.Module):
    """Offset/mask predictor + deformable convolution.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        version: ``"v1"`` (Dai et al. 2017) or ``"v2"`` (modulated, Zhu et al. 2019).
        offset_groups: channel groups sharing one offset field.
        backend: deformable-convolution backend (``auto``, ``native``, ``torchvision``).

    Attributes:
        record: when True, ``last_offset``/``last_mask`` keep the latest offsets for visualisation.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
                 bias=True, version: str = "v1", offset_groups: int = 1, backend: str = "auto"):
        super().__init__()
        if version not in ("v1", "v2"):
            raise ValueError(f"version: expected 'v1' or 'v2', got {version!r}")
        if in_channels % offset_groups:
            raise ValueError(f"offset_groups: expected a divisor of in_channels ({in_channels}), got {offset_groups}")
        kh, kw = _pair(kernel_size)
        self.version, self.offset_groups = version, offset_groups
        taps = offset_groups * kh * kw
        self.offset_conv = nn.Conv2d(in_channels, (3 if version == "v2" else 2) * taps, (kh, kw), stride, padding, dilation)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.conv = DeformConv2d(in_channels, out_channels, (kh, kw), stride, padding, dilation, groups, bias, backend)
        self.record = False
        self.last_offset: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None

    @property
    def backend(self) -> str:
        return self.conv.backend

    @backend.setter
    def backend(self, value: str) -> None:
        resolve_backend(value)  # validates the name
        self.conv.backend = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.offset_conv(x)
        taps = self.offset_groups * self.conv.kernel_size[0] * self.conv.kernel_size[1]
        offset, mask = out[:, : 2 * taps], None
        if self.version == "v2":
            mask = 2.0 * torch.sigmoid(out[:, 2 * taps:])
        if self.record:
            self.last_offset = offset.detach()
            self.last_mask = None if mask is None else mask.detach()
        return self.conv(x, offset, mask)

    def sampling_locations(self, offset: torch.Tensor) -> torch.Tensor:
        """Absolute input coordinates of every tap: ``(B, G, kh*kw, 2 [y, x], H_out, W_out)`` in pixels."""
        b, _, ho, wo = offset.shape
        kh, kw = self.conv.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.conv.stride, self.conv.padding, self.conv.dilation
        dev, dt = offset.device, offset.dtype
        ky, kx = torch.meshgrid(torch.arange(kh, device=dev, dtype=dt), torch.arange(kw, device=dev, dtype=dt), indexing="ij")
        oy = torch.arange(ho, device=dev, dtype=dt) * sh - ph
        ox = torch.arange(wo, device=dev, dtype=dt) * sw - pw
        base_y = oy.view(1, ho, 1) + (ky.reshape(-1) * dh).view(-1, 1, 1)
        base_x = ox.view(1, 1, wo) + (kx.reshape(-1) * dw).view(-1, 1, 1)
        base = torch.stack([base_y.expand(-1, ho, wo), base_x.expand(-1, ho, wo)], dim=1)  # (K, 2, Ho, Wo)
        off = offset.view(b, self.offset_groups, kh * kw, 2, ho, wo)
        return base.unsqueeze(0).unsqueeze(0) + off


class ChannelOffsetConv(nn.Module):
    """Per-channel offset predictor + resampling + ordinary convolution (the reference's ``ConvOffset2D`` + conv).

    A 3x3 convolution (no bias) of the input predicts ``2 * in_channels`` offset channels, ``(dy, dx)``
    in pixels for each input channel and pixel; each channel is resampled bilinearly at its shifted grid
    (:func:`~robustbench_geo.ops.shift_channels`, clamped to the map) and ``conv``, an ``nn.Conv2d``,
    runs on the result. With zero offset weights it computes ``conv`` (exactly with
    ``impl="gather"``, to float rounding with the default, faster ``"grid_sample"``); the default
    initialisation is the reference's Gaussian (``init_std`` 0.01), so a fresh layer is close to,
    not equal to, the plain convolution.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as ``nn.Conv2d``.
        init_std: standard deviation of the offset predictor's initial weights (0: zeros).
        impl: :func:`~robustbench_geo.ops.shift_channels` implementation, ``grid_sample`` or ``gather``.
        layout: how the predictor's ``2 * C`` output channels become per-channel offsets. ``"paired"``:
            channels ``(2c, 2c + 1)`` are ``(dy, dx)`` of channel ``c`` at the same pixel. ``"keras"``:
            the reference's reshaping, which reads the ``(B, 2C, H, W)`` prediction in memory order
            as ``(B * C, H, W, 2)``, so pixel ``p`` of channel ``c`` takes its ``(dy, dx)`` from
            prediction channel ``2c + (2p // HW)`` at flat positions ``2p mod HW`` and ``2p + 1 mod
            HW``: offsets computed at other pixels (than ``p``), as the reference's code does.

    Attributes:
        record: when True, ``last_offset`` keeps the latest offsets ``(B, 2 * C_in, H, W)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1, groups=1,
                 bias=True, init_std: float = 0.01, impl: str = "grid_sample", layout: str = "paired"):
        super().__init__()
        if layout not in ("paired", "keras"):
            raise ValueError(f"layout: expected 'paired' or 'keras', got {layout!r}")
        self.layout = layout
        if impl not in SHIFT_IMPLS:
            raise ValueError(f"impl: expected one of {list(SHIFT_IMPLS)}, got {impl!r}")
        self.impl = impl
        if not init_std >= 0:
            raise ValueError(f"init_std: expected a standard deviation >= 0, got {init_std!r}")
        self.offset_conv = nn.Conv2d(in_channels, 2 * in_channels, 3, padding=1, bias=False)
        if init_std > 0:
            nn.init.normal_(self.offset_conv.weight, 0.0, init_std)
        else:
            nn.init.zeros_(self.offset_conv.weight)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.record = False
        self.last_offset: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        if self.layout == "keras":  # memory order (B, 2C, H, W) read as (B, C, H, W, 2), then paired again
            b, c2, h, w = offset.shape
            offset = offset.reshape(b, c2 // 2, h, w, 2).permute(0, 1, 4, 2, 3).reshape(b, c2, h, w)
        if self.record:
            self.last_offset = offset.detach()
        return self.conv(shift_channels(x, offset, self.impl))


def offset_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every layer with an offset predictor (``DeformableConv`` or ``ChannelOffsetConv``), with its name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (DeformableConv, ChannelOffsetConv))]


def deformable_layers(model: nn.Module) -> list[tuple[str, DeformableConv]]:
    """All deformable layers of a model, with their qualified names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, DeformableConv)]


def set_deform_backend(model: nn.Module, backend: str, device: torch.device | str | None = None) -> str | None:
    """Switch every deformable layer of ``model`` to ``backend``; returns the resolved name (None if none).

    The name is resolved for ``device`` (default: where the model's parameters are now), so pass the
    device the model will run on when it is about to move there.
    """
    layers = deformable_layers(model)
    for _, layer in layers:
        layer.backend = backend
    if not layers:
        return None
    return resolve_backend(backend, next(model.parameters()).device if device is None else torch.device(device))


def load_regular_weights(deform_model: nn.Module, regular_state: dict) -> list[str]:
    """Copy a regular model's weights into its deformable twin (same backbone, some convs deformable).

    A regular conv ``features.3.weight`` maps to the offset layer's ``features.3.conv.weight``
    (``DeformableConv`` or ``ChannelOffsetConv``); every other tensor maps by name. The offset/mask
    predictors keep their initialisation: zeros for ``DeformableConv``, so the deformable model starts
    out computing exactly the regular one; ``ChannelOffsetConv``'s small Gaussian, close to it. Returns
    the keys of ``deform_model`` left untouched (the offset/mask predictors).
    """
    own = deform_model.state_dict()
    layers = {name for name, _ in offset_layers(deform_model)}
    mapped = {}
    for key, value in regular_state.items():
        prefix, _, leaf = key.rpartition(".")
        target = f"{prefix}.conv.{leaf}" if prefix in layers else key
        if target not in own:
            raise ValueError(f"regular weight {key!r} has no counterpart {target!r} in the deformable model")
        if own[target].shape != value.shape:
            raise ValueError(f"regular weight {key!r}: expected shape {tuple(own[target].shape)}, got {tuple(value.shape)}")
        mapped[target] = value
    untouched = sorted(set(own) - set(mapped))
    if any("offset_conv" not in k for k in untouched):
        raise ValueError(f"the regular state lacks {[k for k in untouched if 'offset_conv' not in k]}")
    deform_model.load_state_dict({**own, **mapped})
    return untouched
