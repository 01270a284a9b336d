"""The results files' one schema: version, kinds, key names, JSON encoding, and a reader for older files.

Three kinds of file are written, every one through :func:`write_json`:

* ``"model"``: the RobustBench-style per-model entry, written by the Python API
  (:meth:`~robustbench_geo.api.BenchmarkResult.to_json`) and by the report (``json/<model>.json``);
  built with :func:`model_entry` from rows of :func:`result_row`;
* ``"attack"``: the records of ``rbgeo attack --out``'s ``outcome.json`` (a list, one per seed);
* ``"certificate"``: ``rbgeo certify --out``'s ``outcome.json`` (one record, built with
  :func:`certificate_record`; its ``metrics`` are the rates of :data:`CERTIFICATE_RATES`, each with its
  interval, and ``n``).

Every record carries ``schema_version`` and ``kind``. Accuracies and rates are fractions in ``[0, 1]``;
``*_std`` is the sample standard deviation over seeds; a NaN is written as ``null``. An interval is named
``<key>_ci`` (:func:`ci_key`) and is ``[low, high]`` at 95 % in every kind, but which interval it is
depends on the kind, and the record says so in its ``units``:

* per-model entry: the Wilson score interval of the ``n`` samples pooled over seeds (:data:`UNITS`);
* certificate: the two-sided Clopper-Pearson (exact binomial) interval of the ``n`` test images
  (:data:`CERTIFICATE_UNITS`), whose coverage is at least 95 % for every true rate, as a certified
  bound wants (:func:`robustbench_geo.smoothing.binomial.proportion_interval`);
* attack records carry no intervals and no ``units`` (the report computes Wilson intervals from ``n``).

Where only numbers are kept (a sweep store's metrics, a report's summary columns) an interval is two
numbers, ``<key>_ci_low`` and ``<key>_ci_high`` (:func:`ci_bounds`); :func:`flat_intervals` and
:func:`paired_intervals` turn one form into the other.

Versions: 1 had no ``n`` or intervals; 2 added them (the API named them ``*_ci95``, the report
``*_ci``; ``outcome.json`` carried no version); 3 names a per-model entry's intervals ``*_ci``, stamps
every record with its version and kind, and writes a certificate's metrics flat, as the sweep store
kept them (``*_ci95_low``/``*_ci95_high``); 4 names a certificate's intervals ``*_ci`` (``[low, high]``)
like a per-model entry's and gives it ``units``. :func:`read_results` loads any of them in the current
layout, and :func:`current_key` renames an old store's certificate metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

#: version of every results file this package writes (see the module docstring for what each added)
JSON_SCHEMA_VERSION = 4

#: the kinds of results file
KINDS = ("model", "attack", "certificate")

#: the keys of one row of a per-model entry's ``results``, in the order they are written
RESULT_KEYS = ("dataset", "attack", "attack_name", "setting", "seeds", "n", "clean_acc", "clean_acc_std", "clean_acc_ci",
               "robust_acc", "robust_acc_std", "robust_acc_ci", "success_rate")

#: what the numbers of a per-model entry mean, written into it
UNITS = ("accuracies are fractions in [0, 1]; *_ci: 95 % Wilson score interval of the n samples pooled over seeds; "
         "*_std: std over seeds")

#: the rates of a certificate (fractions in [0, 1] of its ``n`` test images), each with its interval: certified
#: accuracy (a lower bound on robust accuracy), the smoothed classifier's clean accuracy, abstention and certified
#: rates, the base classifier's clean accuracy, and the grid attacks' accuracies on the smoothed and the base
#: classifier (upper bounds); the attacks' two are NaN when the certificate ran without them
CERTIFICATE_RATES = ("certified_accuracy", "smoothed_accuracy", "abstention_rate", "certified_rate",
                     "base_clean_accuracy", "smoothed_attack_accuracy", "base_attack_accuracy")

#: what the numbers of a certificate record mean, written into it
CERTIFICATE_UNITS = ("rates are fractions in [0, 1] of the n test images; *_ci: two-sided 95 % Clopper-Pearson "
                     "(exact binomial) interval of the n images; robust_accuracy is the certified accuracy (a lower "
                     "bound), clean_accuracy the base classifier's")

#: what an interval's key ends with: ``<key>_ci`` holds ``[low, high]``
CI = "_ci"
#: what an interval's key ended with in the API's version-2 entries, in certificates before version 4 and in
#: sweep stores written before it
_OLD_CI = "_ci95"


def ci_key(key: str) -> str:
    """The name of ``key``'s interval ``[low, high]``.

    >>> ci_key("certified_accuracy")
    'certified_accuracy_ci'
    """
    return key + CI


def ci_bounds(key: str) -> tuple[str, str]:
    """The names of ``key``'s interval bounds where only numbers are kept (a sweep store's metrics).

    >>> ci_bounds("certified_accuracy")
    ('certified_accuracy_ci_low', 'certified_accuracy_ci_high')
    """
    return ci_key(key) + "_low", ci_key(key) + "_high"


def flat_intervals(metrics: dict) -> dict:
    """``metrics`` with numbers only: each interval ``<key>_ci: [low, high]`` becomes ``<key>_ci_low`` and
    ``<key>_ci_high`` (in its place), as a sweep store keeps them.

    >>> flat_intervals({"certified_accuracy": 0.5, "certified_accuracy_ci": [0.1, 0.9], "n": 4})
    {'certified_accuracy': 0.5, 'certified_accuracy_ci_low': 0.1, 'certified_accuracy_ci_high': 0.9, 'n': 4}
    """
    flat = {}
    for k, v in metrics.items():
        if k.endswith(CI) and isinstance(v, (list, tuple)) and len(v) == 2:
            flat[k + "_low"], flat[k + "_high"] = v
        else:
            flat[k] = v
    return flat


def paired_intervals(metrics: dict) -> dict:
    """The inverse of :func:`flat_intervals`: ``<key>_ci_low`` and ``<key>_ci_high`` become ``<key>_ci: [low, high]``
    (where the low bound was; a bound without its partner is kept as it is).

    >>> paired_intervals({"certified_accuracy_ci_low": 0.1, "certified_accuracy_ci_high": 0.9, "n": 4})
    {'certified_accuracy_ci': [0.1, 0.9], 'n': 4}
    """
    paired = {}
    for k, v in metrics.items():
        for end, partner in (("_low", "_high"), ("_high", "_low")):
            base = k[:-len(end)]
            if k.endswith(CI + end) and base + partner in metrics:
                if end == "_low":
                    paired[base] = [v, metrics[base + partner]]
                break
        else:
            paired[k] = v
    return paired


def current_key(name: str) -> str:
    """A key's name as version 4 has it: ``*_ci95`` (version 2's ``[low, high]``, in the API's entries and in
    certificates) and ``*_ci95_low``/``*_ci95_high`` (version-3 certificates, and sweep stores written before
    version 4) become ``*_ci``, ``*_ci_low``, ``*_ci_high``; any other name is kept.

    >>> current_key("robust_acc_ci95"), current_key("certified_accuracy_ci95_low"), current_key("n")
    ('robust_acc_ci', 'certified_accuracy_ci_low', 'n')
    """
    for end in ("", "_low", "_high"):
        if name.endswith(_OLD_CI + end):
            return name[:len(name) - len(_OLD_CI + end)] + CI + end
    return name


class SchemaError(ValueError):
    """A results file that is not one of the kinds this schema describes, or from a newer package."""


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


def result_row(*, dataset, attack, attack_name, setting, seeds: int, n, clean_acc, clean_ci, robust_acc, robust_ci,
               success_rate, clean_std=None, robust_std=None) -> dict:
    """One row of a per-model entry's ``results``: accuracies as fractions (NaN -> ``None``), intervals as pairs.

    >>> row = result_row(dataset="mnist", attack="grid", attack_name="grid", setting="-", seeds=1, n=100,
    ...                  clean_acc=0.99, clean_ci=(0.95, 1.0), robust_acc=float("nan"), robust_ci=(None, None),
    ...                  success_rate=0.5)
    >>> row["robust_acc"], row["clean_acc_ci"], list(row) == list(RESULT_KEYS)
    (None, [0.95, 1.0], True)
    """
    n = finite_or_none(n)
    return {"dataset": dataset, "attack": attack, "attack_name": attack_name, "setting": setting, "seeds": int(seeds),
            "n": int(n) if n is not None and n.is_integer() else n, "clean_acc": finite_or_none(clean_acc), "clean_acc_std": finite_or_none(clean_std),
            "clean_acc_ci": [finite_or_none(v) for v in clean_ci], "robust_acc": finite_or_none(robust_acc),
            "robust_acc_std": finite_or_none(robust_std), "robust_acc_ci": [finite_or_none(v) for v in robust_ci],
            "success_rate": finite_or_none(success_rate)}


def model_entry(*, name: str, model, clean_acc, results: list[dict], seeds: list, versions: dict, **extra) -> dict:
    """The per-model entry (kind ``"model"``): ``robust_acc_worst`` is the lowest robust accuracy of ``results``.

    ``extra`` holds the writer's own fields (the API's ``config``, the report's ``sweep`` and ``training``).
    """
    worst = min((r["robust_acc"] for r in results if r["robust_acc"] is not None), default=None)
    return {"schema_version": JSON_SCHEMA_VERSION, "kind": "model", "name": name, "model": model,
            "clean_acc": finite_or_none(clean_acc), "robust_acc_worst": worst, "results": results, "seeds": seeds,
            "versions": versions, **extra, "units": UNITS}


def certificate_record(*, transform: dict, metrics: dict, **extra) -> dict:
    """A certificate record (kind ``"certificate"``): ``metrics`` with its intervals as ``<rate>_ci: [low, high]``
    (flat ``<rate>_ci_low``/``<rate>_ci_high``, as a sweep cell keeps them, are paired) and :data:`CERTIFICATE_UNITS`.

    ``extra`` holds the writer's own fields (``config``, ``params``, ``checkpoint``, ``dataset``, ``seed``, ...).
    """
    return stamped("certificate", {"transform": transform, **extra, "metrics": paired_intervals(metrics),
                                   "units": CERTIFICATE_UNITS})


def stamped(kind: str, record: dict) -> dict:
    """``record`` with this package's ``schema_version`` and its ``kind`` in front."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return {"schema_version": JSON_SCHEMA_VERSION, "kind": kind, **record}


