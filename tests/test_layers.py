"""The package's import graph: layers point one way and no module takes part in a cycle.

Layers (lowest first): foundations -> geometry/ops -> data -> models -> checkpoint -> training (with
train_defenses) -> attacks -> evaluation (with smoothing and the composer, compose.py) -> sweep -> report -> api
-> cli. Every import counts, at module level or
inside a function: a function-level import is a way to defer a cost, never a way around the
layering. Run as a script to print the graph's violations: ``python tests/test_layers.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = "robustbench_geo"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: top-level unit of the package -> layer (a unit may import its own layer or lower ones)
LAYERS = {
    "_version": 0, "check": 0, "registry": 0, "stats": 0, "results_schema": 0, "threads": 0,
    "geometry": 1, "ops": 1,
    "data": 2,
    "models": 3,
    "checkpoint": 4, "loading": 4,
    "training": 5, "fewshot_training": 5, "train_defenses": 5,
    "attacks": 6,
    "evaluation": 7, "smoothing": 7, "compose": 7,
    "sweep": 8,
    "report": 9,
    "api": 10,
    "cli": 11, "__main__": 11,
}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file (packages by their ``__init__.py``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (the most specific existing module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t.startswith(PACKAGE) and t != name:
                found.add(t)
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in g.items():
        if m == PACKAGE:
            continue
        for t in targets:
            if t == PACKAGE:
                continue  # the root only defines __version__ and lazy names (checked separately)
            if LAYERS[unit(t)] > LAYERS[unit(m)]:
                bad.append(f"{m} (layer {unit(m)}) imports {t} (higher layer {unit(t)})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_unit_has_a_layer():
    units = {unit(m) for m in modules()} - {""}
    assert units <= set(LAYERS), f"expected every top-level module in LAYERS, missing: {sorted(units - set(LAYERS))}"


def test_imports_point_down():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_root_imports_only_the_version():
    g = graph()
    assert g[PACKAGE] <= {f"{PACKAGE}._version"}, g[PACKAGE]


TESTS = Path(__file__).resolve().parent
#: top-level test files that check the whole house rather than one module
WHOLE_HOUSE_TESTS = {"test_layers.py", "test_docs_results.py", "test_cuda.py", "test_cuda_imports.py", "test_doctests.py"}


def misplaced_tests(tests: Path = TESTS, package: Path = ROOT) -> list[str]:
    """Test files that do not stand where the package's layout says: ``tests/`` mirrors ``robustbench_geo/``.

    A test folder is a package folder of the same path; a top-level ``test_X.py`` or ``test_X_more.py``
    tests the module or package ``X`` (or is a whole-house check); a test that drives the command line (click's
    ``CliRunner`` or a ``test_cli*`` name) outside ``tests/cli/`` belongs there.
    """
    bad = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests)
        folder = rel.parent
        if folder.parts and not (package / folder / "__init__.py").is_file():
            bad.append(f"{rel}: no package folder {PACKAGE}/{folder.as_posix()} to mirror")
        elif not folder.parts and rel.name not in WHOLE_HOUSE_TESTS:
            stem = rel.stem.removeprefix("test_")  # test_api_bad_input.py tests api.py
            words = stem.split("_")
            heads = ["_".join(words[:i]) for i in range(len(words), 0, -1)]
            if not any((package / f"{h}.py").is_file() or (package / h / "__init__.py").is_file() for h in heads):
                bad.append(f"{rel}: no module {PACKAGE}/{stem}.py or package {PACKAGE}/{stem}/ to mirror")
        if folder.parts[:1] != ("cli",) and (rel.name.startswith("test_cli") or _CLICK_TESTING.search(path.read_text())):
            if (folder.as_posix(), rel.name) not in CLI_DRIVEN_ELSEWHERE:
                bad.append(f"{rel}: drives the command line, expected it under tests/cli/")
    return bad


_CLICK_TESTING = re.compile(r"^\s*(from click\.testing import|import click\.testing)", re.MULTILINE)
#: tests of a lower layer that reach it through one command (a sweep's progress lines, a report of nothing)
CLI_DRIVEN_ELSEWHERE = {("report", "test_no_results.py"), ("sweep", "test_progress.py"),
                        ("sweep", "test_quick_preset.py"), (".", "test_train_defenses.py")}


def test_tests_mirror_the_package():
    assert misplaced_tests() == []


def test_mirror_rule_finds_a_misplaced_test(tmp_path):
    pkg, tests = tmp_path / "pkg", tmp_path / "tests"
    for d in (pkg / "sweep", tests / "sweep", tests / "smoothing"):
        d.mkdir(parents=True)
    (pkg / "sweep" / "__init__.py").write_text("")
    (pkg / "api.py").write_text("")
    (tests / "test_api.py").write_text("")
    (tests / "test_api_bad_input.py").write_text("")
    (tests / "test_nothing.py").write_text("")
    (tests / "sweep" / "test_config.py").write_text("")
    (tests / "sweep" / "test_cli_run.py").write_text("")
    (tests / "smoothing" / "test_tss.py").write_text("")
    assert misplaced_tests(tests, pkg) == [
        f"smoothing/test_tss.py: no package folder {PACKAGE}/smoothing to mirror",
        "sweep/test_cli_run.py: drives the command line, expected it under tests/cli/",
        f"test_nothing.py: no module {PACKAGE}/nothing.py or package {PACKAGE}/nothing/ to mirror",
    ]


def test_checker_finds_an_upward_import_and_a_cycle():
    g = {f"{PACKAGE}.attacks.x": {f"{PACKAGE}.evaluation.y"}, f"{PACKAGE}.evaluation.y": {f"{PACKAGE}.attacks.x"}}
    assert upward_imports(g) == [f"{PACKAGE}.attacks.x (layer attacks) imports {PACKAGE}.evaluation.y (higher layer evaluation)"]
    assert cycles(g) == [sorted(g)]


if __name__ == "__main__":
    g = graph()
    for line in upward_imports(g):
        print("upward:", line)
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for line in misplaced_tests():
        print("misplaced:", line)
