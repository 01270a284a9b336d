"""Executors: where :func:`~robustbench_geo.sweep.runner.run_cell` runs.

All three take the same keyword arguments for every cell and hand back the same plain-data
result; only the driver writes the store, so the choice of executor never changes what is stored.

* :class:`LocalExecutor`: in the driver process, one cell after the other (progress bars for
  epochs and attack iterations are shown);
* :class:`ProcessExecutor`: ``--jobs N`` worker processes (spawned, each with
  ``cpu_count // N`` torch threads), also for one job when a cell runs the user's code (a plug-in
  model or factory), so that a crash there fails the cell, not the sweep;
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
from concurrent.futures.process import BrokenProcessPool
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
    """Worker initializer: :func:`die_with_parent`, and the driver's warning filters (spawned workers start bare).

    tqdm gets a thread lock: its default is a multiprocessing semaphore, which a worker that dies inside a
    cell (a segfault) can never release, so Python's resource tracker would warn of it at the sweep's end.
    Workers draw no bars, so no lock is shared across processes.
    """
    from tqdm import tqdm

    warnings.filters[:] = warning_filters
    tqdm.set_lock(threading.RLock())
    die_with_parent(parent_pid)


class ProcessExecutor:
    """``jobs`` spawned worker processes (no inner progress bars: they would interleave).

    Each worker has a pool of its own: a worker that dies inside a cell (a segfault or ``os.abort`` in a
    model or plug-in, the out-of-memory killer) fails that one cell with the reason and is replaced for the
    next one, while the other workers' cells go on (a shared pool would fail every cell in flight and
    refuse new ones).
    """

    name = "process"

    def __init__(self, jobs: int, threads: int | None = None):
        import multiprocessing as mp

        if jobs < 1:
            raise ValueError(f"--jobs: expected at least 1 worker process, got {jobs}")
        self.slots = jobs
        # one worker (a sweep isolated for its user code) keeps torch's own default, as in the driver
        self.threads = threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
        self._context = mp.get_context("spawn")
        self.pools: list[ProcessPoolExecutor | None] = [None] * jobs
        self.futures: dict = {}  # future -> (key, slot, its worker processes, start time)

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        if self.pools[slot] is None:
            self.pools[slot] = ProcessPoolExecutor(max_workers=1, mp_context=self._context, initializer=start_worker,
                                                   initargs=(os.getpid(), list(warnings.filters)))
        return self.pools[slot]

    def submit(self, key, fn, kwargs: dict) -> None:
        busy = {slot for _, slot, _, _ in self.futures.values()}
        slot = next(i for i in range(self.slots) if i not in busy)
        pool = self._pool(slot)
        try:
            fut = pool.submit(fn, **{**kwargs, "threads": self.threads, "progress": False})
        except BrokenProcessPool:  # its worker died between cells: start another
            self.pools[slot] = None
            pool = self._pool(slot)
            fut = pool.submit(fn, **{**kwargs, "threads": self.threads, "progress": False})
        self.futures[fut] = (key, slot, list((getattr(pool, "_processes", None) or {}).values()), time.perf_counter())

    def next_result(self):
        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        key, slot, workers, started = self.futures.pop(fut)
        try:
            return key, fut.result()
        except BrokenProcessPool:  # the worker died inside the cell: only this slot's pool is broken
            broken, self.pools[slot] = self.pools[slot], None
            broken.shutdown(wait=True, cancel_futures=True)  # its manager thread has reaped the dead worker then
            error = f"the worker process running this cell {_death(workers)} (a crash in the model's or a plug-in's code?)"
        except Exception as e:  # noqa: BLE001 - the result could not be sent back (e.g. it does not pickle)
            error = f"worker process failed: {type(e).__name__}: {e}"
        return key, {"ok": False, "error": error, "seconds": time.perf_counter() - started}

    def pending(self) -> int:
        return len(self.futures)

    def shutdown(self) -> None:
        """Stop the workers; those still inside a cell (an interrupted sweep) are killed, not waited for: a cell
        stuck in user code (a sleeping plug-in) would otherwise keep the driver alive at exit."""
        abandoned = {slot for f, (_, slot, _, _) in self.futures.items() if not f.done()}
        for slot, pool in enumerate(self.pools):
            if pool is None:
                continue
            if slot in abandoned:
                workers = list((getattr(pool, "_processes", None) or {}).values())
                for w in workers:
                    w.kill()
                for w in workers:
                    w.join(5)
            pool.shutdown(wait=slot not in abandoned, cancel_futures=True)
        self.pools = [None] * self.slots
        self.futures.clear()


def _death(workers: list) -> str:
    """How a worker process ended: ``died of signal SIGSEGV (Segmentation fault)``, ``exited with status 3``."""
    codes = [w.exitcode for w in workers if w.exitcode is not None]
    if not codes:
        return "died"
    code = codes[0]
    if code < 0:
        try:
            sig = signal.Signals(-code)
            return f"died of signal {sig.name} ({signal.strsignal(sig) or sig.name})"
        except ValueError:
            return f"died of signal {-code}"
    return f"exited with status {code}"


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
                  threads: int | None = None, isolate: bool = False):
    """``local`` (``jobs`` > 1, or ``isolate``, means worker processes) or ``ray``.

    ``isolate`` runs even a single job in a worker process: for cells that run the user's code, whose crash
    (a segfault) would otherwise end the driver instead of failing the cell.
    """
    if kind == "local":
        return LocalExecutor(threads) if jobs == 1 and not isolate else ProcessExecutor(jobs, threads)
    if kind == "ray":
        return RayExecutor(address, device=device, threads=threads)
    raise ValueError(f"--executor: expected 'local' or 'ray', got {kind!r}")
