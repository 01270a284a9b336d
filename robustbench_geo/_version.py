"""The package version and the library versions a result records; importable from every layer."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict:
    """Versions of this package, Python and the libraries that decide numbers (for result configs)."""
    import kornia
    import torch
    import torchvision

    out = {"robustbench_geo": __version__, "torch": torch.__version__,
           "torchvision": torchvision.__version__, "kornia": kornia.__version__, "python": platform.python_version()}
    try:
        import torch_geometric

        out["torch_geometric"] = torch_geometric.__version__
    except ImportError:  # pragma: no cover
        pass
    return out
