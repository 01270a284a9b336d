"""tests/test_cuda.py runs only on a GPU, so nothing else notices when a refactor moves a name it imports
inside a test: the first H200 session found ``robustbench_geo.sweep.config.expand`` gone (moved to
``sweep.cells`` two weeks before). Every import of the package or of ``tests`` in that file, at any depth,
must resolve here on the CPU."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

CUDA_TESTS = Path(__file__).with_name("test_cuda.py")


def _imports() -> list[tuple[str, str]]:
    out = []
    for node in ast.walk(ast.parse(CUDA_TESTS.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("robustbench_geo", "tests"):
            out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.split(".")[0] in ("robustbench_geo", "tests")]
    return out


@pytest.mark.parametrize("module, name", _imports(), ids=lambda v: v or "-")
def test_every_name_test_cuda_imports_exists(module, name):
    mod = importlib.import_module(module)
    if name:
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"{module} has no {name}"
