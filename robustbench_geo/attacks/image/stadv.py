"""stAdv: spatially transformed adversarial examples (Xiao et al., ICLR 2018).

Each sample gets its own flow field ``f`` ``(2, H, W)`` (pixels; see
:func:`robustbench_geo.geometry.flow_warp`) minimising, per sample,

    L(f) = max(Z_y - max_{j != y} Z_j, -kappa) + tau * L_flow(f),
    L_flow(f) = sum_p sum_{q in N(p)} sqrt(|du_p - du_q|^2 + |dv_p - dv_q|^2 + eps),

with ``Z`` the **logits** (``margin_on="probs"`` uses softmax probabilities instead, the variant
several reproductions used), ``N(p)`` the 4-neighbourhood of pixel ``p`` inside the image (each
neighbour pair counted from both sides) and ``eps`` = 1e-8 keeping the square root differentiable
at zero flow. Samples never share a line search, a step length or a stopping rule: the L-BFGS is
:func:`~robustbench_geo.attacks.image.lbfgs.batched_lbfgs` (per-sample histories and Armijo
searches); Adam is element-wise and therefore per sample too. ``search_steps > 1`` adds a
per-sample binary search on ``tau`` (successful samples try a larger ``tau``, i.e. a smoother
flow; failed ones a smaller one), keeping each sample's smoothest successful flow.

The attack is unbounded in the flow (as in the paper), so success is reported together with the
flow magnitude: ``flow_px`` (mean over pixels of the flow vector length) and ``flow_max_px``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_geo.attacks.base import register_attack
from robustbench_geo.attacks.image.core import ImageAttack, margin_loss
from robustbench_geo.attacks.image.lbfgs import batched_lbfgs
from robustbench_geo.check import check_nonnegative, check_positive_int, unknown_name_error
from robustbench_geo.geometry import flow_warp

OPTIMIZERS = ("lbfgs", "adam")
MARGIN_SPACES = ("logits", "probs")
#: a sample counts as fooled during the search only with a margin above this (logit units), so
#: that the final, independent forward pass agrees with the search
FOOL_MARGIN = 1e-3


def flow_smoothness(flow: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``L_flow`` per sample ``(B,)`` of flows ``(B, 2, H, W)`` (4-neighbourhood, pairs counted twice)."""
    dx = flow[:, :, :, 1:] - flow[:, :, :, :-1]  # (B, 2, H, W-1) horizontal neighbours
    dy = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    lx = (dx.pow(2).sum(1) + eps).sqrt().sum((1, 2))
    ly = (dy.pow(2).sum(1) + eps).sqrt().sum((1, 2))
    return 2 * (lx + ly)


