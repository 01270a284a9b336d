"""The two engines behind the affine attacks: exhaustive candidate search and projected ascent.

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


def search_candidates(attack, images: torch.Tensor, labels: torch.Tensor, cand: dict[str, torch.Tensor], work,
                      progress=None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Evaluate candidates ``(T, B)`` per sample, ``t`` in order, batching transforms x samples.

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
    best = {k: torch.full((b,), IDENTITY[k]) for k in FIELDS}
    best_loss = torch.full((b,), float("-inf"))
    fooled = torch.zeros(b, dtype=torch.bool)
    active = torch.arange(b)
    t = 0
    with torch.inference_mode():
        while t < t_total and active.numel():
            a = active.numel()
            c = max(1, min(t_total - t, attack.max_batch // a))
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
            loss, wrong = loss.view(c, a), wrong.view(c, a)
            any_w = wrong.any(0)
            first = wrong.to(torch.uint8).argmax(0)  # first fooling candidate in order
            top_loss, top = loss.max(0)
            pick = torch.where(any_w, first, top)
            picked_loss = loss.gather(0, pick[None]).squeeze(0)
            better = any_w | (picked_loss > best_loss[active])
            rows = active[better]
            for k in FIELDS:
                best[k][rows] = cand[k][t + pick[better], rows]
            best_loss[rows] = picked_loss[better]
            fooled[active[any_w]] = True
            active = active[~any_w]
            if progress is not None:
                progress(c)
            t += c
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
