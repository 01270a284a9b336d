"""Low-level operators: deformable convolution (functional + module)."""

from robustbench_geo.ops.deform_conv import (
    BACKENDS, DeformConv2d, deform_conv2d, get_column_budget, resolve_backend, set_column_budget,
)

__all__ = ["BACKENDS", "DeformConv2d", "deform_conv2d", "get_column_budget", "resolve_backend", "set_column_budget"]
