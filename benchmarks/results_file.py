"""Write a docs table and the raw numbers behind it as one JSON file under ``benchmarks/results/``.

Every measured table in ``docs/`` is tied to such a file (``benchmarks/results/README.md`` has the
convention; ``tests/test_docs_results.py`` checks each table against its file). A benchmark script
calls :func:`write_results` with the table it prints; the file records the exact command that wrote
it, when, on what machine and under what load, the library versions, and the raw data.

Usage from a script in ``benchmarks/`` (run as ``python benchmarks/NAME.py ...``)::

    from results_file import write_results
    write_results(args.results, "what the table shows", columns, rows, data={"runs": runs})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

SCHEMA = "rbgeo-results/1"


def command_line() -> str:
    """The command that runs this process, as typed from the repository root (``python benchmarks/x.py ...``)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *(shlex.quote(a) for a in sys.argv[1:])])


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict:
    """The machine and its load when the file is written."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}


def write_results(path, what: str, columns: list[str], rows: list[list], *, data=None, command: str | None = None,
                  notes: str | None = None, measured: dict | None = None) -> Path:
    """Write ``{"schema", "what", "command", "measured", "table", "data"}`` to ``path`` (created atomically).

    Args:
        path: ``benchmarks/results/<topic>/<name>.json``.
        what: one sentence: what the table shows (units, sample sizes, uncertainty).
        columns, rows: the table exactly as the docs print it (cells as strings).
        data: the raw numbers the cells are computed from (per seed, per run, ...), JSON-ready.
        command: the command to record (default: this process's own command line).
        notes: anything a reader needs to reproduce or judge the numbers (load, deviations).
        measured: ``{"date", "machine", "versions"}`` of a measurement taken elsewhere (a GPU session's
            stored output rendered here); default: now, this machine, these versions.
    """
    from robustbench_geo._version import versions

    cells = [[str(c) for c in row] for row in rows]
    if any(len(r) != len(columns) for r in cells):
        raise ValueError(f"rows: expected {len(columns)} cells per row (the columns), got {[len(r) for r in cells]}")
    record = {"schema": SCHEMA, "what": what, "command": command or command_line(),
              "measured": measured or {"date": now_utc(), "machine": machine(), "versions": versions()},
              "table": {"columns": [str(c) for c in columns], "rows": cells}, "data": data, "notes": notes}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def markdown(columns: list[str], rows: list[list]) -> str:
    """The table as Markdown, for printing (what goes into the docs under the file's marker)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Print a table as aligned plain-text columns (what the scripts show before writing a results file)."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for r in [columns, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
