"""The two engines behind the affine attacks: exhaustive candidate search and projected ascent.

The candidate search (:func:`grid_search`, in a smallest-first order from :func:`by_size`) is also the
certificate's grid attack (:func:`robustbench_geo.smoothing.grid_attack`), there over a smoothed classifier.

Both work per sample and keep, for every sample, a transform that misclassifies it if one was
found (the first in candidate order / optimisation order), else the transform with the highest
loss. Samples that are fooled leave the active set (early exit), so later model calls only see
samples still standing.

Parameters are the six fields of :class:`~robustbench_geo.geometry.AffineParams`; candidate sets
are dicts of ``(T, B)`` float32 CPU tensors (candidate ``t`` for sample ``b``).
"""

from __future__ import annotations

import torch

from robustbench_geo.geometry import AffineParams, affine_matrix, warp

FIELDS = ("angle_deg", "tx_px", "ty_px", "scale_x", "scale_y", "shear_deg")
IDENTITY = {"angle_deg": 0.0, "tx_px": 0.0, "ty_px": 0.0, "scale_x": 1.0, "scale_y": 1.0, "shear_deg": 0.0}


def full_params(n: int, **given: torch.Tensor) -> dict[str, torch.Tensor]:
    """Complete ``given`` (tensors of a common shape, e.g. ``(T, B)``) with identity values."""
    shape = next(iter(given.values())).shape if given else (n,)
    return {k: given[k].float() if k in given else torch.full(shape, IDENTITY[k]) for k in FIELDS}


def by_size(points: list[tuple[float, ...]], identity: tuple[float, ...], budget: tuple[float, ...], *,
            groups: list[list[int]] | None = None, sum_ties: bool = True) -> list[int]:
    """The order that visits grid ``points`` smallest first: a permutation of their indices.

    A point's size is the largest ``|value - identity| / budget`` over its axes (the fraction of the budget
    it uses; the identity has size 0 and comes first). Equal sizes go by the sum of those fractions
    (``sum_ties``: a point nearer the identity along more axes first), then by the values themselves.
    ``groups`` ranks by the size within each group of axes in turn instead (``[[0], [1, 2]]``: the first
    axis's size, then the size of the other two).

    >>> by_size([(-1.0, 0.0), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0)], (0.0, 0.0), (1.0, 1.0))
    [1, 0, 3, 2]
    """
    widths = [max(float(w), 1e-12) for w in budget]

    def key(i):
        r = [abs(v - c) / w for v, c, w in zip(points[i], identity, widths)]
        head = tuple(max(r[j] for j in g) for g in groups) if groups else (max(r),)
        return head + ((sum(r),) if sum_ties else ()) + tuple(points[i])

    return sorted(range(len(points)), key=key)


