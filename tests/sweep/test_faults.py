"""Faults around a sweep: ``kill -9`` of the driver, worker processes, the kernel cache, downloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sweep.conftest import tiny_toml

SLOW_PLUGIN = '''
import time


def slow(**kwargs):
    time.sleep(300)  # a cell that is still running when its driver is killed
'''

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_driver_ends_its_workers(tmp_path):
    """``rbgeo sweep --jobs 2`` killed with SIGKILL leaves no worker process behind (issue item 8)."""
    (tmp_path / "slow.py").write_text(SLOW_PLUGIN)
    text = tiny_toml(tmp_path / "out", cache=tmp_path / "cache", seeds=(0, 1)).replace(
        'model = "cnn"', f'model = "{tmp_path}/slow.py:slow"')
    (tmp_path / "s.toml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "robustbench_geo", "sweep", str(tmp_path / "s.toml"), "--jobs", "2",
                               "--quiet", "--no-report"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers: list[int] = []
    everyone: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            workers = [p for p in _children(driver.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            if len(workers) >= 2 and (tmp_path / "out" / "results.sqlite").exists():
                break
            time.sleep(0.5)
        assert driver.poll() is None and len(workers) >= 2, f"workers did not start: {workers}"
        time.sleep(1.5)  # the workers are inside the sleeping factory
        everyone = _children(driver.pid)  # workers and multiprocessing's resource tracker
        everyone += [p for w in everyone for p in _children(w)]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in everyone):
            time.sleep(0.2)
        assert not [p for p in everyone if _alive(p)], "worker processes survived their parent"
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in everyone or workers:  # never leave a sleeping worker behind, even on failure
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_truncated_kernel_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    """A cached kernel ``.so`` that does not match its build record is rebuilt (no SIGBUS)."""
    import ctypes
    import shutil

    from robustbench_geo.ops import _deform_kernel as k

    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("RBGEO_CACHE", str(tmp_path))
    lib = k._build(compiler)
    stamp = k._stamp_path(lib)
    assert stamp.read_text().split()[0] == str(lib.stat().st_size)
    lib.write_bytes(lib.read_bytes()[: lib.stat().st_size // 3])  # truncated in place, record kept
    with pytest.warns(RuntimeWarning, match="does not match its build record"):
        again = k._build(compiler)
    assert again == lib and k._intact(lib) and ctypes.CDLL(str(lib)).rbgeo_dcn_abi_version() == 1
    stamp.unlink()  # a library without a record (e.g. from an older version) is not trusted either
    with pytest.warns(RuntimeWarning):
        k._build(compiler)
    assert stamp.exists()


def test_failed_download_leaves_no_folders(tmp_path):
    """A load that fails leaves no empty folders in the data root (issue, last line)."""
    from robustbench_geo.data.root import DataMissingError, prepare_files

    url = (tmp_path / "nowhere" / "file.gz").as_uri()  # a real download attempt that fails offline too
    with pytest.raises(DataMissingError, match="download failed"):
        prepare_files("x", tmp_path / "root", [("A/raw/file.gz", None, url)])
    assert not (tmp_path / "root" / "A").exists()


def test_parallel_workers_copy_the_same_raw_file_out_of_a_read_only_root(tmp_path, monkeypatch):
    """Two sweep workers fetching MNIST at once: with one shared ``.part`` file the second's rename
    failed (FileNotFoundError) and every cell of its model with it (seen in the quick preset)."""
    import stat
    import threading

    from robustbench_geo.data.root import prepare_files

    root = tmp_path / "mirror"
    raw = root / "D" / "raw"
    raw.mkdir(parents=True)
    payload = os.urandom(8 << 20)
    (raw / "big.bin").write_bytes(payload)
    for p in (raw / "big.bin", raw, raw.parent, root):  # read-only like the shared data mirror
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setenv("RBGEO_CACHE", str(tmp_path / "cache"))
    errors, works = [], []

    def fetch():
        try:
            works.append(prepare_files("D", root, [("D/raw/big.bin", None, None)]))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    copy = works[0] / "D" / "raw" / "big.bin"
    assert copy.read_bytes() == payload and sorted(p.name for p in copy.parent.iterdir()) == ["big.bin"]


def test_driver_records_non_finite_metrics_as_failed():
    from robustbench_geo.sweep.driver import finite_or_failed

    ok = {"ok": True, "metrics": {"clean_accuracy": 0.9, "robust_accuracy": 0.5}, "seconds": 1.0}
    assert finite_or_failed(ok) is ok
    bad = finite_or_failed({**ok, "metrics": {"clean_accuracy": 0.9, "robust_accuracy": float("nan")}})
    assert not bad["ok"] and "robust_accuracy" in bad["error"] and "finite" in bad["error"]
