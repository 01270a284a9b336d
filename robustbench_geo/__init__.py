"""robustbench_geo: geometric adversarial robustness for image and graph models.

>>> import robustbench_geo as rbg                                        # doctest: +SKIP
>>> result = rbg.benchmark(model, data=(x, y), threat_model="rotation-translation")  # doctest: +SKIP

The public names below are imported on first use, so ``import robustbench_geo.data`` (or the
CLI's ``--help``) does not load every layer.
"""

import importlib

from robustbench_geo._version import __version__

_API = (
    "Accuracy", "BenchmarkResult", "benchmark", "create_model", "evaluate", "list_attacks", "list_models",
    "list_threat_models", "load_checkpoint", "load_dataset", "load_model",
)
# certification (a lower bound beside the attacks' upper bounds): robustbench_geo.smoothing
_CERTIFY = ("certify", "evaluate_certification", "SmoothingConfig")


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module("robustbench_geo.api"), name)
    if name in _CERTIFY:
        return getattr(importlib.import_module("robustbench_geo.smoothing"), name)
    raise AttributeError(f"module 'robustbench_geo' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API, *_CERTIFY])


__all__ = ["__version__", *_API, *_CERTIFY]
