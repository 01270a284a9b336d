"""Graph-structure attacks (registered under the ``graph`` domain); results are
:class:`~robustbench_geo.attacks.graph.base.GraphPerturbation`."""

from robustbench_geo.attacks.graph import auto, collapse, gradargmax, metattack, nettack, pgd, prognn_track, random, rbcd  # noqa: F401  (register the attacks)
from robustbench_geo.attacks.graph.base import GraphPerturbation, InvalidPerturbationError, check_perturbation

__all__ = ["GraphPerturbation", "InvalidPerturbationError", "check_perturbation"]
