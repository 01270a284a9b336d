"""Model zoo: image (regular, atrous, deformable, STN, ResNet-18) and graph models, one registry."""

from robustbench_geo.models import cnn, gnn, gnn_defenses, resnet, stn  # noqa: F401  (register the built-ins)
from robustbench_geo.models import dynamic_filter, equivariant, fewshot_gnn, roi  # noqa: F401  (geometry-aware families)
from robustbench_geo.models import gnn_robust  # noqa: F401  (register the robust GNNs)
from robustbench_geo.models.deformable import DeformableConv, deformable_layers, set_deform_backend
from robustbench_geo.models.registry import (
    build_model, check_model_output, create_model, get_model_entry, list_models, register_model,
)

__all__ = [
    "DeformableConv", "build_model", "check_model_output", "create_model", "deformable_layers", "get_model_entry",
    "list_models", "register_model", "set_deform_backend",
]
