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
