"""Executors: where :func:`~robustbench_geo.sweep.runner.run_cell` runs.

All three take the same keyword arguments for every cell and hand back the same plain-data
result; only the driver writes the store, so the choice of executor never changes what is stored.

* :class:`LocalExecutor`: in the driver process, one cell after the other (progress bars for
  epochs and attack iterations are shown);
* :class:`ProcessExecutor`: ``--jobs N`` worker processes (spawned, each with
  ``cpu_count // N`` torch threads);
* :class:`RayExecutor`: Ray tasks on a local Ray instance or a cluster (``--address``), one CPU per
  task (or ``threads``) and one GPU per task when the sweep's device is CUDA. Ray is the optional
  extra ``pip install 'robustbench_geo[ray]'``; the checkpoint cache should be on storage every
  node sees, else each node trains its own (identical, seeded) copy.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable


class LocalExecutor:
    """Runs each cell synchronously in the driver."""

    name = "local"
    slots = 1

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._done: list = []

    def submit(self, key, fn, kwargs: dict) -> None:
        self._done.append((key, fn(**{**kwargs, "threads": self.threads})))

    def next_result(self):
        return self._done.pop(0)

    def pending(self) -> int:
        return len(self._done)

    def shutdown(self) -> None:
        self._done.clear()


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Worker initializer: end this process when the driver dies, even by ``kill -9``.

    On Linux the kernel sends SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``); a
    daemon thread also polls the parent pid (other systems, and the window before prctl is set),
    so a killed sweep never leaves workers blocked on their pipe forever.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the watchdog alone
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    # Ctrl-C in a terminal reaches the whole process group: the driver alone handles it (gives the cells
    # back and ends its workers), so a worker never dies half-way through a store write of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="rbgeo-parent-watchdog", daemon=True).start()


_PR_SET_PDEATHSIG = 1


def start_worker(parent_pid: int, warning_filters: list) -> None:
    """Worker initializer: :func:`die_with_parent`, and the driver's warning filters (spawned workers start bare)."""
    warnings.filters[:] = warning_filters
    die_with_parent(parent_pid)


class ProcessExecutor:
    """``jobs`` spawned worker processes (no inner progress bars: they would interleave)."""

    name = "process"

    def __init__(self, jobs: int, threads: int | None = None):
        import multiprocessing as mp

        if jobs < 1:
            raise ValueError(f"--jobs: expected at least 1 worker process, got {jobs}")
        self.slots = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=start_worker, initargs=(os.getpid(), list(warnings.filters)))
        self.futures: dict = {}

    def submit(self, key, fn, kwargs: dict) -> None:
        self.futures[self.pool.submit(fn, **{**kwargs, "threads": self.threads, "progress": False})] = key

    def next_result(self):
        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        key = self.futures.pop(fut)
        try:
            return key, fut.result()
        except Exception as e:  # noqa: BLE001 - a worker that died (e.g. out of memory)
            return key, {"ok": False, "error": f"worker process failed: {type(e).__name__}: {e}", "seconds": 0.0}

    def pending(self) -> int:
        return len(self.futures)

    def shutdown(self) -> None:
        """Stop the pool; workers still inside a cell (an interrupted sweep) are killed, not waited for: a cell
        stuck in user code (a sleeping plug-in) would otherwise keep the driver alive at exit."""
        abandoned = [f for f in self.futures if not f.done()]
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        if abandoned:
            for w in workers:
                w.kill()
            for w in workers:
                w.join(5)
        self.pool.shutdown(wait=not abandoned, cancel_futures=True)
        self.futures.clear()


def sigterm_as_interrupt() -> Callable[[], None]:
    """Handle SIGTERM like Ctrl-C (``KeyboardInterrupt``) while the driver runs, so the claimed cells are given
    back and the workers ended instead of the process dying with cells left ``running``; returns the function
    that restores the previous handler (a no-op outside the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


class RayExecutor:
    """Cells as Ray tasks; GPUs are requested when the device is CUDA.

    Args:
        address: Ray cluster address (``auto``, ``ray://host:10001``); ``None`` starts a local instance.
        device: the sweep's torch device; ``cuda*`` requests ``num_gpus=1`` per task.
        threads: CPUs requested per task (also its torch threads); default 1.
        max_in_flight: tasks submitted at once (default: the cluster's CPUs / threads).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, device: str = "cpu", threads: int | None = None,
                 max_in_flight: int | None = None):
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'robustbench_geo[ray]' "
                             "(or pip install 'ray[default]')") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            from pathlib import Path

            import robustbench_geo

            env = {k: v for k, v in os.environ.items() if k.startswith("RBGEO_")}
            if not address:  # a local instance imports this very checkout of the package
                here = str(Path(robustbench_geo.__file__).resolve().parents[1])
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH", "")]))
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env},
                     **({} if address else {"num_cpus": os.cpu_count()}))
        self.threads = threads or 1
        gpus = 1 if str(device).startswith("cuda") else 0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max_in_flight or max(1, cpus // self.threads)
        self.options = {"num_cpus": self.threads, "num_gpus": gpus, "max_retries": 0}
        self.refs: dict = {}
        self._remote = None

    def submit(self, key, fn, kwargs: dict) -> None:
        if self._remote is None:
            self._remote = self.ray.remote(fn)
        ref = self._remote.options(**self.options).remote(**{**kwargs, "threads": self.threads, "progress": False})
        self.refs[ref] = key

    def next_result(self):
        done, _ = self.ray.wait(list(self.refs), num_returns=1)
        ref = done[0]
        key = self.refs.pop(ref)
        try:
            return key, self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - a task or node that died
            return key, {"ok": False, "error": f"ray task failed: {type(e).__name__}: {e}", "seconds": 0.0}

    def pending(self) -> int:
        return len(self.refs)

    def shutdown(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started:
            self.ray.shutdown()


def make_executor(kind: str = "local", *, jobs: int = 1, address: str | None = None, device: str = "cpu",
                  threads: int | None = None):
    """``local`` (``jobs`` > 1 means worker processes) or ``ray``."""
    if kind == "local":
        return LocalExecutor(threads) if jobs == 1 else ProcessExecutor(jobs, threads)
    if kind == "ray":
        return RayExecutor(address, device=device, threads=threads)
    raise ValueError(f"--executor: expected 'local' or 'ray', got {kind!r}")
