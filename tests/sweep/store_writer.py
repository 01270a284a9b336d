"""A store writer for the concurrent-writers test, in its own module so that spawned processes import
only the store (not the sweep config, which loads torch and the registries)."""

from __future__ import annotations


def write(folder, hashes, offset):
    from robustbench_geo.sweep.store import ResultStore

    with ResultStore(folder, "tiny") as store:
        for i, h in enumerate(hashes):
            if store.claim(h):
                store.finish(h, {"robust_accuracy": (i + offset) / 100, "clean_accuracy": 1.0}, seconds=0.01)
