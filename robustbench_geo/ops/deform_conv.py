"""Deformable convolution (DCNv1; modulated DCNv2 with ``mask``) with selectable backends.

Same signature and semantics as :func:`torchvision.ops.deform_conv2d`:

* ``input``: ``(B, C_in, H, W)``;
* ``offset``: ``(B, 2 * offset_groups * kh * kw, H_out, W_out)``, per tap ``(dy, dx)`` in pixels;
* ``weight``: ``(C_out, C_in / groups, kh, kw)``;
* ``mask``: ``(B, offset_groups * kh * kw, H_out, W_out)`` or ``None``.

Backends: ``torchvision`` (the reference op) and, where available, faster native ones;
``backend="auto"`` picks the fastest correct one for the tensors' device.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision.ops as tvops
from torch.nn.modules.utils import _pair

from robustbench_geo.check import unknown_name_error


def _torchvision(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    return tvops.deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


#: backend name -> callable with :func:`deform_conv2d`'s signature (without ``backend``)
BACKENDS = {"torchvision": _torchvision}

#: preferred backends per device type, fastest first (``auto`` takes the first registered)
_AUTO_ORDER = {"cpu": ["native", "torchvision"], "cuda": ["triton", "native", "torchvision"]}


def resolve_backend(backend: str = "auto", device: torch.device | str = "cpu") -> str:
    """The concrete backend name that ``backend`` means on ``device``."""
    if backend == "auto":
        dev = torch.device(device).type
        for name in _AUTO_ORDER.get(dev, ["torchvision"]):
            if name in BACKENDS:
                return name
        return "torchvision"
    if backend not in BACKENDS:
        raise unknown_name_error("deformable-convolution backend", backend, ["auto", *BACKENDS])
    return backend


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None, *, backend="auto"):
    """Deformable 2-D convolution; see the module docstring for shapes. Returns ``(B, C_out, H_out, W_out)``."""
    fn = BACKENDS[resolve_backend(backend, input.device)]
    return fn(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)


class DeformConv2d(nn.Module):
    """Module holding the weight/bias of a deformable convolution; offsets and mask come at call time."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 backend: str = "auto"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups: expected in_channels ({in_channels}) and out_channels ({out_channels}) divisible by groups ({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = map(_pair, (kernel_size, stride, padding, dilation))
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5)

    def forward(self, input, offset, mask=None):
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask, backend=self.backend)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, backend={self.backend!r}")
