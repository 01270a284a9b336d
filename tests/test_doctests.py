"""The docstrings' examples run: every module of the package with an example that is not ``+SKIP``-ped.

Examples that need a trained model or data on disk carry ``# doctest: +SKIP``; the rest run here,
so an example that drifts from the code fails the suite.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.test_layers import modules

#: modules that import an optional accelerator library at import time
OPTIONAL = ("robustbench_geo.ops._deform_triton", "robustbench_geo.ops._deform_triton_kernels")


def _with_examples() -> list[str]:
    found = []
    for name, path in modules().items():
        if name not in OPTIONAL and ">>>" in path.read_text():
            found.append(name)
    return found


@pytest.mark.parametrize("name", _with_examples())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"


def test_some_examples_run():
    """The finder above is not vacuous: at least one module has an example that runs (is not skipped)."""
    attempted = 0
    for name in _with_examples():
        module = importlib.import_module(name)
        runner = doctest.DocTestRunner()
        for test in doctest.DocTestFinder().find(module, name):
            runner.run(test)
        attempted += runner.summarize(verbose=False).attempted
    assert attempted > 0
