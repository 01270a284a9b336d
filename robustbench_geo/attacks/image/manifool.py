"""ManiFool: the smallest geometric transformation that changes a prediction (Kanbak et al., CVPR 2018).

The images ``T_tau x`` of one image under a transformation group form a low-dimensional manifold in
pixel space. ManiFool walks on it: at the current transform it measures how the image moves along
each generator of the group (the tangent vectors ``J``, ``(pixels, k)``), projects the classifier's
gradient onto that tangent space, and takes the smallest step that crosses the linearised decision
boundary in the manifold's own metric ``J^T J``; the step is applied by the exponential map of the
group (composition on the left), so every iterate is a true transform of the clean image. When an
iterate is misclassified, a bisection along the last step moves back to the boundary.

The size of a transform is its **geodesic distance**: the length, in pixel space (L2 over all
pixels and channels), of the image path ``exp(s xi) x`` for ``s`` in ``[0, 1]`` with
``xi = log(tau)``, the direct path through the Lie algebra that Kanbak et al. also measure; it is
an upper bound on the true geodesic. Divided by ``||x||_2`` it is the **normalised distance**; its
mean over the fooled, correctly classified images is the **invariance score**.

Generators (in coordinates centred on the image, ``r`` = half the larger side in pixels): rotation
(radians, counter-clockwise as displayed), shifts along x and y (units of ``r`` pixels), log of an
isotropic scale, and for the full affine group an anisotropic stretch and a symmetric shear.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.image.core import ImageAttack
from robustbench_geo.attacks.image.search import FIELDS
from robustbench_geo.check import check_number, check_positive_int, unknown_name_error
from robustbench_geo.geometry import affine_matrix, warp

#: the generators of each group, by name (see the module docstring)
GROUPS = {
    "rotation": ("rotation",),
    "rotation_translation": ("rotation", "shift_x", "shift_y"),
    "similarity": ("rotation", "shift_x", "shift_y", "scale"),
    "affine": ("rotation", "shift_x", "shift_y", "scale", "stretch", "shear"),
}


def generator_matrices(names, size: tuple[int, int]) -> torch.Tensor:
    """The Lie algebra basis ``(k, 3, 3)`` (float64) in centred pixel coordinates for generator ``names``."""
    r = max(size) / 2.0
    mats = {
        "rotation": [[0, 1, 0], [-1, 0, 0], [0, 0, 0]],  # d/da of [[cos, sin], [-sin, cos]] (y down)
        "shift_x": [[0, 0, r], [0, 0, 0], [0, 0, 0]],
        "shift_y": [[0, 0, 0], [0, 0, r], [0, 0, 0]],
        "scale": [[1, 0, 0], [0, 1, 0], [0, 0, 0]],
        "stretch": [[1, 0, 0], [0, -1, 0], [0, 0, 0]],
        "shear": [[0, 1, 0], [1, 0, 0], [0, 0, 0]],
    }
    return torch.tensor([mats[n] for n in names], dtype=torch.float64)


def _centring(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = size
    c = torch.eye(3, dtype=torch.float64)
    c[0, 2], c[1, 2] = (w - 1) / 2.0, (h - 1) / 2.0
    return c, torch.linalg.inv(c)


def centred_matrix(params: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """``(B, 3, 3)`` float64 matrices of ``params`` in centred coordinates (``p' = L p + t``)."""
    c, c_inv = _centring(size)
    m = affine_matrix(size, *(params[k].double() for k in FIELDS))
    return c_inv @ m @ c


def fields_of(centred: torch.Tensor) -> dict[str, torch.Tensor]:
    """Invert :func:`centred_matrix`: the six affine fields ``(B,)`` (float32) of centred matrices with ``det > 0``.

    The linear part ``L = R(angle) @ Shear @ diag(sx, sy)`` is a rotation times an upper triangular
    matrix with a positive diagonal, i.e. its QR decomposition.
    """
    lin, t = centred.double()[:, :2, :2], centred.double()[:, :2, 2]
    q, u = torch.linalg.qr(lin)
    d = torch.sign(torch.diagonal(u, dim1=1, dim2=2))
    d = torch.where(d == 0, torch.ones_like(d), d)
    q, u = q * d[:, None, :], u * d[:, :, None]
    angle = torch.rad2deg(torch.atan2(q[:, 0, 1], q[:, 0, 0]))
    sx, sy = u[:, 0, 0], u[:, 1, 1]
    shear = torch.rad2deg(torch.atan(u[:, 0, 1] / sy))
    out = {"angle_deg": angle, "tx_px": t[:, 0], "ty_px": t[:, 1], "scale_x": sx, "scale_y": sy, "shear_deg": shear}
    return {k: v.float() for k, v in out.items()}


def geodesic_distance(images: torch.Tensor, params: dict[str, torch.Tensor], *, path_steps: int = 64,
                      **warp_kwargs) -> torch.Tensor:
    """Length ``(B,)`` of the image path from ``images`` to their transforms by ``params`` (pixel-value L2).

    The path is ``exp(s log(A)) x`` for ``s`` in ``[0, 1]`` in ``path_steps`` equal steps, ``A`` the
    centred matrix of the transform (module docstring); the identity has distance 0.

    Args:
        images: ``(B, C, H, W)`` clean images.
        params: the six affine fields, ``(B,)`` each.
        path_steps: segments of the discretised path.
    """
    b, size = images.shape[0], tuple(images.shape[-2:])
    if b == 0:
        return images.new_zeros(0)
    logs = torch.from_numpy(np.stack([np.real(scipy.linalg.logm(a)) for a in centred_matrix(params, size).numpy()]))
    c, c_inv = _centring(size)
    total = torch.zeros(b, dtype=torch.float64)
    prev = warp(images, (c @ c_inv).float().expand(b, 3, 3).to(images.device), **warp_kwargs)
    for i in range(1, path_steps + 1):
        m = c @ torch.linalg.matrix_exp(logs * (i / path_steps)) @ c_inv
        cur = warp(images, m.float().to(images.device), **warp_kwargs)
        total += (cur - prev).flatten(1).norm(dim=1).double().cpu()
        prev = cur
    return total.float()


@register_attack("manifool", domain="image",
                 description="smallest fooling transform by steps on the transformation manifold (Kanbak et al. 2018)")
class ManiFool(ImageAttack):
    """Per image, a small transform of ``group`` that changes the prediction, and its geodesic distance.

    Each step costs one forward pass and ``candidates`` backward passes per active image (plus
    ``2 k`` warps for the tangent vectors); a misclassified iterate ends the walk and the bisection
    (``refine_steps`` forward passes) moves back towards the boundary, keeping a misclassified end.
    Short steps keep the path close to a geodesic but can stall next to a curved boundary; images
    not fooled after ``steps`` walk again from the identity with 3x longer steps, ``retries`` times.
    Misclassified clean images keep the identity (distance 0); images not fooled within ``steps``
    keep their last iterate's loss and report an infinite distance.

    ``info`` per image: ``geodesic_distance`` (pixel-value L2 path length), ``normalised_distance``
    (divided by ``||x||_2``), ``min_fooling_budget`` (the normalised distance of a fooling transform,
    ``inf`` when none was found), ``steps_taken``.
    """

    param_docs = {**ImageAttack.param_docs,
                  "group": f"transformation group: {', '.join(GROUPS)} (similarity = rotation + shifts + isotropic "
                           "scale; affine adds stretch and shear)",
                  "steps": "maximum manifold steps per image (one forward + `candidates` backward passes each)",
                  "candidates": "classes (highest logits other than the label) whose boundary each step considers",
                  "overshoot": "relative overshoot of each linearised step (0.02 = 2 %)",
                  "max_step": "largest step in Lie algebra units (radians of rotation, half-image shifts, log-scale)",
                  "retries": "walks again for images not fooled, each time with 3x longer steps (max_step x 3, x 9, ...)",
                  "refine_steps": "bisection steps back towards the boundary after the first misclassified iterate",
                  "path_steps": "segments of the image path whose length is the geodesic distance"}

    def __init__(self, model, *, group: str = "similarity", steps: int = 50, candidates: int = 3,
                 overshoot: float = 0.02, max_step: float = 0.1, retries: int = 1, refine_steps: int = 10,
                 path_steps: int = 64,
                 loss: str = "margin", seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear",
                 padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        if group not in GROUPS:
            raise unknown_name_error("transformation group", group, GROUPS)
        self.group = group
        self.steps = check_positive_int(steps, "steps")
        self.candidates = check_positive_int(candidates, "candidates")
        self.overshoot = check_number(overshoot, "overshoot", low=0.0, high=1.0)
        self.max_step = check_number(max_step, "max_step", low=0.0, low_open=True, high=math.pi)
        self.retries = check_number(retries, "retries", integer=True, low=0)
        self.refine_steps = check_number(refine_steps, "refine_steps", integer=True, low=0)
        self.path_steps = check_positive_int(path_steps, "path_steps")

    # -- the walk ---------------------------------------------------------------------------
    def _images(self, x: torch.Tensor, centred: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Warp ``x`` by centred matrices through the stored fields (so every evaluation is a replay)."""
        params = fields_of(centred)
        m = affine_matrix(tuple(x.shape[-2:]), *(params[k] for k in FIELDS)).to(x.device)
        return warp(x, m, **self.warp), params

    def _step(self, x, y, centred, gens, work, max_step):
        """One linearised step for every sample: ``(algebra step (b, k), fooled now (b,), loss (b,))``."""
        cur, _ = self._images(x, centred)
        cur = cur.detach().requires_grad_(True)
        logits = self.logits(cur, work, backward=True)
        wrong = (logits.argmax(1) != y).cpu()
        loss = self.loss_fn(logits.detach(), y).cpu()
        n_cls = logits.shape[1]
        k_cand = min(self.candidates, n_cls - 1)
        others = logits.detach().masked_fill(torch.nn.functional.one_hot(y, n_cls).bool(), float("-inf"))
        cand = others.topk(k_cand, dim=1).indices
        true = logits.gather(1, y[:, None]).squeeze(1)
        # tangent vectors by central differences along each generator, (b, pixels, k)
        h = 1e-3
        cols = []
        for g in gens:
            xp, _ = self._images(x, torch.linalg.matrix_exp(h * g) @ centred)
            xm, _ = self._images(x, torch.linalg.matrix_exp(-h * g) @ centred)
            cols.append(((xp - xm) / (2 * h)).flatten(1).double().cpu())
        jac = torch.stack(cols, 2)
        metric = jac.transpose(1, 2) @ jac
        metric = metric + 1e-9 * metric.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-12)[:, None, None] * torch.eye(len(gens), dtype=torch.float64)
        best_dist = torch.full((x.shape[0],), float("inf"), dtype=torch.float64)
        best_step = torch.zeros(x.shape[0], len(gens), dtype=torch.float64)
        for j in range(k_cand):
            f = logits.gather(1, cand[:, j:j + 1]).squeeze(1) - true  # < 0 while the label wins
            grad = torch.autograd.grad(f.sum(), cur, retain_graph=j + 1 < k_cand)[0]
            if j:
                work.backward += x.shape[0]
            g_alg = (jac.transpose(1, 2) @ grad.flatten(1).double().cpu()[:, :, None]).squeeze(2)  # (b, k)
            w = torch.linalg.solve(metric, g_alg[:, :, None]).squeeze(2)
            gw = (g_alg * w).sum(1).clamp_min(1e-30)
            fd = f.detach().double().cpu().abs()
            dist = fd / gw.sqrt()
            step = ((fd + 1e-6) / gw)[:, None] * w * (1 + self.overshoot)
            better = dist < best_dist
            best_dist[better], best_step[better] = dist[better], step[better]
        norm = best_step.norm(dim=1, keepdim=True).clamp_min(1e-30)  # a zero gradient gives a zero step
        best_step = best_step * (max_step / norm).clamp(max=1.0)
        return best_step, wrong, loss

    @staticmethod
    def _advance(centred, step, gens):
        """Compose ``exp(sum_j step_j G_j)`` on the left of the centred matrices."""
        return torch.linalg.matrix_exp(torch.einsum("bk,kij->bij", step, gens)) @ centred

    def _walk(self, x, y, work, max_step):
        b, size = x.shape[0], tuple(x.shape[-2:])
        gens = generator_matrices(GROUPS[self.group], size)
        eye = torch.eye(3, dtype=torch.float64).expand(b, 3, 3).clone()
        centred, prev, last = eye.clone(), eye.clone(), torch.zeros(b, len(gens), dtype=torch.float64)
        done = torch.zeros(b, dtype=torch.bool)
        fooled = torch.zeros(b, dtype=torch.bool)
        taken = torch.zeros(b, dtype=torch.long)
        loss = torch.full((b,), float("-inf"))
        refine = torch.zeros(b, dtype=torch.bool)
        for it in range(self.steps + 1):
            act = (~done).nonzero().squeeze(1)
            if not act.numel():
                break
            dev_idx = act.to(x.device)
            step, wrong, l_act = self._step(x[dev_idx], y[dev_idx], centred[act], gens, work, max_step)
            loss[act] = l_act
            newly = act[wrong]
            fooled[newly], done[newly] = True, True
            refine[newly] = it > 0
            go = act[~wrong]
            if it == self.steps:
                done[go] = True
                break
            prev[go], last[go] = centred[go], step[~wrong]
            centred[go] = self._advance(centred[go], step[~wrong], gens)
            taken[go] += 1
        # bisection along the last step: prev (label kept) -> centred (misclassified)
        idx = refine.nonzero().squeeze(1)
        if idx.numel() and self.refine_steps:
            lo, hi = torch.zeros(idx.numel(), dtype=torch.float64), torch.ones(idx.numel(), dtype=torch.float64)
            xs, ys = x[idx.to(x.device)], y[idx.to(y.device)]
            for _ in range(self.refine_steps):
                mid = (lo + hi) / 2
                cand = self._advance(prev[idx], last[idx] * mid[:, None], gens)
                with torch.inference_mode():
                    imgs, _ = self._images(xs, cand)
                    w = (self.logits(imgs, work).argmax(1) != ys).cpu()
                hi, lo = torch.where(w, mid, hi), torch.where(w, lo, mid)
            centred[idx] = self._advance(prev[idx], last[idx] * hi[:, None], gens)
        return centred, fooled, taken, loss

    def _walks(self, images, labels, work, max_step):
        outs = [self._walk(images[s:s + self.max_batch], labels[s:s + self.max_batch], work, max_step)
                for s in range(0, images.shape[0], self.max_batch)]
        return tuple(torch.cat([o[i] for o in outs]) for i in range(3))

    def run(self, images, labels, work):
        centred, fooled, taken = self._walks(images, labels, work, self.max_step)
        for r in range(1, self.retries + 1):  # walks that stalled near the boundary: again with longer steps
            todo = (~fooled).nonzero().squeeze(1)
            if not todo.numel():
                break
            c2, f2, t2 = self._walks(images[todo.to(images.device)], labels[todo.to(labels.device)], work,
                                     min(math.pi, self.max_step * 3 ** r))
            centred[todo[f2]], fooled[todo[f2]] = c2[f2], True
            taken[todo] += t2
        params = fields_of(centred)
        dist = geodesic_distance(images, params, path_steps=self.path_steps, **self.warp)
        norm = images.flatten(1).norm(dim=1).float().cpu().clamp_min(1e-12)
        normalised = dist / norm
        info = {"geodesic_distance": torch.where(fooled, dist, torch.full_like(dist, float("inf"))),
                "normalised_distance": torch.where(fooled, normalised, torch.full_like(dist, float("inf"))),
                "min_fooling_budget": torch.where(fooled, normalised, torch.full_like(dist, float("inf"))),
                "budget_unit": "normalised geodesic distance",
                "steps_taken": taken.float()}
        return params, info

    def config(self) -> dict:
        return {**super().config(), "group": self.group}
