"""Attacks: ``image/`` (geometric threat models), ``graph/`` (structure attacks) and ``none``.

Importing this package registers every built-in attack.
"""

from robustbench_geo.attacks import graph, image, none  # noqa: F401  (importing registers the attacks)
from robustbench_geo.attacks.base import (
    ATTACKS, AttackEntry, check_params, create_attack, get_attack, list_attacks, register_attack,
)
from robustbench_geo.attacks.none import NoAttack

__all__ = ["ATTACKS", "AttackEntry", "NoAttack", "check_params", "create_attack", "get_attack", "list_attacks",
           "register_attack"]
