"""Sweeps: models x attacks x budgets x seeds from one TOML file, resumable, with reports.

>>> from robustbench_geo.report import write_report                 # doctest: +SKIP
>>> from robustbench_geo.sweep import load_config, run_sweep      # doctest: +SKIP
>>> summary = run_sweep(load_config("quick"), report=write_report)  # doctest: +SKIP

See :mod:`robustbench_geo.sweep.config` for the file format, :mod:`~robustbench_geo.sweep.cells` for cells
and their keys, :mod:`~robustbench_geo.sweep.store`
for the results store and :mod:`~robustbench_geo.sweep.executors` for local/Ray execution.
Names are imported on first use, so ``robustbench_geo.sweep.store`` loads without torch.
"""

import importlib

_EXPORTS = {
    "Cell": "cells", "SweepConfig": "config", "SweepConfigError": "config", "expand": "cells",
    "list_presets": "config", "load_config": "config", "parse_config": "config",
    "SweepSummary": "driver", "run_sweep": "driver", "estimate_sweep": "timing",
    "ResultStore": "store", "StoreError": "store",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"robustbench_geo.sweep.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'robustbench_geo.sweep' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
