"""The results store: one SQLite file (``results.sqlite``) in a sweep's output folder.

One row per cell in ``cells``, keyed by the cell's config hash, with its status (``pending``,
``running``, ``done``, ``failed``), owner process, timings, seed, full config, versions and
artefact folder; its metrics live in ``metrics`` as ``(hash, name, value REAL)`` rows, so numbers
are always numbers. ``meta`` records the schema version and the sweep name the store belongs to.

Safety: the database runs in WAL mode and every change is one short ``BEGIN IMMEDIATE``
transaction, so readers never block the writer and two processes writing to one store serialise
instead of corrupting it. A cell is *claimed* (status ``running`` + owner ``host:pid``) before
its work starts and written with its metrics in one transaction when it ends: a killed process
loses only the cells it had claimed, and the next run reclaims them because their owner is dead.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from robustbench_geo.results_schema import current_key

SCHEMA_VERSION = 1
STORE_NAME = "results.sqlite"
#: the name a certificate cell's config stores for its evaluation (``config["attack"]["name"]``, which its hash
#: covers); cells stored before they carried their kind (``config["attack"]["kind"]``) were told apart by it
CERTIFICATE = "certify"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    hash TEXT PRIMARY KEY,
    train_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    attack TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    seconds REAL,
    train_seconds REAL,
    attack_seconds REAL,
    config TEXT NOT NULL,
    info TEXT,
    artefact_dir TEXT,
    checkpoint TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    hash TEXT NOT NULL REFERENCES cells(hash) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL CHECK (value IS NULL OR typeof(value) = 'real'),
    PRIMARY KEY (hash, name)
);
"""


_TABLES = {"meta", "cells", "metrics"}


class StoreError(ValueError):
    """The output folder holds a store this sweep cannot use (another sweep, another schema, not ours)."""


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a cell still runs (other hosts are assumed alive)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _with_kind(config: dict) -> dict:
    """A stored cell config with its evaluation's kind: cells stored before they carried it get it here, a
    certificate (then the pseudo-attack :data:`CERTIFICATE`) ``"certificate"``, anything else ``"attack"``."""
    attack = config.get("attack")
    if isinstance(attack, dict) and "kind" not in attack:
        attack["kind"] = "certificate" if attack.get("name") == CERTIFICATE else "attack"
    return config


def _current_metrics(config: dict, metrics: dict) -> dict:
    """A stored cell's metrics under their current names: a certificate cell stored before results schema 4
    named its intervals ``<rate>_ci95_low``/``<rate>_ci95_high``, now ``<rate>_ci_low``/``<rate>_ci_high``."""
    if config.get("attack", {}).get("kind") != "certificate":
        return metrics
    return {current_key(k): v for k, v in metrics.items()}


def _real(v) -> float | None:
    """Metrics are stored as REAL; booleans and ints become floats, NaN becomes NULL."""
    if v is None:
        return None
    if isinstance(v, str):
        raise TypeError(f"metric value: expected a number, got the string {v!r}")
    f = float(v)
    return None if math.isnan(f) else f


