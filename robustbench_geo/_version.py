"""The package version and the library versions a result records; importable from every layer."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__version__ = "0.1.0"


def versions() -> dict:
    """Versions of this package, Python and the libraries that decide numbers (for result configs)."""
    import kornia
    import torch
    import torchvision

    out = {"robustbench_geo": __version__, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "kornia": kornia.__version__, "python": platform.python_version()}
    pyg = sys.modules.get("torch_geometric")
    try:  # read from the installed metadata: image-only work never imports PyG
        out["torch_geometric"] = pyg.__version__ if pyg is not None else metadata.version("torch_geometric")
    except metadata.PackageNotFoundError:  # pragma: no cover
        pass
    return out