def _without_nan(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _without_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_without_nan(v) for v in obj]
    return obj


def dumps(doc, indent: int = 2) -> str:
    """The JSON text of a results document: tensors as lists (:func:`json_default`), NaN as ``null``.

    >>> dumps({"acc": float("nan"), "ci": (0.1, 0.2)}, indent=None)
    '{"acc": null, "ci": [0.1, 0.2]}'
    """
    return json.dumps(_without_nan(doc), indent=indent, default=json_default)


def write_json(path: str | Path, doc, indent: int = 2) -> str:
    """Check ``doc`` with :func:`validate`, write it to ``path`` and return its text."""
    validate(doc)
    text = dumps(doc, indent)
    Path(path).write_text(text)
    return text


def _records(doc) -> list[dict]:
    return doc if isinstance(doc, list) else [doc]


def validate(doc) -> None:
    """Raise :class:`SchemaError` unless ``doc`` is a current results document of a known kind."""
    records = _records(doc)
    if not records or not all(isinstance(r, dict) for r in records):
        raise SchemaError(f"expected a results record (a JSON object) or a non-empty list of them, got {type(doc).__name__}")
    for r in records:
        if r.get("schema_version") != JSON_SCHEMA_VERSION or r.get("kind") not in KINDS:
            raise SchemaError(f"expected schema_version {JSON_SCHEMA_VERSION} and a kind in {', '.join(KINDS)}, got "
                              f"schema_version {r.get('schema_version')!r}, kind {r.get('kind')!r}")
        need = {"model": ("name", "clean_acc", "robust_acc_worst", "results", "units"),
                "attack": ("attack", "params", "seed", "metrics"), "certificate": ("transform", "metrics")}[r["kind"]]
        missing = [k for k in need if k not in r]
        if missing:
            raise SchemaError(f"a {r['kind']!r} record without {', '.join(missing)}")
        for row in r.get("results", []) if r["kind"] == "model" else []:
            if set(row) != set(RESULT_KEYS):
                raise SchemaError(f"a result row with keys {sorted(row)}, expected {list(RESULT_KEYS)}")
            _check_intervals({k: row[k] for k in (ci_key("clean_acc"), ci_key("robust_acc"))})
        if r["kind"] == "certificate":
            _check_intervals(r["metrics"])


