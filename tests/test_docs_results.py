"""Every table in the docs is tied to where its numbers come from (``benchmarks/results/README.md``).

A table (at any indentation, outside fenced code) is preceded by one marker: ``<!-- results:
TOPIC/NAME.json -->`` (measured: the table must equal the file's table cell by cell, and the command
that wrote the file must be printed on the page) or ``<!-- reference table -->`` (options, names,
definitions, a paper's numbers: nothing measured). A measured table without its raw output has no
place on a docs page: it lives in the topic's ``notes.md`` (``<!-- unrecorded -->`` is refused).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
MARKER = re.compile(r"^<!--\s*(results|unrecorded|reference table)\s*:?\s*(\S*)\s*-->\s*$")
SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.replace("**", "").strip() for p in parts]


def tables(path: Path) -> list[dict]:
    """The Markdown tables of a page (indented ones too, none inside fenced code): line number, marker
    kind and argument, header, rows, the lines after it."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line.strip())
    out, i = [], 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and SEPARATOR.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            k = i - 1
            while k >= 0 and not lines[k]:
                k -= 1
            m = MARKER.match(lines[k]) if k >= 0 else None
            out.append({"line": i + 1, "kind": m.group(1) if m else None, "arg": m.group(2) if m else None,
                        "columns": _cells(lines[i]), "rows": [_cells(r) for r in lines[i + 2:j]],
                        "after": "\n".join(lines[j:j + 3])})
            i = j
        else:
            i += 1
    return out


ALL = [(p, t) for p in PAGES for t in tables(p)]
IDS = [f"{p.relative_to(ROOT)}:{t['line']}" for p, t in ALL]


@pytest.mark.parametrize("page,table", ALL, ids=IDS)
def test_every_table_says_where_its_numbers_come_from(page, table):
    assert table["kind"] in ("results", "reference table"), (
        f"{page.relative_to(ROOT)} line {table['line']}: put one marker line above the table: "
        "<!-- results: TOPIC/NAME.json --> (measured, with its results file) or <!-- reference table --> "
        "(nothing measured); a measured table whose raw output is gone belongs in benchmarks/results/TOPIC/notes.md, "
        "not on the page (see benchmarks/results/README.md)")
    where = f"{page.relative_to(ROOT)} line {table['line']}"
    if table["kind"] == "results":
        path = RESULTS / table["arg"]
        assert path.suffix == ".json" and path.is_file(), f"{where}: no results file {path.relative_to(ROOT)}"
        record = json.loads(path.read_text())
        assert record.get("schema") == "rbgeo-results/1" and record.get("command") and record["measured"]["date"]
        want = record["table"]
        norm = [[c.replace("**", "").strip() for c in row] for row in want["rows"]]
        assert table["columns"] == [c.replace("**", "").strip() for c in want["columns"]], where
        assert table["rows"] == norm, f"{where}: the table differs from {path.relative_to(ROOT)}"
        page_text = " ".join(page.read_text().split())
        assert " ".join(record["command"].split()) in page_text, \
            f"{where}: print the command that wrote {path.name} on the page: {record['command']}"


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("*.json")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_results_files_follow_the_schema(path):
    record = json.loads(path.read_text())
    assert record["schema"] == "rbgeo-results/1"
    assert {"what", "command", "measured", "table", "data"} <= set(record)
    cols, rows = record["table"]["columns"], record["table"]["rows"]
    assert cols and all(len(r) == len(cols) and all(isinstance(c, str) for c in r) for r in rows)


def test_the_checker_reads_tables_and_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- reference table -->\n\n| a | b |\n| --- | --- |\n| **1** | x \\| y |\n\nafter\n"
                    "| c |\n| :-- |\n| 2 |\n\n* a list item:\n\n  <!-- results: t/n.json -->\n  | d |\n  | --- |\n  | 3 |\n"
                    "\n```text\n| in | code |\n| --- | --- |\n```\n")
    first, second, third = tables(page)
    assert (first["kind"], first["columns"], first["rows"]) == ("reference table", ["a", "b"], [["1", "x \\| y"]])
    assert second["kind"] is None and second["rows"] == [["2"]]
    assert (third["kind"], third["arg"], third["rows"]) == ("results", "t/n.json", [["3"]])  # indented, in a list
