"""The results schema: the API's entry is written and validated, and files of the older versions still load.

The version-2 files under ``tests/results_v2/`` were written by the package before version 3 (the API's
``to_json``, the report's ``json/<model>.json`` of a small sweep, and ``outcome.json`` of
``rbgeo attack`` and ``rbgeo certify``), unchanged since; ``tests/results_v3/certify_outcome_v3.json`` is
``rbgeo certify``'s ``outcome.json`` written before version 4 (its intervals flat, ``*_ci95_low``/``*_ci95_high``).
The report and the two commands write the current version in their own tests (tests/report/test_report.py,
tests/cli/test_attack_image.py, tests/cli/test_certify.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import robustbench_geo as rbg
from robustbench_geo.results_schema import (
    CERTIFICATE_RATES, CERTIFICATE_UNITS, JSON_SCHEMA_VERSION, RESULT_KEYS, SchemaError, certificate_record, dumps,
    read_results, stamped, validate, write_json,
)

OLD = Path(__file__).parent / "results_v2"
V3 = Path(__file__).parent / "results_v3"


def test_api_entry_is_written_in_the_current_schema_and_validates(tmp_path, mnist_test):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    x, y = mnist_test.images[:12], mnist_test.labels[:12]
    res = rbg.evaluate(net, (x, y), "grid", max_angle_deg=10, angle_steps=3, shift_steps=1)
    text = res.to_json(tmp_path / "entry.json")
    doc = json.loads((tmp_path / "entry.json").read_text())
    assert json.loads(text) == doc and "NaN" not in text
    validate(doc)
    assert doc["schema_version"] == JSON_SCHEMA_VERSION == 4 and doc["kind"] == "model"
    (row,) = doc["results"]
    assert list(row) == list(RESULT_KEYS) and row["n"] == 12
    for key, acc in (("clean_acc", res.clean_accuracy), ("robust_acc", res.robust_accuracy)):
        assert row[key] == acc.value and row[f"{key}_ci"] == [acc.low, acc.high]
        assert row[f"{key}_ci"][0] <= row[key] <= row[f"{key}_ci"][1]
    assert doc["robust_acc_worst"] == row["robust_acc"] and read_results(tmp_path / "entry.json") == doc


def test_version_2_api_entry_loads_with_the_unified_interval_names():
    raw = json.loads((OLD / "api_result_v2.json").read_text())
    assert raw["schema_version"] == 2 and "robust_acc_ci95" in raw["results"][0]
    doc = read_results(OLD / "api_result_v2.json")
    validate(doc)
    (row,) = doc["results"]
    assert doc["kind"] == "model" and doc["schema_version"] == 4
    assert row["robust_acc_ci"] == raw["results"][0]["robust_acc_ci95"]
    assert row["clean_acc_ci"] == raw["results"][0]["clean_acc_ci95"]
    assert row["clean_acc_std"] is None and row["robust_acc"] == raw["results"][0]["robust_acc"]
    assert doc["config"] == raw["config"]


def test_version_2_report_entry_loads_unchanged_in_its_numbers():
    raw = json.loads((OLD / "report_model_v2.json").read_text())
    doc = read_results(json.dumps(raw))
    validate(doc)
    assert doc["kind"] == "model" and doc["name"] == raw["name"] and raw["schema_version"] == 2
    assert [{k: r[k] for k in raw["results"][0]} for r in doc["results"]] == raw["results"]
    assert doc["robust_acc_worst"] == raw["robust_acc_worst"] and doc["sweep"] == raw["sweep"]


def test_version_2_outcome_files_load():
    attack = read_results(OLD / "attack_outcome_v2.json")
    validate(attack)
    assert isinstance(attack, list) and [r["kind"] for r in attack] == ["attack"]
    assert attack[0]["attack"] == "grid" and 0 <= attack[0]["metrics"]["robust_accuracy"] <= 1
    cert = read_results(OLD / "certify_outcome_v2.json")
    validate(cert)
    raw_doc = json.loads((OLD / "certify_outcome_v2.json").read_text())
    assert cert["kind"] == "certificate" and cert["transform"] == raw_doc["transform"] and cert["metrics"]["n"] == 2
    raw, m = raw_doc["metrics"], cert["metrics"]
    assert m["certified_accuracy_ci"] == raw["certified_accuracy_ci95"]
    assert m["robust_accuracy"] == raw["certified_accuracy"] and m["clean_accuracy"] == raw["base_clean_accuracy"]


def test_version_3_certificate_loads_with_paired_intervals():
    raw = json.loads((V3 / "certify_outcome_v3.json").read_text())
    assert raw["schema_version"] == 3 and raw["kind"] == "certificate" and "certified_accuracy_ci95_low" in raw["metrics"]
    cert = read_results(V3 / "certify_outcome_v3.json")
    validate(cert)
    m, old = cert["metrics"], raw["metrics"]
    assert cert["schema_version"] == JSON_SCHEMA_VERSION and cert["units"] == CERTIFICATE_UNITS
    for rate in CERTIFICATE_RATES:  # every rate keeps its number and its interval, under the one name
        assert m[rate] == old[rate]
        assert m[f"{rate}_ci"] == [old[f"{rate}_ci95_low"], old[f"{rate}_ci95_high"]]
    assert not [k for k in m if "ci95" in k or k.endswith(("_low", "_high"))]
    assert {k: v for k, v in m.items() if not k.endswith("_ci")} == {
        k: v for k, v in old.items() if "_ci95" not in k}  # n, counts, clean and robust accuracy unchanged
    assert {k: cert[k] for k in ("transform", "config", "params", "seed")} == {
        k: raw[k] for k in ("transform", "config", "params", "seed")}


def test_a_certificate_record_pairs_a_cells_flat_intervals(tmp_path):
    flat = {"n": 4, "certified_accuracy": 0.25, "certified_accuracy_ci_low": 0.01, "certified_accuracy_ci_high": 0.8,
            "robust_accuracy": 0.25}
    text = write_json(tmp_path / "c.json", certificate_record(transform={"transform": "rotation"}, metrics=flat, seed=0))
    doc = json.loads(text)
    assert doc["metrics"] == {"n": 4, "certified_accuracy": 0.25, "certified_accuracy_ci": [0.01, 0.8],
                              "robust_accuracy": 0.25}
    assert doc["kind"] == "certificate" and doc["units"] == CERTIFICATE_UNITS and read_results(text) == doc
    with pytest.raises(SchemaError, match=r"certified_accuracy_ci: expected \[low, high\], got 0.01"):
        validate(stamped("certificate", {"transform": {}, "metrics": {"certified_accuracy_ci": 0.01}}))


def test_a_version_1_row_gets_empty_intervals():
    doc = read_results({"schema_version": 1, "name": "m", "clean_acc": 0.9, "robust_acc_worst": 0.4,
                        "results": [{"dataset": "mnist", "attack": "grid", "robust_acc": 0.4, "clean_acc": 0.9}]})
    validate(doc)
    assert doc["results"][0]["clean_acc_ci"] == [None, None] and doc["results"][0]["n"] is None


def test_bad_documents_are_refused_in_one_line(tmp_path):
    with pytest.raises(SchemaError, match="newer than this package's 4"):
        read_results({"schema_version": 9, "name": "m", "results": []})
    with pytest.raises(SchemaError, match="not a results record"):
        read_results({"hello": 1})
    with pytest.raises(SchemaError, match="without metrics"):
        write_json(tmp_path / "x.json", stamped("attack", {"attack": "grid", "params": {}, "seed": 0}))
    assert not (tmp_path / "x.json").exists()  # nothing written on bad input
    with pytest.raises(ValueError, match="expected one of model, attack, certificate"):
        stamped("sweep", {})
    assert dumps({"v": float("nan")}, indent=None) == '{"v": null}'
