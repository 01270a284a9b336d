"""Named threat models: documented presets of registered attacks, named after the literature.

A threat model fixes an attack, its budget and the evaluation protocol; ``rbg.benchmark(model,
threat_model=NAME)`` runs it. Any registered attack name (``rbgeo list attacks``) is accepted in
its place, with its own defaults or the parameters given.

============================  ==========  ============================================================
name                          attack      parameters (others: the attack's defaults)
============================  ==========  ============================================================
``rotation-translation``      grid        +-30 deg in 31 steps x +-3 px in 5 x 5 steps (775 points)
``worst-of-10``               worst_of_k  k = 10 random draws in the same box
``random``                    random      one random draw in the same box
``scaling``                   scale       content scale in [0.4, 1] (grid + gradient refinement)
``affine``                    affine_pgd  the box above and content scale in [0.9, 1.1]
``flow``                      stadv       flow field, tau = 0.05, L-BFGS
``structure-evasion``         auto        5 % of the edges flipped, evasion (adaptive portfolio)
``structure-poisoning``       metattack   5 % of the edges flipped, poisoning (the model is retrained)
``targeted``                  nettack     degree + 2 flips per target, 40 targets, evasion
============================  ==========  ============================================================
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from robustbench_geo.attacks import get_attack, list_attacks
from robustbench_geo.check import UnknownNameError
from robustbench_geo.registry import Registry

#: the Engstrom et al. 2019 box for MNIST and CIFAR-10
ENGSTROM_BOX = {"max_angle_deg": 30.0, "max_shift_px": 3.0}


@dataclass(frozen=True)
class ThreatModel:
    """A named preset of a registered attack.

    Attributes:
        name: the threat model's name (``rotation-translation``, ...).
        attack: the registered attack that realises it.
        params: the attack parameters the preset fixes (the rest keep the attack's defaults).
        domain: ``image`` or ``graph``.
        source: the paper the threat model follows.
        description: one line for tables.
        options: evaluation protocol options for the runner (graphs: ``mode``).
    """

    name: str
    attack: str
    params: dict
    domain: str
    source: str
    description: str
    options: dict = field(default_factory=dict)


THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")


def register_threat_model(tm: ThreatModel) -> ThreatModel:
    """Register a preset; its attack must be registered and its parameters valid for it."""
    entry = get_attack(tm.attack)
    if not entry.applies_to(tm.domain):
        raise ValueError(f"threat model {tm.name!r}: attack {tm.attack!r} is a {entry.domain} attack, not {tm.domain}")
    entry.fill(tm.params)  # unknown parameter names fail here, at import
    return THREAT_MODELS.add(tm.name, tm)


_ENGSTROM = "Engstrom et al. 2019, Exploring the Landscape of Spatial Robustness (ICML)"
for _tm in (
    ThreatModel("rotation-translation", "grid", {**ENGSTROM_BOX, "angle_steps": 31, "shift_steps": 5}, "image",
                _ENGSTROM, "exhaustive grid: 31 rotations x 5 x 5 shifts (775 transforms) per image"),
    ThreatModel("worst-of-10", "worst_of_k", {**ENGSTROM_BOX, "k": 10}, "image", _ENGSTROM,
                "10 random rotations + shifts per image, the worst one kept"),
    ThreatModel("random", "random", dict(ENGSTROM_BOX), "image", _ENGSTROM,
                "one random rotation + shift per image (the average case)"),
    ThreatModel("scaling", "scale", {"scale_range": (0.4, 1.0)}, "image",
                "Dai et al. 2017, Deformable Convolutional Networks (ICCV): the Scaled MNIST range",
                "content shrunk to 40-100 % of its size: grid search, then gradient refinement"),
    ThreatModel("affine", "affine_pgd", {**ENGSTROM_BOX, "scale_range": (0.9, 1.1)}, "image",
                f"{_ENGSTROM}: their first-order attack, extended to scale",
                "projected gradient ascent on rotation, shifts and log-scale (5 restarts x 40 steps)"),
    ThreatModel("flow", "stadv", {"tau": 0.05}, "image",
                "Xiao et al. 2018, Spatially Transformed Adversarial Examples (ICLR)",
                "a smooth per-pixel flow field (stAdv), L-BFGS with a binary search on tau"),
    ThreatModel("structure-evasion", "auto", {"budget_edge_fraction": 0.05}, "graph",
                "Mujkanovic et al. 2022, Are Defenses for Graph Neural Networks Robust? (NeurIPS); "
                "Xu et al. 2019 (PGD); Geisler et al. 2021 (PR-BCD)",
                "5 % of the edges flipped against the trained model (evasion); the adaptive portfolio "
                "(PGD variants that fit the model, PR-BCD), lowest real accuracy wins", {"mode": "evasion"}),
    ThreatModel("structure-poisoning", "metattack", {"budget_edge_fraction": 0.05}, "graph",
                "Zügner & Günnemann 2019, Adversarial Attacks on GNNs via Meta Learning (ICLR)",
                "5 % of the edges flipped before training; the model is retrained on the perturbed graph",
                {"mode": "poisoning"}),
    ThreatModel("targeted", "nettack", {}, "graph",
                "Zügner et al. 2018, Adversarial Attacks on Neural Networks for Graph Data (KDD)",
                "degree + 2 flips per target on 40 test nodes (10 highest margin, 10 lowest, 20 random)",
                {"mode": "evasion"}),
):
    register_threat_model(_tm)
del _tm


def list_threat_models(domain: str | None = None, pattern: str = "*") -> list[str]:
    """Names of the threat models matching the glob ``pattern``, optionally of one domain."""
    return THREAT_MODELS.names(pattern, None if domain is None else (lambda t: t.domain == domain))


def get_threat_model(name: str) -> ThreatModel:
    """The preset ``name``, or a plain registered attack (``grid``, ``pgd``, ``art:...``) with its defaults.

    Raises:
        UnknownNameError: listing close matches among the threat models and the attacks.
    """
    if name in THREAT_MODELS:
        return THREAT_MODELS.get(name)
    try:
        entry = get_attack(name)
    except KeyError:
        close = difflib.get_close_matches(name, THREAT_MODELS.valid_names() + list_attacks(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown threat model {name!r}.{hint} Valid threat models: "
                               f"{', '.join(THREAT_MODELS.valid_names())}; or any attack: {', '.join(list_attacks())}") from None
    return ThreatModel(name, name, {}, entry.domain, "", entry.description)
