"""Low-level operators: deformable convolution and deformable RoI pooling (functional + module)."""

from robustbench_geo.ops.deform_conv import (
    BACKENDS, DeformConv2d, deform_conv2d, get_column_budget, resolve_backend, set_column_budget,
)
from robustbench_geo.ops.channel_shift import shift_channels
from robustbench_geo.ops.roi_pool import DeformRoIPool2d, PSDeformRoIPool2d, deform_roi_pool, ps_deform_roi_pool

__all__ = ["BACKENDS", "DeformConv2d", "DeformRoIPool2d", "PSDeformRoIPool2d", "deform_conv2d", "deform_roi_pool",
           "get_column_budget", "ps_deform_roi_pool", "resolve_backend", "set_column_budget", "shift_channels"]
