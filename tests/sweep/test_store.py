"""The results store: statuses, numbers as REAL, compatibility checks, stale claims, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys

import pytest

from robustbench_geo.sweep import ResultStore, StoreError, expand, parse_config
from tests.sweep.conftest import tiny_toml
from tests.sweep.store_writer import write


def _cells(tmp_path, seeds=(0, 1, 2)):
    return expand(parse_config(tiny_toml(tmp_path, seeds=seeds)))


def test_register_claim_finish(tmp_path):
    cells = _cells(tmp_path)
    with ResultStore(tmp_path, "tiny") as store:
        assert store.register(cells) == 3
        assert store.register(cells) == 0  # idempotent
        assert store.claim(cells[0].hash)
        assert store.claim(cells[0].hash)  # the owner may re-claim its own cell
        store.finish(cells[0].hash, {"clean_accuracy": 1, "robust_accuracy": 0.5, "flag": True, "nan": float("nan")},
                     seconds=1.5, artefact_dir="cells/x")
        assert not store.claim(cells[0].hash)  # done cells are never run again
        assert store.status_counts() == {"done": 1, "pending": 2}
        row = store.get(cells[0].hash[:10])
        assert row["metrics"] == {"clean_accuracy": 1.0, "robust_accuracy": 0.5, "flag": 1.0, "nan": None}
        types = {t for (t,) in store.conn.execute("SELECT typeof(value) FROM metrics")}
        assert types == {"real", "null"}
        with pytest.raises(TypeError, match="expected a number, got the string"):
            store.finish(cells[1].hash, {"acc": "0.5"}, seconds=1)
        with pytest.raises(sqlite3.IntegrityError):  # the schema itself refuses text metrics
            store.conn.execute("INSERT INTO metrics VALUES (?, 'x', 'text')", (cells[1].hash,))


def test_incompatible_stores_are_refused(tmp_path):
    ResultStore(tmp_path / "a", "one").close()
    with pytest.raises(StoreError, match="holds the store of sweep 'one', not 'two'"):
        ResultStore(tmp_path / "a", "two")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite results store"):
        ResultStore(tmp_path / "b", "one")
    with ResultStore(tmp_path / "c", "one") as s:
        s.conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="has store schema '999'"):
        ResultStore(tmp_path / "c", "one")
    with pytest.raises(StoreError, match="no results store"):
        ResultStore(tmp_path / "d", create=False)


def test_claims_of_dead_processes_are_reclaimed(tmp_path):
    cells = _cells(tmp_path, seeds=(0,))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    with ResultStore(tmp_path, "tiny") as store:
        store.register(cells)
        assert store.claim(cells[0].hash, owner=f"{socket.gethostname()}:{int(dead.stdout)}")
        assert store.claim(cells[0].hash)  # its owner is dead
        assert not store.claim(cells[0].hash, owner=f"{socket.gethostname()}:1")  # now owned by this live process
        assert store.get(cells[0].hash)["attempts"] == 2


def test_concurrent_writers(tmp_path):
    """Four processes race over the same 40 cells: each cell ends done exactly once, the file stays intact."""
    cells = expand(parse_config(tiny_toml(tmp_path, seeds=tuple(range(40)))))
    with ResultStore(tmp_path, "tiny") as store:
        store.register(cells)
    hashes = [c.hash for c in cells]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=write, args=(tmp_path, hashes[::-1] if i % 2 else hashes, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with ResultStore(tmp_path, "tiny") as store:
        assert store.integrity() == "ok"
        rows = store.cells()
        assert len(rows) == 40 and {r["status"] for r in rows} == {"done"}
        assert all(r["attempts"] == 1 for r in rows)  # nobody ran a cell another process had claimed
        n_metrics = store.conn.execute("SELECT COUNT(*), COUNT(DISTINCT hash) FROM metrics").fetchone()
        assert tuple(n_metrics) == (80, 40)
