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


def _kill_all(driver: subprocess.Popen, pids: list[int]) -> None:
    """Never leave a sleeping worker behind, even when a test fails."""
    if driver.poll() is None:
        driver.kill()
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_driver_ends_its_workers(tmp_path):
    """``rbgeo sweep --jobs 2`` killed with SIGKILL leaves no worker process behind."""
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
        _kill_all(driver, everyone or workers)


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
    """A load that fails leaves no empty folders in the data root."""
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


USER_CODE_PLUGIN = '''
import os
import time

import torch.nn as nn


def exits_os(**kwargs):
    os._exit(0)  # ends the process at once, with exit status 0


def segfaults(**kwargs):
    import ctypes

    ctypes.string_at(0)  # reads address 0: the process dies of SIGSEGV


def sleeps(num_classes=10, **kwargs):
    """Sleeps while RBGEO_TEST_SLEEP is set (a cell stuck in user code), else builds a small model."""
    if os.environ.get("RBGEO_TEST_SLEEP"):
        time.sleep(300)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
'''


def _sweep_with(tmp_path: Path, factory: str, seeds=(0,)) -> list[str]:
    (tmp_path / "user.py").write_text(USER_CODE_PLUGIN)
    text = tiny_toml(tmp_path / "out", cache=tmp_path / "cache", seeds=seeds).replace(
        'model = "cnn"', f'model = "{tmp_path}/user.py:{factory}"')
    (tmp_path / "s.toml").write_text(text)
    return [sys.executable, "-m", "robustbench_geo", "sweep", str(tmp_path / "s.toml"), "--quiet", "--no-report"]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_factory_calling_os_exit_fails_its_cell_and_the_sweep_goes_on(tmp_path, jobs):
    """``os._exit(0)`` in a trained factory: the cell is failed with the reason (was exit 0 with the cell left
    ``running`` under ``--jobs 1``), the other seeds' cells are tried too, and the sweep exits 1."""
    from robustbench_geo.sweep.store import ResultStore

    args = _sweep_with(tmp_path, "exits_os", seeds=(0, 1)) + ["--jobs", str(jobs)]
    run = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 cell(s) failed" in run.stdout + run.stderr
    with ResultStore(tmp_path / "out") as store:
        assert store.status_counts() == {"failed": 2}
        assert all("os._exit(0)" in c["error"] for c in store.cells())


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig,jobs", [(signal.SIGINT, 1), (signal.SIGINT, 2), (signal.SIGTERM, 1), (signal.SIGTERM, 2)],
                         ids=["int-jobs1", "int-jobs2", "term-jobs1", "term-jobs2"])
def test_a_signal_ends_a_sweep_stuck_in_user_code(tmp_path, sig, jobs):
    """SIGINT or SIGTERM to the driver while its cells sleep in a plug-in: it exits within seconds, gives its
    claimed cells back, leaves no process; the resumed sweep then runs every cell once."""
    from robustbench_geo.sweep.store import ResultStore

    args = _sweep_with(tmp_path, "sleeps", seeds=(0, 1)) + ["--jobs", str(jobs)]
    # a shell starts background jobs with SIGINT ignored and Python then installs no handler: give the driver
    # the disposition an interactive user's sweep has, or a suite run with '&' or nohup cannot test SIGINT
    driver = subprocess.Popen(args, cwd=tmp_path, env=_env(RBGEO_TEST_SLEEP="1"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, preexec_fn=_default_sigint)
    everyone: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and driver.poll() is None:
            if (tmp_path / "out" / "results.sqlite").exists():
                with ResultStore(tmp_path / "out") as store:
                    if store.status_counts().get("running", 0) >= jobs:
                        break
            time.sleep(0.5)
        time.sleep(2.0)  # inside the sleeping factory
        assert driver.poll() is None, "the sweep ended before the signal"
        everyone = _children(driver.pid)
        everyone += [p for w in everyone for p in _children(w)]
        sent = time.time()
        os.kill(driver.pid, sig)
        driver.wait(15)
        assert time.time() - sent < 15
        assert driver.returncode != 0
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in everyone):
            time.sleep(0.2)
        assert not [p for p in everyone if _alive(p)], "processes outlived the sweep"
    finally:
        _kill_all(driver, everyone)
    with ResultStore(tmp_path / "out") as store:
        assert store.status_counts() == {"pending": 2}  # given back, not left running
    resumed = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with ResultStore(tmp_path / "out") as store:
        cells = store.cells()
        assert store.status_counts() == {"done": 2} and len({c["hash"] for c in cells}) == 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_segfault_in_a_plugin_fails_its_cell_and_the_sweep_goes_on(tmp_path, jobs):
    """A factory that segfaults fails its cell with the signal named (under ``--jobs 1`` it used to end the driver
    with the cell left ``running``); the other model's cell is done, and the sweep exits 1."""
    from robustbench_geo.sweep.store import ResultStore

    ok = f'\n[models.ok]\nmodel = "{tmp_path}/user.py:sleeps"\ndataset = "mnist"\nepochs = 1\n'
    args = _sweep_with(tmp_path, "segfaults")
    (tmp_path / "s.toml").write_text((tmp_path / "s.toml").read_text() + ok)
    run = subprocess.run(args + ["--jobs", str(jobs)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 cell(s) failed" in run.stdout + run.stderr and "SIGSEGV" in run.stdout
    with ResultStore(tmp_path / "out") as store:
        assert store.status_counts() == {"done": 1, "failed": 1}
        failed = [c for c in store.cells() if c["status"] == "failed"]
        assert "died of signal SIGSEGV" in failed[0]["error"]
