"""Geometric attacks on images; importing this package registers them.

``grid``, ``worst_of_k``, ``random``, ``affine_pgd``, ``scale`` (affine threat models),
``stadv`` (flow field), and ``art:<EvasionAttack>`` (any ART evasion attack by name).
"""

from robustbench_geo.attacks.image import affine  # noqa: F401  (registers the affine attacks)
from robustbench_geo.attacks.image.affine import AffinePGD, GridAttack, RandomTransform, ScaleAttack, WorstOfK
from robustbench_geo.attacks.image.core import LOSSES, ImageAttack, ImageAttackResult

__all__ = ["AffinePGD", "GridAttack", "ImageAttack", "ImageAttackResult", "LOSSES", "RandomTransform", "ScaleAttack",
           "WorstOfK"]
