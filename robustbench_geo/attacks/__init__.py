"""Attacks: ``image/`` (geometric threat models) and ``graph/`` (structure attacks)."""

from robustbench_geo.attacks.base import (
    AttackOutcome, create_attack, evaluate_attack, get_attack, list_attacks, register_attack,
)

__all__ = ["AttackOutcome", "create_attack", "evaluate_attack", "get_attack", "list_attacks", "register_attack"]
