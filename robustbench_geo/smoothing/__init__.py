"""Certified geometric robustness by randomized smoothing (TSS, Li et al., CCS 2021).

``certify(model, images, labels, "rotation", max_angle_deg=30, config=SmoothingConfig(sigma=0.5))``
returns a :class:`Certificate`: per sample the smoothed prediction, whether it is provably constant
over every rotation in the interval, the certified radius and the abstentions. See
:mod:`robustbench_geo.smoothing.tss` for the procedure and its proof, and ``docs/certification.md``.
"""

from robustbench_geo.smoothing.families import FAMILIES, Family, Rotation, Scaling, Translation, make_family
from robustbench_geo.smoothing.binomial import ABSTAIN, clopper_pearson_lower
from robustbench_geo.smoothing.attack import GridAttackResult, grid_attack
from robustbench_geo.smoothing.certification import (
    CertifyOutcome, certificate_config, certify_outcome, estimate_cost, evaluate_certification,
)
from robustbench_geo.smoothing.tss import Certificate, SmoothingConfig, certify, sample_counts

__all__ = ["ABSTAIN", "Certificate", "CertifyOutcome", "FAMILIES", "Family", "GridAttackResult", "Rotation", "Scaling",
           "SmoothingConfig", "Translation", "certificate_config", "certify", "certify_outcome", "clopper_pearson_lower", "estimate_cost", "evaluate_certification",
           "grid_attack", "make_family", "sample_counts"]