def _check_intervals(values: dict) -> None:
    for k, ci in values.items():
        if k.endswith(CI) and not (isinstance(ci, list) and len(ci) == 2):
            raise SchemaError(f"{k}: expected [low, high], got {ci!r}")


def kind_of(record: dict) -> str:
    """The kind of one record, stamped or (before version 3) told by its keys."""
    if record.get("kind") in KINDS:
        return record["kind"]
    if "results" in record:
        return "model"
    if "transform" in record and "metrics" in record:
        return "certificate"
    if "attack" in record and "metrics" in record:
        return "attack"
    raise SchemaError(f"not a results record of this package (keys {sorted(record)[:6]}): expected a per-model entry "
                      f"or an outcome.json of rbgeo attack or rbgeo certify")


def _upgrade(record: dict) -> dict:
    version = record.get("schema_version", 2 if "results" not in record else 1)
    if not isinstance(version, int) or version > JSON_SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version!r} is newer than this package's {JSON_SCHEMA_VERSION}: "
                          f"upgrade robustbench_geo to read it")
    kind = kind_of(record)
    out = {k: v for k, v in record.items() if k not in ("schema_version", "kind")}
    if kind == "model":
        rows = []
        for row in out.get("results", []):
            row = {current_key(k): v for k, v in row.items()}
            rows.append({k: row.get(k, [None, None] if k.endswith("_ci") else None) for k in RESULT_KEYS})
        out["results"] = rows
        out.setdefault("units", UNITS)
    elif kind == "certificate":
        out["metrics"] = _current_certificate_metrics(out.get("metrics", {}))
        out.setdefault("units", CERTIFICATE_UNITS)
    return stamped(kind, out)