class ResultStore:
    """Read and write a sweep's ``results.sqlite``.

    Args:
        folder: output folder (created if missing).
        sweep: sweep name; opening a store created by another sweep raises :class:`StoreError`.
            ``None`` opens any store (for ``rbgeo results``/``rbgeo report``).
        create: create the folder and the store when missing (the sweep driver); ``False`` requires
            an existing store.
        readonly: open for reading only (default: ``not create``): nothing on disk is created or
            changed, whatever the file turns out to be (``rbgeo results``, ``rbgeo report``, ``--dry-run``).
    """

    def __init__(self, folder: str | os.PathLike, sweep: str | None = None, *, create: bool = True,
                 readonly: bool | None = None):
        self.folder = Path(folder)
        self.path = self.folder / STORE_NAME
        self.readonly = not create if readonly is None else readonly
        if self.readonly:
            self.conn = self._open_readonly()
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA busy_timeout = 60000")
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and ("meta" not in tables or tables - _TABLES):
                raise StoreError(f"{self.path} is an SQLite file of something else (tables: {', '.join(sorted(tables))}), "
                                 f"not a results store of rbgeo sweep; it is left untouched: choose another output folder")
            if self.readonly:
                if not tables:
                    raise StoreError(f"{self.path} is an empty SQLite file: not a results store of rbgeo sweep; "
                                     f"it is left untouched")
                meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
            else:
                meta = self._create_schema(sweep)
        except StoreError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as e:
            self.conn.close()
            raise StoreError(f"{self.path} is not a usable SQLite results store ({e}); choose another output folder") from None
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            self.conn.close()
            raise StoreError(f"{self.path} has store schema {meta.get('schema_version')!r}, this package writes "
                             f"{SCHEMA_VERSION}; choose another output folder")
        if sweep is not None and meta.get("sweep") != sweep:
            self.conn.close()
            raise StoreError(f"output folder {self.folder} holds the store of sweep {meta.get('sweep')!r}, not {sweep!r}; "
                             f"choose another output folder (sweep.output or --output) or rename the sweep")
        self.sweep = meta.get("sweep")

    def _open_readonly(self) -> sqlite3.Connection:
        """Open for reading only: a refused file is never created, converted or given ``-wal``/``-shm`` companions.

        SQLite opens a WAL database read-only by creating its ``-wal`` and ``-shm`` files; when no
        writer is active (no ``-wal`` file: the last writer closed cleanly), the file is opened as
        immutable instead, which creates nothing.
        """
        if not self.path.exists():
            raise StoreError(f"no results store in {self.folder} (expected {self.path}); run rbgeo sweep first")
        if not self.path.is_file():
            raise StoreError(f"{self.path} is not a file: not a results store of rbgeo sweep")
        if self.path.stat().st_size == 0:
            raise StoreError(f"{self.path} is empty (0 bytes): not a results store of rbgeo sweep; it is left untouched")
        wal = self.path.with_name(self.path.name + "-wal")
        uri = f"{self.path.resolve().as_uri()}?mode=ro" + ("" if wal.exists() else "&immutable=1")
        try:
            return sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} cannot be read as an SQLite results store ({e})") from None

    def _create_schema(self, sweep: str | None) -> dict:
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        with self.transaction() as c:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                c.execute(stmt)
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                if sweep is None:
                    raise StoreError(f"{self.path} is empty: not a results store of rbgeo sweep")
                c.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("sweep", sweep), ("created", repr(time.time()))])
                meta = {"schema_version": str(SCHEMA_VERSION), "sweep": sweep}
        return meta

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error): one writer at a time."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------------

    def register(self, cells) -> int:
        """Insert cells as ``pending`` (known cells keep their status; their labels follow the config)."""
        now = time.time()
        with self.transaction() as c:
            before = c.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            c.executemany(
                "INSERT INTO cells (hash, train_hash, model, attack, dataset, seed, status, created, config) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT(hash) DO UPDATE SET "
                "model = excluded.model, attack = excluded.attack, dataset = excluded.dataset, config = excluded.config",
                [(x.hash, x.train_hash, x.model_label, x.attack_label, x.dataset_label, x.seed, now,
                  json.dumps(x.config, sort_keys=True)) for x in cells])
            return c.execute("SELECT COUNT(*) FROM cells").fetchone()[0] - before

    def claim(self, cell_hash: str, owner: str | None = None) -> bool:
        """Mark a cell ``running`` for ``owner`` unless it is done or running in a live process."""
        owner = owner or owner_id()
        with self.transaction() as c:
            row = c.execute("SELECT status, owner FROM cells WHERE hash = ?", (cell_hash,)).fetchone()
            if row is None:
                raise KeyError(f"cell {cell_hash[:12]} is not registered in {self.path}")
            if row["status"] == "done" or (row["status"] == "running" and row["owner"] != owner and _owner_alive(row["owner"])):
                return False
            c.execute("UPDATE cells SET status = 'running', owner = ?, started = ?, attempts = attempts + 1, error = NULL "
                      "WHERE hash = ?", (owner, time.time(), cell_hash))
            return True

    def release(self, cell_hash: str) -> None:
        """Give a claimed cell back (interrupted before it finished)."""
        with self.transaction() as c:
            c.execute("UPDATE cells SET status = 'pending', owner = NULL WHERE hash = ? AND status = 'running'", (cell_hash,))

    def finish(self, cell_hash: str, metrics: dict, *, seconds: float, train_seconds: float | None = None,
               attack_seconds: float | None = None, info: dict | None = None, artefact_dir: str | None = None,
               checkpoint: str | None = None) -> None:
        """Write a finished cell and its metrics in one transaction."""
        values = [(cell_hash, str(k), _real(v)) for k, v in metrics.items()]
        with self.transaction() as c:
            c.execute("UPDATE cells SET status = 'done', finished = ?, seconds = ?, train_seconds = ?, attack_seconds = ?, "
                      "info = ?, artefact_dir = ?, checkpoint = ?, error = NULL WHERE hash = ?",
                      (time.time(), seconds, train_seconds, attack_seconds, json.dumps(info or {}, sort_keys=True, default=str),
                       artefact_dir, checkpoint, cell_hash))
            c.execute("DELETE FROM metrics WHERE hash = ?", (cell_hash,))
            c.executemany("INSERT INTO metrics (hash, name, value) VALUES (?, ?, ?)", values)

    def fail(self, cell_hash: str, error: str, seconds: float | None = None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE cells SET status = 'failed', finished = ?, seconds = ?, error = ? WHERE hash = ?",
                      (time.time(), seconds, error, cell_hash))

    # -- reading ---------------------------------------------------------------------------------

    def cells(self, status: str | None = None) -> list[dict]:
        """All cells (optionally of one status) as dicts with ``config``/``info`` parsed and ``metrics``."""
        q = "SELECT * FROM cells" + (" WHERE status = ?" if status else "") + " ORDER BY model, attack, dataset, seed, hash"
        rows = [dict(r) for r in self.conn.execute(q, (status,) if status else ())]
        metrics: dict[str, dict] = {}
        for h, n, v in self.conn.execute("SELECT hash, name, value FROM metrics"):
            metrics.setdefault(h, {})[n] = v
        for r in rows:
            r["config"] = _with_kind(json.loads(r["config"]))
            r["info"] = json.loads(r["info"]) if r["info"] else {}
            r["metrics"] = _current_metrics(r["config"], metrics.get(r["hash"], {}))
        return rows

    def get(self, prefix: str) -> dict:
        """One cell by its hash or a unique hash prefix."""
        matches = [r for r in self.cells() if r["hash"].startswith(prefix)]
        if len(matches) != 1:
            raise ValueError(f"{'no' if not matches else len(matches)} cells match hash prefix {prefix!r} in {self.path}")
        return matches[0]

    def status_counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())

    def integrity(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]
