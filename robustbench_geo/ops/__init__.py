"""Low-level operators: deformable convolution (functional + module)."""

from robustbench_geo.ops.deform_conv import BACKENDS, DeformConv2d, deform_conv2d, resolve_backend

__all__ = ["BACKENDS", "DeformConv2d", "deform_conv2d", "resolve_backend"]
