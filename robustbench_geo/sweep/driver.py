"""The sweep driver: validate, register cells, dispatch them to an executor, store results, report.

The driver is the only writer of the store and of the artefact folders. It claims a cell before
handing it to the executor and writes the result in one transaction when it comes back, so an
interrupted sweep (Ctrl-C, ``kill -9``) loses at most the cells in flight and the next run resumes
where it stopped (see :mod:`robustbench_geo.sweep.store`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from robustbench_geo.check import check_number
from robustbench_geo.evaluation.outcome import check_metrics
from robustbench_geo.stats import accuracy_interval
from robustbench_geo.sweep.cells import Cell, expand
from robustbench_geo.sweep.config import SweepConfig, SweepConfigError
from robustbench_geo.sweep.executors import make_executor, sigterm_as_interrupt
from robustbench_geo.sweep.runner import checked_checkpoint_cache, default_checkpoint_cache, run_cell, write_artefacts
from robustbench_geo.sweep.store import ResultStore, owner_id


@dataclass
class SweepSummary:
    """What one ``run_sweep`` call did."""

    name: str
    output: Path
    total: int
    ran: list[dict] = field(default_factory=list)  # {"cell": Cell, "ok": bool, "seconds": float, "metrics"/"error"}
    skipped_done: int = 0
    skipped_running: int = 0
    seconds: float = 0.0
    log_file: Path | None = None
    report: Path | None = None
    interrupted: bool = False

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.ran if not r["ok"]]

    def lines(self) -> list[str]:
        ok = sum(r["ok"] for r in self.ran)
        out = [f"sweep {self.name!r}: {self.total} cells; ran {len(self.ran)} ({ok} done, {len(self.failed)} failed), "
               f"skipped {self.skipped_done} already done" + (f", {self.skipped_running} running elsewhere" if self.skipped_running else "")
               + f"; {self.seconds:.1f} s" + (" (interrupted)" if self.interrupted else "")]
        for r in self.ran:
            c = r["cell"]
            out.append(f"  {c.short}  {cell_line(c, r)}")
        if self.log_file:
            out.append(f"log: {self.log_file}")
        if self.report:
            out.append(f"report: {self.report}")
        return out


def _pct(v, n=None) -> str:
    """``"45.20 % [40.9, 49.6]"``: an accuracy with its 95 % Wilson interval when ``n`` is known."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    lo, hi = accuracy_interval(float(v), float("nan") if n is None else float(n))
    return f"{100 * v:.2f} %" + ("" if math.isnan(lo) else f" [{100 * lo:.1f}, {100 * hi:.1f}]")


def cell_line(c: Cell, r: dict) -> str:
    """One line for a finished cell: accuracies with intervals and n, seconds; or the error's last line."""
    if r["ok"]:
        m = r["metrics"]
        n = m.get("n")
        clean_n = m.get("clean_n", n)  # targeted attacks: clean over all test nodes, robust over the targets
        clean = _pct(m.get("clean_accuracy"), clean_n) + ("" if clean_n == n else f" (n={clean_n:g})")
        return (f"{c.describe()}: clean {clean}, robust {_pct(m.get('robust_accuracy'), n)}"
                f"{'' if n is None else f' (n={n:g})'} ({r['seconds']:.1f} s)")
    last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
    return f"{c.describe()}: FAILED: {last}"


def progress_style(progress: bool, stream=None) -> str:
    """``"bars"`` on a terminal, ``"lines"`` (one line per finished cell, no redraws) in a log or CI, or ``"off"``."""
    if not progress:
        return "off"
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bars" if tty else "lines"


def unique_cells(cells: list[Cell]) -> list[Cell]:
    """Drop repeated cells (same hash, e.g. two labels for one configuration), keeping the first."""
    seen, out = set(), []
    for c in cells:
        if c.hash not in seen:
            seen.add(c.hash)
            out.append(c)
    return out