def flow_magnitude(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max over pixels of the flow vector length, ``(B,)`` each, in pixels."""
    norm = flow.pow(2).sum(1).sqrt().flatten(1)
    return norm.mean(1), norm.amax(1)


@register_attack("stadv", domain="image", description="stAdv flow-field attack (Xiao et al. 2018), per-sample L-BFGS or Adam")
class StAdv(ImageAttack):
    """Flow-field attack of Xiao et al. (2018); see the module docstring for the objective."""

    kind = "flow"
    param_docs = {**ImageAttack.param_docs,
                  "tau": "weight of the flow smoothness term (paper: 0.05); the start of the tau search",
                  "kappa": "C&W confidence: the margin term stops rewarding beyond margin kappa (logit units)",
                  "steps": "optimiser iterations per tau (L-BFGS: 1+ forward+backward passes each)",
                  "optimizer": f"{', '.join(OPTIMIZERS)} (both per sample)",
                  "lr": "Adam step size in pixels",
                  "search_steps": "per-sample binary search steps on tau (1 = fixed tau)",
                  "margin_on": f"margin computed on {' or '.join(MARGIN_SPACES)}"}

    def __init__(self, model, *, tau: float = 0.05, kappa: float = 0.0, steps: int = 100, optimizer: str = "lbfgs",
                 lr: float = 0.01, search_steps: int = 5, margin_on: str = "logits", loss: str = "margin",
                 seed: int = 0, max_batch: int | None = None, interpolation: str = "bilinear", padding: str = "zeros"):
        super().__init__(model, seed=seed, loss=loss, max_batch=max_batch, interpolation=interpolation, padding=padding)
        self.tau = check_nonnegative(tau, "tau")
        self.kappa = check_nonnegative(kappa, "kappa")
        self.steps, self.search_steps = check_positive_int(steps, "steps"), check_positive_int(search_steps, "search_steps")
        if optimizer not in OPTIMIZERS:
            raise unknown_name_error("optimizer", optimizer, OPTIMIZERS)
        if margin_on not in MARGIN_SPACES:
            raise unknown_name_error("margin space", margin_on, MARGIN_SPACES)
        self.optimizer, self.margin_on = optimizer, margin_on
        self.lr = check_nonnegative(lr, "lr")

    def _objective(self, images, labels, tau, best, work):
        """``fn(z, rows)`` for the optimisers; records each sample's smoothest fooling flow in ``best``."""
        h, w = images.shape[-2:]

        def fn(z: torch.Tensor, rows: torch.Tensor):
            losses, grads = [], []
            for s in range(0, rows.numel(), self.max_batch):
                r = rows[s:s + self.max_batch]
                flow = z[s:s + self.max_batch].detach().view(-1, 2, h, w).requires_grad_(True)
                with torch.enable_grad():
                    logits = self.logits(flow_warp(images[r], flow, **self.warp), work, backward=True)
                    zs = logits.float() if self.margin_on == "logits" else F.softmax(logits.float(), 1)
                    margin = margin_loss(zs, labels[r])  # > 0: fooled
                    smooth = flow_smoothness(flow)
                    loss = torch.clamp(-margin, min=-self.kappa) + tau[r] * smooth
                    (g,) = torch.autograd.grad(loss.sum(), flow)
                fooled = margin_loss(logits.detach().float(), labels[r]) > FOOL_MARGIN
                better = fooled & (smooth.detach() < best["smooth"][r])
                idx = r[better]
                best["flow"][idx] = flow.detach()[better]
                best["smooth"][idx] = smooth.detach()[better]
                best["fooled"][idx] = True
                best["hit"][r[fooled]] = True
                losses.append(loss.detach())
                grads.append(g.reshape(r.numel(), -1))
            return torch.cat(losses), torch.cat(grads)

        return fn

    def _optimise(self, fn, z0):
        if self.optimizer == "lbfgs":
            return batched_lbfgs(fn, z0, steps=self.steps)[0]
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        rows = torch.arange(z.shape[0], device=z.device)
        for _ in range(self.steps):
            _, g = fn(z.detach(), rows)
            z.grad = g
            opt.step()
        fn(z.detach(), rows)  # evaluate (and record) the last iterate
        return z.detach()

    def run(self, images, labels, work):
        b, h, w = images.shape[0], *images.shape[-2:]
        dev = images.device
        best = {"flow": torch.zeros(b, 2, h, w, device=dev), "smooth": torch.full((b,), float("inf"), device=dev),
                "fooled": torch.zeros(b, dtype=torch.bool, device=dev)}
        tau = torch.full((b,), self.tau, device=dev)
        lo = torch.zeros(b, device=dev)
        hi = torch.full((b,), float("inf"), device=dev)
        last = torch.zeros(b, 2 * h * w, device=dev)
        for _ in range(self.search_steps):
            best["hit"] = torch.zeros(b, dtype=torch.bool, device=dev)
            z = self._optimise(self._objective(images, labels, tau, best, work), torch.zeros(b, 2 * h * w, device=dev))
            last = torch.where(best["fooled"][:, None], last, z)
            success_now = best["hit"]
            # success at this tau: a smoother flow may exist (raise tau); failure: lower tau
            lo = torch.where(success_now, tau, lo)
            hi = torch.where(success_now, hi, tau)
            tau = torch.where(torch.isinf(hi), tau * 10, torch.where(lo > 0, (lo + hi) / 2, tau / 10))
        flow = torch.where(best["fooled"][:, None, None, None], best["flow"], last.view(b, 2, h, w))
        mean_px, max_px = flow_magnitude(flow)
        info = {"flow_px": mean_px.cpu(), "flow_max_px": max_px.cpu(), "smoothness": flow_smoothness(flow).cpu()}
        return {"flow": flow.cpu()}, info