def _current_certificate_metrics(metrics: dict) -> dict:
    """Certificate metrics of any version as version 4 writes them: the intervals named ``*_ci`` (version 2's
    ``*_ci95``) and paired (version 3's flat ``*_ci95_low``/``*_ci95_high``); ``clean_accuracy`` and
    ``robust_accuracy`` (which version 2 lacked) are the base classifier's clean accuracy and the certified accuracy."""
    out = paired_intervals({current_key(k): v for k, v in metrics.items()})
    for key, source in (("clean_accuracy", "base_clean_accuracy"), ("robust_accuracy", "certified_accuracy")):
        if source in out:
            out.setdefault(key, out[source])
    return out


def read_results(source):
    """Load a results file of any version in the current layout (:data:`JSON_SCHEMA_VERSION`).

    Args:
        source: a path, JSON text, or the already parsed document.

    Returns:
        The document as a writer of this version would write it: a per-model entry or a certificate
        record (dicts), or ``rbgeo attack``'s list of records; version-2 ``*_ci95`` intervals and
        version-3 certificates' ``*_ci95_low``/``*_ci95_high`` become ``*_ci: [low, high]``, and a
        version-1 row without ``n`` or intervals gets ``None`` for them.

    Raises:
        SchemaError: a document of no known kind, or one written by a newer package.

    >>> doc = read_results('{"schema_version": 2, "name": "m", "clean_acc": 0.9, "robust_acc_worst": 0.5,'
    ...                    ' "results": [{"robust_acc": 0.5, "robust_acc_ci95": [0.4, 0.6]}]}')
    >>> doc["schema_version"], doc["kind"], doc["results"][0]["robust_acc_ci"], doc["results"][0]["clean_acc_ci"]
    (4, 'model', [0.4, 0.6], [None, None])
    """
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        doc = json.loads(Path(source).read_text())
    elif isinstance(source, str):
        doc = json.loads(source)
    else:
        doc = source
    if isinstance(doc, list):
        return [_upgrade(r) for r in doc]
    if not isinstance(doc, dict):
        raise SchemaError(f"expected a JSON object or list of records, got {type(doc).__name__}")
    return _upgrade(doc)