def _interleave(cells: list[Cell]) -> list[Cell]:
    """Round-robin over training configs so parallel workers start by training different models."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.train_hash, []).append(c)
    out, lists = [], list(groups.values())
    while any(lists):
        for g in lists:
            if g:
                out.append(g.pop(0))
    return out


def _next_ready(queue: list[Cell], in_flight, trained: set[str]) -> int:
    """Index of the first queued cell that will not wait for a model another worker is training.

    A cell whose model is being trained by an in-flight cell would block on the checkpoint's lock
    and hold a worker idle (with two workers, the regular CNN's worker used to wait out the
    deformable CNN's training); such cells are deferred while another cell can run. The first cell
    is taken when every queued cell would wait.
    """
    training = {c.train_hash for c in in_flight} - trained
    return next((i for i, c in enumerate(queue) if c.train_hash not in training), 0)


def _logger(folder: Path) -> tuple[logging.Logger, Path]:
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"sweep-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
    log = logging.getLogger(f"robustbench_geo.sweep.{os.getpid()}.{id(path)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    h = logging.FileHandler(path)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(h)
    return log, path


def check_datasets_present(cfg: SweepConfig, data_root=None, *, sizes_only: bool = False) -> None:
    """Before the first cell: every dataset the sweep reads is on disk or can be downloaded now, and holds
    the ``test_subset``/``train_subset`` it asks for.

    Each dataset's test split (and the training split of models the sweep trains) is opened once, which
    checks (and fetches) its raw files. Missing ones raise one :class:`DataMissingError` line naming
    them all, the data root and how to point at a mirror, instead of every cell failing with it; a
    subset larger than its split raises :class:`SweepConfigError` naming the key. ``sizes_only`` (a dry
    run) opens only the splits a subset is asked of, and data not on disk are not an error there.
    """
    from robustbench_geo.data import load_dataset
    from robustbench_geo.data.root import ChecksumError, DataMissingError, resolve_data_root

    need: dict[tuple, list] = {}  # (spec, split) -> [(subset, its key)]
    for d in cfg.datasets.values():
        need.setdefault((d.spec, "test" if d.task == "image" else None), []).append(
            (d.test_subset, f"datasets.{d.label}.test_subset"))
    for m in cfg.models.values():
        d = cfg.datasets[m.dataset]
        if m.source == "train" and d.task == "image":
            need.setdefault((d.spec, "train"), []).append((d.train_subset, f"datasets.{d.label}.train_subset"))
    missing: dict[str, None] = {}
    names: dict[str, None] = {}
    root = resolve_data_root(data_root)
    for (spec, split), subsets in sorted(need.items(), key=str):
        n, key = max(((n, k) for n, k in subsets if n is not None), default=(1, None))
        if sizes_only and key is None:
            continue
        try:
            if split is None:
                load_dataset(spec, root=data_root, download=not sizes_only)
            else:
                load_dataset(spec, split=split, root=data_root, subset=n, download=not sizes_only)
        except DataMissingError as e:
            root = getattr(e, "root", root)
            missing.update(dict.fromkeys(getattr(e, "missing", [spec])))
            names[spec] = None
        except ChecksumError:
            raise
        except ValueError as e:  # a subset larger than the split would fail every cell
            if key is None:
                raise
            raise SweepConfigError(f"{cfg.source}: {key}: {e}") from None
    if missing and not sizes_only:
        raise DataMissingError(
            f"the sweep needs {len(missing)} file(s) missing under the data root {root} (datasets "
            f"{', '.join(names)}): {', '.join(missing)}; point RBGEO_DATA or --data-root at a mirror that has them, "
            "or run once with network access so they can be downloaded. No cell was run")


def runs_user_code(cfg: SweepConfig) -> bool:
    """Whether a cell builds a model from the user's code (a plug-in ``file.py:factory``): such a sweep runs its
    cells in a worker process even with one job, so that a crash there (a segfault) fails the cell with its
    reason and the sweep goes on, instead of ending the driver."""
    from robustbench_geo.models.registry import is_plugin_spec

    return any(is_plugin_spec(m.model) for m in cfg.models.values())


def run_sweep(cfg: SweepConfig, *, executor: str = "local", jobs: int | None = None, address: str | None = None,
              data_root=None, threads: int | None = None, progress: bool = True,
              report: Callable[[Path], dict] | None = None, limit: int | None = None) -> SweepSummary:
    """Run every unfinished cell of ``cfg`` and optionally write the report.

    Args:
        cfg: a validated sweep (:func:`~robustbench_geo.sweep.config.load_config`).
        executor: ``local`` or ``ray``; ``jobs`` > 1 with ``local`` runs worker processes (default: the
            sweep's ``jobs``, 1 unless its ``[sweep]`` table says otherwise; Ray ignores it).
        address: Ray cluster address (``None``: a local Ray instance).
        data_root: data root passed to the loaders (else ``$RBGEO_DATA``).
        threads: torch threads per cell (default: executor-specific).
        progress: report progress: bars (cells; epochs and attack iterations with the local executor)
            when stderr is a terminal, else one line per finished cell on stderr (no redraws in logs).
        report: called with the output folder at the end, returning paths with an ``"html"`` key
            (the CLI passes :func:`robustbench_geo.report.write_report`; the sweep layer does not
            import the report layer, which reads the sweep's store). ``None`` or ``False``: no report.
        limit: run at most this many cells (the rest stay pending).

    Raises:
        StoreError: the output folder holds another sweep's or an incompatible store (before any work).
    """
    jobs = _checked_run_args(cfg, executor, jobs, threads, limit, report)
    t0 = time.perf_counter()
    cells = unique_cells(expand(cfg))
    cache = checked_checkpoint_cache(cfg.checkpoint_cache) if cfg.checkpoint_cache else default_checkpoint_cache()
    check_datasets_present(cfg, data_root)
    store = ResultStore(cfg.output, cfg.name)  # refuses another sweep's store before any work
    summary = SweepSummary(cfg.name, cfg.output, len(cells))
    ex = None
    in_flight: dict[str, Cell] = {}
    restore_sigterm = sigterm_as_interrupt()
    try:
        store.register(cells)
        status = {r["hash"]: r["status"] for r in store.cells()}
        todo = [c for c in cells if status.get(c.hash) != "done"]
        summary.skipped_done = len(cells) - len(todo)
        log, summary.log_file = _logger(cfg.output)
        log.info("sweep %r from %s: %d cells, %d to run, output %s, checkpoint cache %s, executor %s (jobs %d)",
                 cfg.name, cfg.source, len(cells), len(todo), cfg.output, cache, executor, jobs)
        if limit is not None:
            todo = todo[:limit]
        ex = make_executor(executor, jobs=jobs, address=address, device=cfg.device, threads=threads,
                           isolate=runs_user_code(cfg))
        if ex.slots > 1:
            todo = _interleave(todo)
        cell_kwargs = {"cache_dir": str(cache), "data_root": None if data_root is None else str(data_root),
                       "device": cfg.device, "deform_backend": cfg.deform_backend}
        _CellLoop(cfg.name, store, ex, todo, summary, log, in_flight, cell_kwargs, progress_style(progress)).run()
    except BaseException as e:  # Ctrl-C, or a failure of the driver itself: no cell is left "running"
        summary.interrupted = isinstance(e, KeyboardInterrupt)
        for h in in_flight:
            store.release(h)
        raise
    finally:
        if ex is not None:
            ex.shutdown()
        summary.seconds = time.perf_counter() - t0
        store.close()
        restore_sigterm()
    if report:
        summary.report = report(cfg.output)["html"]
    log.info("finished in %.1f s: %d ran, %d failed, %d skipped", summary.seconds, len(summary.ran),
             len(summary.failed), summary.skipped_done)
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)
    return summary


def _checked_run_args(cfg: SweepConfig, executor: str, jobs, threads, limit, report) -> int:
    """Refuse bad arguments of :func:`run_sweep` before any work; the number of local worker processes."""
    if report is not None and report is not False and not callable(report):
        raise TypeError("report: expected a function of the output folder such as robustbench_geo.report.write_report, "
                        f"or None, got {report!r}")
    if limit is not None:
        check_number(limit, "limit (cells to run)", integer=True, low=0)
    if threads is not None:
        check_number(threads, "threads", integer=True, low=1)
    return check_number(cfg.jobs if jobs is None else jobs, "jobs", integer=True, low=1) if executor == "local" else 1


class _CellLoop:
    """The driver's loop: keeps the executor's slots busy with claimed cells (a cell whose model another
    cell is training waits, see :func:`_next_ready`), records every result in the store and the log, and
    shows progress (a bar, or one line per finished cell). ``in_flight`` is the caller's: on an
    interruption the caller gives its cells back to the store."""

    def __init__(self, name: str, store: ResultStore, ex, todo: list[Cell], summary: SweepSummary, log,
                 in_flight: dict[str, Cell], cell_kwargs: dict, style: str):
        self.store, self.ex, self.summary, self.log, self.in_flight = store, ex, summary, log, in_flight
        self.queue, self.total, self.finished = list(todo), len(todo), 0
        self.cell_kwargs, self.style, self.owner = {**cell_kwargs, "progress": style == "bars"}, style, owner_id()
        self.trained: set[str] = set()  # training hashes whose checkpoint exists (a cell of theirs finished)
        self.bar = tqdm(total=len(todo), desc=f"sweep {name}", unit="cell", disable=style != "bars")

    def run(self) -> None:
        self.fill()
        while self.in_flight:
            self.collect()
            self.fill()
        self.bar.close()

    def fill(self) -> None:
        """Claim and submit cells until every slot is busy or the queue is empty."""
        while self.queue and len(self.in_flight) < self.ex.slots:
            c = self.queue.pop(_next_ready(self.queue, self.in_flight.values(), self.trained))
            if not self.store.claim(c.hash, self.owner):  # another driver has it, or finished it meanwhile
                status = self.store.get(c.hash)["status"]
                self.summary.skipped_running += status == "running"
                self.summary.skipped_done += status == "done"
                self.bar.update(1)
                continue
            self.log.info("start %s %s", c.short, c.describe())
            self.in_flight[c.hash] = c
            self.ex.submit(c.hash, run_cell, {"cell_config": c.config, "train_hash": c.train_hash, **self.cell_kwargs})

    def collect(self) -> None:
        """Wait for one result, record it (a non-finite metric fails the cell) and report it."""
        key, res = self.ex.next_result()
        c = self.in_flight[key]
        self.trained.add(c.train_hash)
        res = finite_or_failed(res)
        _record(self.store, self.summary.output, c, res)
        del self.in_flight[key]
        entry = {"cell": c, "ok": res["ok"], "seconds": res["seconds"]}
        if res["ok"]:
            entry["metrics"] = res["metrics"]
            self.log.info("done %s in %.1f s: %s", c.short, res["seconds"],
                          {k: v for k, v in res["metrics"].items() if k in ("clean_accuracy", "robust_accuracy", "success_rate")})
        else:
            entry["error"] = res["error"]
            self.log.error("failed %s after %.1f s:\n%s", c.short, res["seconds"], res["error"])
        self.summary.ran.append(entry)
        self.finished += 1
        if self.style == "lines":
            print(f"[{self.finished}/{self.total}] {cell_line(c, entry)}", file=sys.stderr, flush=True)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{c.model_label} x {c.attack_label}: " + (
            _pct(res["metrics"].get("robust_accuracy")) if res["ok"] else "failed"))


def finite_or_failed(res: dict) -> dict:
    """A cell result whose metrics are not all finite numbers is recorded as failed, never as done.

    :func:`~robustbench_geo.evaluation.evaluate_attack` already refuses NaN results; this is the
    driver's own guard for results from any executor (the store would otherwise keep NaN as NULL).
    """
    if res["ok"]:
        try:
            check_metrics(res["metrics"], "cell result")
        except ValueError as e:
            return {"ok": False, "error": f"{e}; recorded as failed, not done", "seconds": res["seconds"]}
    return res


def _record(store: ResultStore, output: Path, c: Cell, res: dict) -> None:
    if not res["ok"]:
        store.fail(c.hash, res["error"], res.get("seconds"))
        return
    rel = Path("cells") / c.hash[:16]
    write_artefacts(output / rel, res)
    info = {**res["info"], "attack_config": res.get("config", {}), "params": res.get("params", {})}
    store.finish(c.hash, res["metrics"], seconds=res["seconds"], train_seconds=res["train_seconds"],
                 attack_seconds=res["attack_seconds"], info=info, artefact_dir=str(rel), checkpoint=res["checkpoint"])
