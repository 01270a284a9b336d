"""Files the suite never runs on the CPU must still import what exists: nothing else notices when a refactor
moves a name they import inside a function.

* tests/test_cuda.py runs only on a GPU: the first H200 session found ``robustbench_geo.sweep.config.expand``
  gone (moved to ``sweep.cells`` two weeks before);
* the scripts under benchmarks/ run by hand: ``benchmarks/certify.py`` and ``smoothing_base.py`` imported
  ``cli.certify._checkpoint_sigma`` for weeks after it was removed.

Every import of the package (or of ``tests``) in those files, at any depth, must resolve here, and so must
every attribute read from an imported package module (``tss.sample_counts`` after
``from robustbench_geo.smoothing import tss``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CUDA_TESTS = Path(__file__).with_name("test_cuda.py")
FILES = [CUDA_TESTS, *sorted((ROOT / "benchmarks").glob("*.py"))]
PACKAGES = ("robustbench_geo", "tests")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every package import in ``path`` (``name`` empty for ``import module``), and
    ``(module, attribute)`` for every attribute read from a module bound by one of them."""
    tree = ast.parse(path.read_text())
    out, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for a in node.names:
                out.append((node.module, a.name))
                if _is_module(f"{node.module}.{a.name}"):
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    out.append((a.name, ""))
                    if a.asname:
                        modules[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            out.append((modules[node.value.id], node.attr))
    return sorted(set(out))


CASES = [(path.relative_to(ROOT).as_posix(), module, name) for path in FILES for module, name in _imports(path)]


@pytest.mark.parametrize("where, module, name", CASES, ids=[f"{w}:{m}:{n or '-'}" for w, m, n in CASES])
def test_every_name_test_cuda_imports_exists(where, module, name):
    mod = importlib.import_module(module)
    if name:
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"{where}: {module} has no {name}"


def test_the_check_reads_attributes_of_imported_modules():
    uses = _imports(ROOT / "benchmarks" / "certify_throughput.py")
    assert ("robustbench_geo.smoothing.tss", "sample_counts") in uses