def grid_search(b: int, t_total: int, evaluate, chunk, progress=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Walk ``t_total`` ordered candidates for ``b`` samples; a sample leaves at its first fooling candidate.

    The one search behind every grid of the package (the ``grid``, ``worst_of_k`` and ``scale`` attacks'
    candidates, the certificate's grid attack on the smoothed and the base classifier): the classifier is
    whatever ``evaluate`` asks, a model's prediction or a Monte Carlo smoothed one.

    Args:
        evaluate: ``evaluate(t, c, active) -> (wrong, loss)``: whether candidates ``t .. t + c - 1`` fool
            the samples ``active`` (``(c, a)`` bool), and their loss (``(c, a)``, higher is closer to a
            mistake; ``None``: no loss, an unfooled sample keeps no candidate).
        chunk: ``chunk(a) -> c``: candidates per ``evaluate`` call while ``a`` samples are active.
        progress: called with ``c`` after each call.

    Returns:
        ``(pick, fooled, loss)`` per sample: the kept candidate's index (its first fooling one, else its
        highest-loss one; ``-1`` for none), whether one fooled it, and the kept candidate's loss.
    """
    pick_all = torch.full((b,), -1, dtype=torch.long)
    best_loss = torch.full((b,), float("-inf"))
    fooled = torch.zeros(b, dtype=torch.bool)
    active = torch.arange(b)
    t = 0
    while t < t_total and active.numel():
        a = active.numel()
        c = max(1, min(t_total - t, chunk(a)))
        wrong, loss = evaluate(t, c, active)
        any_w = wrong.any(0)
        first = wrong.to(torch.uint8).argmax(0)  # first fooling candidate in order
        if loss is None:
            pick, better = first, any_w
            picked_loss = torch.full((a,), float("-inf"))
        else:
            top_loss, top = loss.max(0)
            pick = torch.where(any_w, first, top)
            picked_loss = loss.gather(0, pick[None]).squeeze(0)
            better = any_w | (picked_loss > best_loss[active])
        rows = active[better]
        pick_all[rows] = t + pick[better]
        best_loss[rows] = picked_loss[better]
        fooled[active[any_w]] = True
        active = active[~any_w]
        if progress is not None:
            progress(c)
        t += c
    return pick_all, fooled, best_loss


def search_candidates(attack, images: torch.Tensor, labels: torch.Tensor, cand: dict[str, torch.Tensor], work,
                      progress=None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Evaluate candidates ``(T, B)`` per sample, ``t`` in order, batching transforms x samples (:func:`grid_search`).

    Args:
        attack: the :class:`~robustbench_geo.attacks.image.core.ImageAttack` (model, loss, warp, max_batch).
        images: ``(B, C, H, W)``; labels ``(B,)``.
        cand: the six affine fields, each ``(T, B)``.
        work: counter of model passes.

    Returns:
        ``(params, fooled, loss)``: best parameters per sample (``(B,)`` each, CPU), whether a
        candidate fooled the model, and the loss of the kept candidate.
    """
    b, size, dev = images.shape[0], tuple(images.shape[-2:]), images.device
    t_total = next(iter(cand.values())).shape[0]

    @torch.inference_mode()
    def evaluate(t, c, active):
        a = active.numel()
        # pairs in t-major order: pair j = (t + j // a, active[j % a])
        loss = torch.empty(c * a)
        wrong = torch.empty(c * a, dtype=torch.bool)
        sub = {k: v[t:t + c][:, active].reshape(-1) for k, v in cand.items()}
        for s in range(0, c * a, attack.max_batch):
            e = min(s + attack.max_batch, c * a)
            idx = active[torch.arange(s, e) % a]
            m = affine_matrix(size, *(sub[k][s:e] for k in FIELDS)).to(dev)
            x = warp(images[idx.to(dev)], m, **attack.warp)
            logits = attack.logits(x, work)
            y = labels[idx.to(dev)]
            loss[s:e] = attack.loss_fn(logits, y).cpu()
            wrong[s:e] = (logits.argmax(1) != y).cpu()
        return wrong.view(c, a), loss.view(c, a)

    pick, fooled, best_loss = grid_search(b, t_total, evaluate, lambda a: attack.max_batch // a, progress)
    kept = (pick >= 0).nonzero().squeeze(1)
    best = {k: torch.full((b,), IDENTITY[k]) for k in FIELDS}
    for k in FIELDS:
        best[k][kept] = cand[k][pick[kept], kept]
    return best, fooled, best_loss


def projected_ascent(attack, images: torch.Tensor, labels: torch.Tensor, init: dict[str, torch.Tensor],
                     box: dict[str, tuple[float, float]], steps: int, step_frac: float, work,
                     log_scale: bool = True, tied: dict[str, str] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Sign-gradient ascent of the loss on the parameters named in ``box``, projected onto it.

    Scale parameters are optimised in log space (``box`` holds scale factors; the step is a
    fraction of the log range). Each step costs one forward and one backward pass per active
    sample; fooled samples stop.

    Args:
        init: the six fields ``(B,)`` (CPU) to start from; fields not in ``box`` stay fixed.
        box: ``name -> (low, high)`` for the free parameters.
        steps: number of gradient steps (``steps + 1`` evaluations).
        step_frac: step per iteration as a fraction of each parameter's range width.
        tied: ``{field: free field}``: ``field`` always equals the free one (``{"scale_y": "scale_x"}``
            for isotropic scaling).

    Returns:
        ``(params, fooled, loss)`` as :func:`search_candidates`.
    """
    b, size, dev = images.shape[0], tuple(images.shape[-2:]), images.device
    logged = {k for k in box if k.startswith("scale") and log_scale}
    tied = dict(tied or {})

    def to_free(k, v):
        return v.log() if k in logged else v

    def from_free(k, v):
        return v.exp() if k in logged else v

    lo = {k: to_free(k, torch.tensor(float(box[k][0]))) for k in box}
    hi = {k: to_free(k, torch.tensor(float(box[k][1]))) for k in box}
    cur = {k: v.clone().float() for k, v in init.items()}
    free = {k: to_free(k, cur[k]).clamp(lo[k], hi[k]) for k in box}
    best = {k: v.clone() for k, v in cur.items()}
    best_loss = torch.full((b,), float("-inf"))
    fooled = torch.zeros(b, dtype=torch.bool)
    active = torch.arange(b)
    for step in range(steps + 1):
        if not active.numel():
            break
        last = step == steps or not box
        for s in range(0, active.numel(), attack.max_batch):
            idx = active[s:s + attack.max_batch]
            th = {k: free[k][idx].clone().to(dev).requires_grad_(not last) for k in box}
            vals = [from_free(k, th[k]) if k in th else from_free(tied[k], th[tied[k]]) if k in tied
                    else cur[k][idx].to(dev) for k in FIELDS]
            with torch.set_grad_enabled(not last):
                x = warp(images[idx.to(dev)], affine_matrix(size, *vals), **attack.warp)
                logits = attack.logits(x, work, backward=not last)
                y = labels[idx.to(dev)]
                loss = attack.loss_fn(logits, y)
                grads = torch.autograd.grad(loss.sum(), list(th.values())) if not last else None
            loss_c, wrong = loss.detach().cpu(), (logits.argmax(1) != y).cpu()
            better = wrong | (loss_c > best_loss[idx])
            for k in FIELDS:
                src = tied.get(k, k)
                v = from_free(src, free[src][idx]) if src in box else cur[k][idx]
                best[k][idx[better]] = v[better]
            best_loss[idx[better]] = loss_c[better]
            fooled[idx[wrong]] = True
            if grads is not None:
                for k, g in zip(th, grads):
                    width = (hi[k] - lo[k]).item()
                    free[k][idx] = (free[k][idx] + step_frac * width * g.sign().cpu()).clamp(lo[k], hi[k])
        active = active[~fooled[active]]
        if not box:
            break
    return best, fooled, best_loss


def params_in_box(params: dict[str, torch.Tensor], box: dict[str, tuple[float, float]], tol: float = 1e-5) -> bool:
    """Whether every sample's parameters lie inside ``box`` (used by tests and checks)."""
    return all(bool(((params[k] >= lo - tol) & (params[k] <= hi + tol)).all()) for k, (lo, hi) in box.items())


def as_affine(params: dict[str, torch.Tensor]) -> AffineParams:
    return AffineParams(**{k: params[k] for k in FIELDS})
