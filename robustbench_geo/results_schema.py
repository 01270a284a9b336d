"""The results files' shared vocabulary: the schema version of the per-model JSON and its JSON encoding.

The Python API's :meth:`~robustbench_geo.api.BenchmarkResult.to_json`, the report's
``json/<model>.json`` and the attack runners' JSON artefacts encode with :func:`json_default` and
write numbers through :func:`finite_or_none`, so a tensor, an array or a NaN is written the same
way by every writer.
"""

from __future__ import annotations

import math

#: version of the per-model JSON layout (``<model>.json``, ``BenchmarkResult.to_dict``); 2 added ``n`` and the intervals
JSON_SCHEMA_VERSION = 2


def json_default(o):
    """``json.dumps`` hook: tensors and arrays as nested lists, sets as lists, anything else as its ``str``.

    >>> import json
    >>> json.dumps({"ids": {3}, "path": __import__("pathlib").Path("a/b")}, default=json_default)
    '{"ids": [3], "path": "a/b"}'
    """
    if hasattr(o, "tolist") and callable(o.tolist):  # torch.Tensor, numpy arrays and scalars
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def finite_or_none(v) -> float | None:
    """A number for a JSON file: ``None`` for a missing value or NaN (JSON has no NaN), else a float.

    >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(None)
    (0.5, None, None)
    """
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v
