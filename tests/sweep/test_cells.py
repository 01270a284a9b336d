"""Every preset's cells keep their hashes: a finished cell of a preset is found again by later versions of the code.

``preset_cell_hashes.json`` holds, per preset, each cell's ``[hash, train_hash]`` in expansion order, as the
code computed them before the sweep parser stopped reading weights; the package version (part of every hash)
is held at the one they were computed with, so that a release does not fail this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import robustbench_geo.sweep.cells as cells_module
from robustbench_geo.sweep import expand, load_config

PINNED = json.loads((Path(__file__).parent / "preset_cell_hashes.json").read_text())
PINNED_VERSION = "0.1.0"


@pytest.mark.parametrize("preset", sorted(PINNED))
def test_preset_cell_hashes_are_unchanged(preset, monkeypatch):
    monkeypatch.setattr(cells_module, "__version__", PINNED_VERSION)
    got = [[c.hash, c.train_hash] for c in expand(load_config(preset))]
    assert len(got) == len(PINNED[preset])
    assert got == PINNED[preset]


#: a sweep with an attack and two certificates; its cells' hashes were computed before certificates became
#: their own kind of evaluation (when a certificate was the pseudo-attack ``certify``), at PINNED_VERSION
CERTIFY_SWEEP = """
[sweep]
name = "pin"
seeds = [0]
[datasets.mnist]
spec = "mnist"
train_subset = 128
test_subset = 4
[models.small]
model = "small_cnn"
dataset = "mnist"
epochs = 1
[attacks.grid]
attack = "grid"
[certify.rot]
transform = "rotation"
params = { max_angle_deg = 20 }
samples = 50
n0 = 20
attack_points = 5
[certify.shift]
transform = "translation"
params = { max_shift_px = 2 }
"""
CERTIFY_HASHES = {
    "grid": "9ab809dd96130b6caa66646a3cb3ff02f4344b0cba1fdfdecdeccec9916ed02e",
    "rot": "140fd2b29393a9465b67d94e8d563b592f8025fbeb2746db1d03cc71f5f414c3",
    "shift": "2a30764b935a66b4519bc94a0f1cbc535c5273d77665dab2d48979217e16fdf4",
}
CERTIFY_TRAIN_HASH = "bbb80dfdee77d3c00b272891283e082a8960636dbf98f5fda70c45a17cb4947c"
#: the ``attack`` part of the certificate cell ``rot`` as stores written before then hold it
OLD_STORED_ROT = {"grid_point": {}, "label": "rot", "name": "certify", "params": {
    "attack_points": 5, "family": {"max_angle_deg": 20}, "n0": 20, "samples": 50, "transform": "rotation"},
    "runner": {"n": 4}}


def test_certificate_cell_hashes_are_unchanged(monkeypatch):
    from robustbench_geo.attacks import list_attacks
    from robustbench_geo.sweep.config import parse_config
    from robustbench_geo.sweep.store import CERTIFICATE

    monkeypatch.setattr(cells_module, "__version__", PINNED_VERSION)
    cells = expand(parse_config(CERTIFY_SWEEP))
    assert {c.attack_label: c.hash for c in cells} == CERTIFY_HASHES
    assert {c.train_hash for c in cells} == {CERTIFY_TRAIN_HASH}
    # the kind keys no cell: the certificate's name does, and no attack may be registered under it
    assert {c.attack_label: c.config["attack"]["kind"] for c in cells} == {
        "grid": "attack", "rot": "certificate", "shift": "certificate"}
    assert {c.config["attack"]["name"] for c in cells if c.config["attack"]["kind"] == "certificate"} == {CERTIFICATE}
    assert CERTIFICATE not in list_attacks()


def test_a_store_written_before_certificates_had_a_kind_resumes_and_reports(monkeypatch, tmp_path):
    """A done certificate cell stored in the old form (no kind; its intervals named ``*_ci95_low``/``*_ci95_high``,
    as before results schema 4) is found again by its hash and reported as a certificate with its interval."""
    from robustbench_geo.report.certify import certification_rows
    from robustbench_geo.report.compare import threat_models
    from robustbench_geo.report.tables import cells_frame
    from robustbench_geo.sweep.config import parse_config
    from robustbench_geo.sweep.store import ResultStore

    monkeypatch.setattr(cells_module, "__version__", PINNED_VERSION)
    cells = {c.attack_label: c for c in expand(parse_config(CERTIFY_SWEEP))}
    rot = cells["rot"]
    old = type(rot)(rot.hash, rot.train_hash, rot.model_label, rot.attack_label, rot.dataset_label, rot.seed,
                    {**rot.config, "attack": OLD_STORED_ROT})
    metrics = {"n": 4.0, "certified_accuracy": 0.5, "certified_accuracy_ci95_low": 0.1,
               "certified_accuracy_ci95_high": 0.9, "clean_accuracy": 0.75, "robust_accuracy": 0.5}
    with ResultStore(tmp_path, "pin") as store:
        store.register([old])
        assert store.claim(old.hash)
        store.finish(old.hash, metrics, seconds=1.0)
        assert sorted(k for k in store.get(old.hash)["metrics"] if "_ci" in k) == [
            "certified_accuracy_ci_high", "certified_accuracy_ci_low"]  # read under the current names
        frame = cells_frame(store.cells())
        assert list(frame["kind"]) == ["certificate"]  # read from the old form
        rows = certification_rows(frame)
        assert [(r["certify"], r["certified"]) for r in rows] == [("rot", "50.0 % [10.0, 90.0]")]
        assert threat_models(frame) == []  # a certificate is no attack's threat model
        assert store.register(list(cells.values())) == 2  # resuming: the stored certificate is found by its hash
        assert store.status_counts() == {"done": 1, "pending": 2}
        rows = certification_rows(cells_frame(store.cells()))
        assert [(r["certify"], r["certified"]) for r in rows] == [("rot", "50.0 % [10.0, 90.0]")]
