"""Certification of a model on a dataset, with the attack bracket and a cost estimate.

:func:`evaluate_certification` is what ``rbgeo certify`` and the sweep's ``certify`` table run: the
TSS certificate of the smoothed classifier (lower bound), the grid attack on the same smoothed
classifier and on the base classifier over the same box (upper bounds), per sample and summarised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from robustbench_geo.data.base import ImageDataset
from robustbench_geo.evaluation.outcome import AttackOutcome
from robustbench_geo.results_schema import ci_key, flat_intervals
from robustbench_geo.geometry import NoisyAugmentation, get_augmentation
from robustbench_geo.models.predict import model_device
from robustbench_geo.smoothing.attack import grid_attack, grid_points
from robustbench_geo.smoothing.families import Family, interpolation_bound, make_family
from robustbench_geo.smoothing.binomial import proportion_interval
from robustbench_geo.smoothing.tss import (
    SmoothingConfig, certify, check_certify_cost, image_generator, inference_model, probe_batch, sample_counts,
)


@dataclass
class CertifyOutcome:
    """Summary and per-sample rows of one certification run (``metrics`` accuracies are fractions in [0, 1])."""

    transform: dict
    config: dict
    metrics: dict
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"transform": self.transform, "config": self.config, "metrics": self.metrics, "seconds": self.seconds}


def _with_ci(metrics: dict, key: str, mask: torch.Tensor) -> None:
    n, k = int(mask.numel()), int(mask.sum())
    metrics[key] = k / n if n else float("nan")
    metrics[ci_key(key)] = list(proportion_interval(k, n))


def evaluate_certification(model: nn.Module, dataset: ImageDataset, transform: str | Family = "rotation", *,
                           config: SmoothingConfig | None = None, attack: bool = True, attack_points: int = 61,
                           attack_samples: int = 100, progress: bool = False, **family_kwargs) -> CertifyOutcome:
    """Certify ``model`` on every image of ``dataset`` and bracket the result with grid attacks.

    Args:
        model: base classifier (noise is drawn on its device).
        dataset: test images (a seeded subset for speed).
        transform, family_kwargs: the family and its budget (``max_angle_deg=30``, ...).
        config: smoothing and certificate settings.
        attack: also run the grid attack on the smoothed and on the base classifier.
        attack_points: grid points per parameter axis.
        attack_samples: noisy samples per grid point for the smoothed classifier's prediction.

    Returns:
        :class:`CertifyOutcome`; ``metrics`` holds ``certified_accuracy`` (lower bound),
        ``smoothed_attack_accuracy`` and ``base_attack_accuracy`` (upper bounds), the smoothed and base
        clean accuracy and the abstention rate, each with its 95 % Clopper-Pearson interval
        ``<rate>_ci: [low, high]`` (:func:`~robustbench_geo.results_schema.ci_key`), and ``n``.
    """
    family = make_family(transform, **family_kwargs)
    cfg = (config or SmoothingConfig()).resolved(family)
    images, labels = dataset.images, dataset.labels
    check_certify_cost(family, cfg, images.shape, len(labels), attack_points=attack_points if attack else 0,
                       attack_samples=attack_samples)
    t0 = time.perf_counter()
    dev = model_device(model)
    cert = certify(model, images, labels, family, config=cfg, progress=progress)
    metrics = {"n": int(labels.shape[0]), **{k: v for k, v in cert.summary().items() if k != "n"}}
    rows = cert.rows()
    with torch.inference_mode():
        model.eval()
        base_pred = torch.cat([model(images[s:s + 512].to(dev)).argmax(1).cpu() for s in range(0, len(labels), 512)])
    _with_ci(metrics, "base_clean_accuracy", base_pred == labels)
    if attack:
        smooth = grid_attack(model, images, labels, family, points=attack_points, sigma=cfg.sigma, n=attack_samples,
                             batch_size=cfg.batch_size, seed=cfg.seed + 1)
        base = grid_attack(model, images, labels, family, points=attack_points, sigma=0.0, batch_size=cfg.batch_size)
        _with_ci(metrics, "smoothed_attack_accuracy", smooth.robust)
        _with_ci(metrics, "base_attack_accuracy", base.robust)
        metrics["attack_points"] = smooth.points
        metrics["attack_samples"] = attack_samples
        for r, sr, sw, br, bw in zip(rows, smooth.robust.tolist(), smooth.worst.tolist(), base.robust.tolist(),
                                     base.worst.tolist()):
            r.update({"smoothed_attack_robust": sr, "smoothed_attack_param": sw[0] if len(sw) == 1 else sw,
                      "base_attack_robust": br, "base_attack_param": bw[0] if len(bw) == 1 else bw})
    return CertifyOutcome(family.describe(), dict(cfg.__dict__), metrics, rows, time.perf_counter() - t0)


def estimate_cost(model: nn.Module, image: torch.Tensor, transform: str | Family = "rotation", *,
                  config: SmoothingConfig | None = None, images: int = 1, attack_points: int = 61,
                  attack_samples: int = 100, **family_kwargs) -> dict:
    """Estimate the work and time of certifying ``images`` images like ``image`` ``(C, H, W)`` (a dry run).

    Times one model call of ``batch_size`` noisy images and one interpolation bound, then scales by the
    worst-case counts (every node evaluated; uncertified images stop at their first failing cell and
    cost less). Returns a dict of counts and seconds.
    """
    family = make_family(transform, **family_kwargs)
    cfg = (config or SmoothingConfig()).resolved(family)
    check_certify_cost(family, cfg, image.shape, 1)  # the dry run itself builds one image's bound
    dev = model_device(model)
    k = cfg.cells ** family.dims
    warps = k * (cfg.substeps + 1) ** family.dims + k
    forwards = cfg.n0 + k * cfg.n
    attack_forwards = grid_points(family, attack_points).shape[0] * (attack_samples + 1)
    model.eval()
    net = inference_model(model, probe_batch(image[None], cfg.sigma, dev))
    t0 = time.perf_counter()
    sample_counts(net, image[None].to(dev), cfg.batch_size, cfg.sigma, image_generator(dev, 0, 0), cfg.batch_size)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    per_forward = (time.perf_counter() - t0) / cfg.batch_size
    t0 = time.perf_counter()
    interpolation_bound(family, image.cpu(), cfg.cells, cfg.substeps)
    bound_s = time.perf_counter() - t0
    per_image = forwards * per_forward + bound_s + attack_forwards * per_forward
    return {"images": images, "nodes": k, "warps_per_image": warps, "forward_passes_per_image": forwards,
            "attack_forward_passes_per_image": attack_forwards, "seconds_per_forward": per_forward,
            "seconds_interpolation_bound": bound_s, "seconds_per_image": per_image,
            "seconds_total": per_image * images, "device": str(dev)}


def checkpoint_sigma(checkpoint_meta: dict | None) -> float | None:
    """The noise a checkpoint was trained with (a ``...-noise:...,sigma=S`` augmentation), ``None`` without one."""
    aug = get_augmentation((checkpoint_meta or {}).get("train", {}).get("augment", "none"))
    return aug.noise_sd if isinstance(aug, NoisyAugmentation) and aug.noise_sd > 0 else None


def certificate_config(params: dict, checkpoint_meta: dict | None = None, seed: int = 0) -> SmoothingConfig:
    """The smoothing settings of a certificate's ``params``; without ``sigma``, the noise the checkpoint was
    trained with (:func:`checkpoint_sigma`), else 0.25."""
    sigma = params.get("sigma")
    if sigma is None:
        sigma = checkpoint_sigma(checkpoint_meta) or 0.25
    return SmoothingConfig(sigma=sigma, n0=params.get("n0", 100), n=params.get("samples", 1000),
                           alpha=params.get("alpha", 0.001), cells=params.get("cells"), substeps=params.get("substeps"),
                           batch_size=params.get("batch_size", 1000), seed=seed)


def certify_outcome(model: nn.Module, dataset: ImageDataset, params: dict, *, checkpoint_meta: dict | None = None,
                    seed: int = 0, progress: bool = False):
    """A sweep cell of a ``[certify.LABEL]`` table, as an :class:`~robustbench_geo.evaluation.outcome.AttackOutcome`.

    ``params`` holds ``transform``, ``family`` (the budget) and optional smoothing settings (``sigma``,
    ``samples``, ``n0``, ``alpha``, ``cells``, ``substeps``, ``batch_size``, ``attack_points``,
    ``attack_samples``). ``metrics["robust_accuracy"]`` is the *certified* accuracy (a lower bound);
    ``smoothed_attack_accuracy`` and ``base_attack_accuracy`` are the attacks' upper bounds and
    ``clean_accuracy`` the base classifier's clean accuracy. The store keeps numbers only, so each interval is
    two metrics, ``<rate>_ci_low`` and ``<rate>_ci_high`` (:func:`~robustbench_geo.results_schema.ci_bounds`).
    """
    p = dict(params)
    cfg = certificate_config(p, checkpoint_meta, seed)
    sigma = cfg.sigma
    points = int(p.get("attack_points", 61))
    o = evaluate_certification(model, dataset, p["transform"], config=cfg, attack=points > 0, attack_points=max(points, 1),
                               attack_samples=int(p.get("attack_samples", 100)), progress=progress, **p.get("family", {}))
    metrics = flat_intervals(o.metrics)  # the store keeps numbers only: <rate>_ci_low / <rate>_ci_high
    metrics["clean_accuracy"] = o.metrics["base_clean_accuracy"]
    metrics["robust_accuracy"] = o.metrics["certified_accuracy"]  # a lower bound, unlike the attacks' rows
    return AttackOutcome("certify", {**p, "sigma": sigma}, seed, metrics, o.rows, {}, o.seconds,
                         {"transform": o.transform, "smoothing": o.config})
