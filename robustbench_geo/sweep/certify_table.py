"""The ``[certify.LABEL]`` tables of a sweep file: certification cells next to attack cells.

::

    [certify.rot30]                # a label you choose
    transform = "rotation"         # rotation, scaling or translation
    params = { max_angle_deg = 30 }  # the family's budget (min_scale/max_scale, max_shift_px)
    sigma = 0.5                    # smoothing noise (default: the model's training noise, else 0.25)
    samples = 1000                 # estimation samples per node; also n0, alpha, cells, substeps
    attack_points = 61             # grid points of the bracketing attacks (0: no attack)
    models = ["rot"]               # restrict to these model labels; default: every image model
    datasets = ["mnist"]           # evaluation datasets (labels); default: each model's own

Each table becomes an evaluation of kind ``"certificate"`` (named :data:`~robustbench_geo.sweep.store.CERTIFICATE` in the cell's
config) whose parameters are the keys above, so the cell hash, the store and resuming work as for
attacks; :func:`robustbench_geo.smoothing.certify_outcome` runs it.
"""

from __future__ import annotations

from robustbench_geo.check import check_number
from robustbench_geo.smoothing.families import FAMILIES, make_family
from robustbench_geo.smoothing.tss import SmoothingConfig
from robustbench_geo.sweep.store import CERTIFICATE

#: keys of a [certify.LABEL] table; all but transform/params/models/datasets are smoothing settings
CERTIFY_KEYS = {"transform", "params", "sigma", "samples", "n0", "alpha", "cells", "substeps", "batch_size",
                "attack_points", "attack_samples", "models", "datasets"}
_SETTINGS = {"sigma", "samples", "n0", "alpha", "cells", "substeps", "batch_size", "attack_points", "attack_samples"}


def parse_certify_tables(tables: dict, checker, datasets: dict, models: dict, attack_cfg) -> dict:
    """Validate the ``[certify.LABEL]`` tables and return ``{label: attack_cfg(...)}`` of kind ``"certificate"``."""
    out = {}
    for label, t in tables.items():
        p = f"certify.{label}"
        checker.keys(t, CERTIFY_KEYS, p)
        transform = t.get("transform", "rotation")
        if transform not in FAMILIES:
            checker.fail(f"{p}.transform", f"unknown transformation {transform!r}; expected one of {', '.join(FAMILIES)}")
        fam = checker.typed(t.get("params", {}), dict, f"{p}.params", "a table of the transformation's budget")
        try:
            make_family(transform, **fam)
        except (TypeError, ValueError) as e:
            checker.fail(f"{p}.params", str(e))
        settings = {k: t[k] for k in _SETTINGS if k in t}
        for k in ("attack_points", "attack_samples"):
            if k in t and (isinstance(t[k], bool) or not isinstance(t[k], int) or t[k] < 0):
                checker.fail(f"{p}.{k}", f"expected a non-negative integer, got {t[k]!r}")
        for k in ("samples", "n0", "cells", "substeps", "batch_size"):  # by their own names, with their line
            if k in t:
                try:
                    check_number(t[k], k, integer=True, low=1)
                except ValueError as e:
                    checker.fail(f"{p}.{k}", str(e))
        try:
            SmoothingConfig(**{("n" if k == "samples" else k): v for k, v in settings.items()
                               if k not in ("attack_points", "attack_samples")})
        except (TypeError, ValueError) as e:
            checker.fail(p, str(e))
        sel = {}
        for k, pool in (("datasets", datasets), ("models", models)):
            if k in t:
                vals = t[k] if isinstance(t[k], list) else [t[k]]
                for v in vals:
                    if v not in pool:
                        checker.fail(f"{p}.{k}", f"unknown {k[:-1]} label {v!r}; defined: {', '.join(pool)}")
                    if pool[v].task != "image":
                        checker.fail(f"{p}.{k}", f"certification applies to image data; {v!r} is {pool[v].task}")
                sel[k] = tuple(vals)
        params = {"transform": transform, "family": dict(fam), **settings}
        out[label] = attack_cfg(label, CERTIFICATE, "image", sel.get("datasets"), sel.get("models"), params, {}, {},
                                kind="certificate")
    return out
