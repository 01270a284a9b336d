"""Certification of geometric robustness by transformation-specific smoothing (TSS).

Li, Weber, Xu, Rimanic, Kailkhura, Xie, Zhang, Li: "TSS: Transformation-Specific Smoothing for
Robustness Certification", ACM CCS 2021 (arXiv:2002.12398), the "differentially resolvable"
certification of rotation and scaling (code: AI-secure/semantic-randomized-smoothing,
``semantic/strict_rotation_certify.py`` and ``strict_resize_certify.py``), built on Cohen, Rosenfeld and
Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML 2019.

The smoothed classifier is Gaussian smoothing of the base classifier ``h``:
``g(x) = argmax_c P(h(x + eps) = c)``, ``eps ~ N(0, sigma^2 I)``. The base classifier is trained on
transformed, noisy images (``--augment rotate-noise:...``, TSS's consistency of training and
certification). For one image ``x`` and a transform family ``phi(x, t)``, ``t`` in a box:

1. Prediction (Cohen's PREDICT, as TSS's ``strict_resize_certify.py``): ``n0`` noisy copies of ``x``;
   the top class ``c`` if a binomial test against the runner-up rejects ``p = 1/2`` at level ``alpha``,
   else abstain.
2. The box is split into ``K`` cells with nodes ``t_j``; :func:`~robustbench_geo.smoothing.families.interpolation_bound`
   bounds ``M_j >= ||phi(x, t) - phi(x, t_j)||_2`` for every ``t`` in cell ``j`` (TSS's sampling-based bound).
3. Estimation (fresh samples, Cohen's CERTIFY): ``n`` noisy copies of ``phi(x, t_j)`` per node; ``p_j``
   is the one-sided Clopper-Pearson lower bound on ``P(h(phi(x, t_j) + eps) = c)`` at level
   ``alpha / K`` (Bonferroni over the nodes, as TSS's scaling script) and ``R_j = sigma Phi^-1(p_j)``.
4. Certified iff ``R_j > M_j`` for every node. Proof sketch: by Cohen et al.'s Theorem 1, ``g`` returns ``c``
   on the l2 ball of radius ``R_j`` around ``phi(x, t_j)``; every ``phi(x, t)``, ``t`` in cell ``j``, lies
   in it. With probability ``>= 1 - alpha`` over the estimation samples all ``K`` bounds hold at once,
   so ``g(phi(x, t)) = c`` for every ``t`` in the box.

Deviations from TSS's code, all in the sound direction: a fixed number ``n`` of samples per node (TSS's
rotation script stops early once the running bound suffices, which tests repeatedly without correcting
for it); Bonferroni over the nodes for rotation too. Extras: the certified *parameter* radius (the
largest box around the identity whose cells all pass; degrees or pixels) and the l2 margin
``min_j (R_j - M_j)`` (extra l2 noise tolerated on top of any transform in the box).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from robustbench_geo.smoothing.families import (
    DEFAULT_CELLS, DEFAULT_SUBSTEPS, Family, interpolation_bound, make_family,
)
from robustbench_geo.smoothing.binomial import (
    ABSTAIN, clopper_pearson_lower, gaussian_radius, predict_top, proportion_interval,
)
from robustbench_geo.models.predict import model_device
from robustbench_geo.check import check_cost, check_images, check_labels, check_number, check_seed
from robustbench_geo.results_schema import ci_key


@dataclass(frozen=True)
class SmoothingConfig:
    """Settings of the smoothed classifier and of the certificate.

    Args:
        sigma: standard deviation of the Gaussian smoothing noise (pixel-value units, images in [0, 1]).
        n0: selection samples (PREDICT at the clean image).
        n: estimation samples per node.
        alpha: failure probability of the whole certificate of one image.
        cells: cells per parameter axis (``None``: the family's default, 120 for rotation).
        substeps: sub-cells per axis where the interpolation error is evaluated.
        batch_size: noisy images per model call.
        seed: seed of the noise; image ``i`` of a call uses its own stream (seeded by ``seed`` and ``i``).
    """

    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    cells: int | None = None
    substeps: int | None = None
    batch_size: int = 1000
    seed: int = 0

    def __post_init__(self):
        # the same checks as attack parameters (frozen dataclass: normalised values are set through object)
        check_number(self.sigma, "sigma", low=0.0, low_open=True)
        for name in ("n0", "n", "batch_size"):
            object.__setattr__(self, name, check_number(getattr(self, name), name, integer=True, low=1))
        for name in ("cells", "substeps"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_number(getattr(self, name), name, integer=True, low=1))
        a = check_number(self.alpha, "alpha", low=0.0, low_open=True)
        if a >= 1:
            raise ValueError(f"alpha: expected a failure probability in (0, 1), got {self.alpha}")
        object.__setattr__(self, "seed", check_seed(self.seed, "seed"))

    def resolved(self, family: Family) -> "SmoothingConfig":
        cells = self.cells or DEFAULT_CELLS[family.name]
        substeps = self.substeps or DEFAULT_SUBSTEPS[family.name]
        return SmoothingConfig(self.sigma, self.n0, self.n, self.alpha, cells, substeps, self.batch_size, self.seed)


@dataclass(frozen=True)
class Certificate:
    """Per-sample outcome of :func:`certify` (tensors of shape ``(B,)``, on the CPU).

    Attributes:
        prediction: smoothed prediction at the clean image, :data:`ABSTAIN` (-1) for an abstention.
        certified: the smoothed prediction is provably constant over the whole box.
        correct: ``certified`` and the prediction is the label (counts towards certified accuracy).
        radius: certified parameter radius in the family's unit (degrees, pixels; for scaling the
            distance in ``1/scale`` from 1): every transform whose parameter is within it is certified.
        l2_margin: ``min_j (R_j - M_j)``; ``-inf`` when some node has ``p_j <= 1/2``.
        interpolation_error: largest ``M_j`` over the cells (l2).
        p_lower: smallest Clopper-Pearson lower bound over the nodes evaluated.
        forward_passes: base-classifier calls per sample (selection + estimation).
    """

    family: dict
    config: dict
    labels: torch.Tensor
    prediction: torch.Tensor
    certified: torch.Tensor
    radius: torch.Tensor
    l2_margin: torch.Tensor
    interpolation_error: torch.Tensor
    p_lower: torch.Tensor
    forward_passes: torch.Tensor
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def correct(self) -> torch.Tensor:
        return self.certified & (self.prediction == self.labels)

    @property
    def abstained(self) -> torch.Tensor:
        return self.prediction == ABSTAIN

    def summary(self) -> dict:
        """Certified and smoothed clean accuracy, abstention and certified rate, each with its 95 % Clopper-Pearson
        interval ``<rate>_ci: [low, high]``, and n."""
        n = int(self.labels.shape[0])
        out = {"n": n, "seconds": self.seconds, "forward_passes": int(self.forward_passes.sum())}
        for key, mask in (("certified_accuracy", self.correct), ("smoothed_accuracy", self.prediction == self.labels),
                          ("abstention_rate", self.abstained), ("certified_rate", self.certified)):
            k = int(mask.sum())
            lo, hi = proportion_interval(k, n)
            out[key] = k / n if n else float("nan")
            out[ci_key(key)] = [lo, hi]
        return out

    def rows(self) -> list[dict]:
        """One dict per sample for CSV output."""
        cols = {"label": self.labels, "prediction": self.prediction, "certified": self.certified,
                "correct": self.correct, "abstained": self.abstained, "radius": self.radius,
                "l2_margin": self.l2_margin, "interpolation_error": self.interpolation_error,
                "p_lower": self.p_lower, "forward_passes": self.forward_passes}
        lists = {k: v.tolist() for k, v in cols.items()}
        return [{"index": i, **{k: lists[k][i] for k in lists}} for i in range(self.labels.shape[0])]


@torch.inference_mode()
def sample_counts(model: nn.Module, images: torch.Tensor, n: int, sigma: float, generator: torch.Generator,
                  batch_size: int, num_classes: int | None = None) -> torch.Tensor:
    """Class counts of the base classifier on ``n`` noisy copies of each of ``images``.

    The noise of copy ``k`` of image ``i`` is the ``(i n + k)``-th draw of ``generator`` whatever the
    batch size (one buffer, refilled in place per batch), so counts do not depend on ``batch_size``.

    Args:
        model: base classifier (eval mode), on the device where the noise is drawn.
        images: ``(P, C, H, W)`` on the model's device.
        n: noisy copies per image.
        sigma: noise standard deviation.
        generator: a ``torch.Generator`` on the model's device.
        batch_size: noisy images per model call (copies of several images share a batch).
        num_classes: width of the count table (``None``: from the first model output).

    Returns:
        ``(P, num_classes)`` int64 counts on the CPU.
    """
    p = images.shape[0]
    total = p * n
    counts = None
    buf = torch.empty((min(batch_size, total), *images.shape[1:]), device=images.device, dtype=images.dtype)
    for s in range(0, total, batch_size):
        e = min(s + batch_size, total)
        owner = torch.arange(s, e, device=images.device) // n
        x = buf[:e - s]
        torch.randn(x.shape, generator=generator, out=x)
        x.mul_(sigma).add_(images[owner])  # = images[owner] + sigma * noise, bit for bit
        logits = model(x)
        if counts is None:
            counts = torch.zeros(p * (num_classes or logits.shape[1]), dtype=torch.int64, device=images.device)
        c = counts.numel() // p
        counts.index_add_(0, owner * c + logits.argmax(1), torch.ones_like(owner))
    if counts is None:
        return torch.zeros(p, num_classes or 0, dtype=torch.int64)
    return counts.view(p, -1).cpu()


def probe_batch(images: torch.Tensor, sigma: float, device: torch.device, size: int = 16) -> torch.Tensor:
    """A few noisy copies of the first image (a fixed seed, separate from the certificate's streams)."""
    if images.shape[0] == 0:
        return images.to(device)
    g = torch.Generator().manual_seed(12345)
    x = images[:1].detach().float().cpu().expand(size, *images.shape[1:])
    return (x + sigma * torch.randn(x.shape, generator=g)).to(device)


def inference_model(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The model to sample with: on the CPU a frozen TorchScript copy with fused convolution + ReLU
    (``torch.jit.optimize_for_inference``; 1.3-1.5x the forward passes per second of ``small_cnn``).

    Scripting (not tracing) keeps the model's control flow, so the copy is the same function up to
    float32 rounding; it is used only if it scripts and its predictions on ``example`` (a few noisy
    inputs) equal the model's, else the model itself is returned. On other devices: the model.
    """
    if example.device.type != "cpu" or example.shape[0] == 0:
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = torch.jit.optimize_for_inference(torch.jit.script(model.eval()))
        with torch.inference_mode():
            same = torch.equal(fast(example).argmax(1), model(example).argmax(1))
    except Exception:  # noqa: BLE001 -- any scripting failure means: use the model as it is
        return model
    return fast if same else model


def image_generator(device: torch.device, seed: int, index: int) -> torch.Generator:
    """The noise stream of image ``index`` under ``seed``: a certificate and its grid attack draw image ``i``'s
    noise from it, so an image's numbers do not depend on which other images are certified beside it."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(index)) % (2 ** 63))
    return g


def check_certify_cost(family: Family, cfg: "SmoothingConfig", image_shape, images: int, *, attack_points: int = 0,
                       attack_samples: int = 0) -> None:
    """Refuse, before any allocation, a certificate that cannot fit (cells, samples, shift range, batch size).

    The estimate per image: the interpolation bound's source points and gathers (``K H W`` float64 values a
    few times over, ``K = cells ** dims``), the warped nodes, the padded neighbourhood maps (their padding
    grows with the pixels a cell spans) and one batch of noisy images; the samples through the model are the
    selection, ``K`` estimations of ``n`` and the attack grid. Raises
    :class:`~robustbench_geo.check.ResourceLimitError` with the estimate.
    """
    c, h, w = (int(v) for v in image_shape[-3:])
    cells = cfg.cells or DEFAULT_CELLS[family.name]
    substeps = cfg.substeps or DEFAULT_SUBSTEPS[family.name]
    k = cells ** family.dims
    width = max(hi - lo for lo, hi in family.box()) / cells
    moved = float(family.speed((h, w)).max()) * width * math.sqrt(family.dims)  # pixels a source point moves per cell
    pad = math.ceil(moved) + 3
    noisy = min(cfg.batch_size, max(cfg.n, cfg.n0) * max(k, 1))
    nbytes = (k * h * w * 72 + k * c * h * w * 4 + k * (substeps + 1) ** family.dims * 8
              + (h + 2 * pad) * (w + 2 * pad) * c * 8 * 6 + noisy * c * h * w * 4 * 3)
    samples = images * (cfg.n0 + k * cfg.n + attack_points ** family.dims * (attack_samples + 2))
    budget = ", ".join(f"{k}={v:g}" for k, v in family.describe().items() if k != "transform")
    what = (f"certify {family.name} ({budget}): cells={cells}^{family.dims}, samples={cfg.n}, batch_size={cfg.batch_size} "
            f"on {images} image(s) of {c}x{h}x{w}")
    check_cost(what, nbytes=nbytes, samples=samples, hint="use fewer cells or samples, a smaller batch or range")


def certify(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, transform: str | Family = "rotation", *,
            config: SmoothingConfig | None = None, progress: bool = False, **family_kwargs) -> Certificate:
    """Certify a Gaussian-smoothed classifier against every transform of a family (TSS, see module docstring).

    Args:
        model: base classifier ``(B, C, H, W) -> (B, classes)``; noise is drawn on its device.
        images: ``(B, C, H, W)`` clean images in ``[0, 1]``.
        labels: ``(B,)`` labels.
        transform: ``rotation`` (``max_angle_deg``), ``scaling`` (``min_scale``, ``max_scale``), ``translation``
            (``max_shift_px``) or a :class:`~robustbench_geo.smoothing.families.Family`.
        config: :class:`SmoothingConfig` (sigma, sample counts, alpha, cells, seed).
        progress: show a progress bar over images.
        **family_kwargs: the family's budget, e.g. ``max_angle_deg=30``.

    Returns:
        :class:`Certificate` with the per-sample prediction, certified flag, radius and abstentions.

    Example:
        >>> cert = certify(model, x, y, "rotation", max_angle_deg=30,
        ...                config=SmoothingConfig(sigma=0.5, n=1000))      # doctest: +SKIP
        >>> cert.summary()["certified_accuracy"]                        # doctest: +SKIP
    """
    check_images(images, "images")
    check_labels(labels, images.shape[0], "labels")
    family = make_family(transform, **family_kwargs)
    cfg = (config or SmoothingConfig()).resolved(family)
    check_certify_cost(family, cfg, images.shape, images.shape[0])
    dev = model_device(model)
    was_training = model.training
    model.eval()
    net = inference_model(model, probe_batch(images, cfg.sigma, dev))
    b = images.shape[0]
    pred = torch.full((b,), ABSTAIN, dtype=torch.int64)
    cert = torch.zeros(b, dtype=torch.bool)
    radius = torch.zeros(b, dtype=torch.float64)
    margin = torch.full((b,), -math.inf, dtype=torch.float64)
    m_err = torch.zeros(b, dtype=torch.float64)
    p_low = torch.zeros(b, dtype=torch.float64)
    passes = torch.zeros(b, dtype=torch.int64)
    t0 = time.perf_counter()
    try:
        for i in tqdm(range(b), desc=f"certify {family.name}", unit="image", disable=not progress):
            out = _certify_one(net, images[i], family, cfg, image_generator(dev, cfg.seed, i), dev)
            pred[i], cert[i], radius[i], margin[i], m_err[i], p_low[i], passes[i] = out
    finally:
        model.train(was_training)
    return Certificate(family.describe(), {**cfg.__dict__}, labels.detach().cpu().long(), pred, cert, radius, margin,
                       m_err, p_low, passes, time.perf_counter() - t0)


def _certify_one(model, image, family: Family, cfg: SmoothingConfig, gen, dev):
    x = image.to(dev)
    sel = sample_counts(model, x[None], cfg.n0, cfg.sigma, gen, cfg.batch_size)[0]
    c = predict_top(sel, cfg.alpha)
    passes = cfg.n0
    lower, m, width = interpolation_bound(family, image.detach().cpu(), cfg.cells, cfg.substeps)
    k = lower.shape[0]
    dist = family.cell_distance(lower, width)
    full = family.full_radius()
    if c == ABSTAIN:
        return c, False, 0.0, -math.inf, float(m.max()), 0.0, passes
    order = torch.argsort(dist, stable=True)  # nearest cells first: the first failure fixes the radius
    per_call = max(1, cfg.batch_size // cfg.n)
    alpha_node = cfg.alpha / k
    min_gap, min_p, radius_v = math.inf, 1.0, full
    for s in range(0, k, per_call):
        idx = order[s:s + per_call]
        nodes = family.warp(x[None].float().cpu(), lower[idx]).to(dev)
        counts = sample_counts(model, nodes, cfg.n, cfg.sigma, gen, cfg.batch_size, num_classes=sel.numel())
        passes += idx.numel() * cfg.n
        p = clopper_pearson_lower(counts[:, c], cfg.n, alpha_node)
        gap = gaussian_radius(p, cfg.sigma) - m[idx]
        min_gap, min_p = min(min_gap, float(gap.min())), min(min_p, float(p.min()))
        failed = gap <= 0
        if failed.any():
            radius_v = float(dist[idx][failed].min())
            return c, False, radius_v, min_gap, float(m.max()), min_p, passes
    return c, True, radius_v, min_gap, float(m.max()), min_p, passes
