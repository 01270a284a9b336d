"""Geometric attacks on images; importing this package registers them.

``grid``, ``worst_of_k``, ``random``, ``affine_pgd``, ``scale`` (affine threat models),
``stadv`` (flow field), ``manifool`` (smallest fooling transform, Kanbak et al. 2018) and ``art:<EvasionAttack>`` (any ART evasion attack by name).
"""

from robustbench_geo.attacks.image import affine, art_bridge, manifool, stadv  # noqa: F401  (importing registers the attacks)
from robustbench_geo.attacks.image.affine import AffinePGD, GridAttack, RandomTransform, ScaleAttack, WorstOfK
from robustbench_geo.attacks.image.art_bridge import to_art
from robustbench_geo.attacks.image.core import LOSSES, ImageAttack, ImageAttackResult
from robustbench_geo.attacks.image.manifool import ManiFool
from robustbench_geo.attacks.image.stadv import StAdv

__all__ = ["AffinePGD", "GridAttack", "ImageAttack", "ImageAttackResult", "LOSSES", "ManiFool", "RandomTransform", "ScaleAttack",
           "StAdv", "WorstOfK", "to_art"]
