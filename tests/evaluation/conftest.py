"""The graph runner's tests share the structure-attack tests' small graphs and quickly trained models."""

from tests.attacks.graph.conftest import _one_thread, small_gcn, small_graph  # noqa: F401 (fixtures)
