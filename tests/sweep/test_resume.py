"""Interrupted sweeps: SIGKILL mid-run, then re-run: nothing lost, nothing duplicated, nothing redone."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from robustbench_geo.sweep import ResultStore, load_config, run_sweep
from tests.sweep.conftest import tiny_toml


def _done(path) -> int:
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_kill_and_resume(tmp_path, ckpt_cache):
    out = tmp_path / "out"
    toml = tmp_path / "sweep.toml"
    toml.write_text(tiny_toml(out, seeds=(0, 1, 2, 3), cache=ckpt_cache))
    cmd = [sys.executable, "-m", "robustbench_geo", "sweep", str(toml), "--quiet", "--no-report", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while _done(out / "results.sqlite") < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait()
    with ResultStore(out, "tiny") as store:
        before = {r["hash"]: r for r in store.cells()}
    done_before = {h for h, r in before.items() if r["status"] == "done"}
    assert 1 <= len(done_before) < 4 and len(before) == 4
    assert any(r["status"] == "running" for r in before.values())  # the cell in flight, owned by a dead process

    summary = run_sweep(load_config(toml), progress=False, report=False, threads=1)
    assert summary.skipped_done == len(done_before)
    assert len(summary.ran) == 4 - len(done_before) and not summary.failed
    with ResultStore(out, "tiny") as store:
        after = store.cells()
        assert store.integrity() == "ok"
        assert store.conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 4
        assert store.conn.execute("SELECT COUNT(*) FROM metrics WHERE name = 'robust_accuracy'").fetchone()[0] == 4
    assert {r["status"] for r in after} == {"done"}
    for r in after:
        if r["hash"] in done_before:  # finished cells were not run again
            assert r["finished"] == before[r["hash"]]["finished"] and r["attempts"] == 1
    # a third run has nothing left to do
    again = run_sweep(load_config(toml), progress=False, report=False)
    assert again.ran == [] and again.skipped_done == 4
