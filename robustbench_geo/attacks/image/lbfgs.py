"""L-BFGS for a batch of *independent* problems: one history and one line search per sample.

``torch.optim.LBFGS`` and ``scipy.optimize.minimize`` see one objective; running them on the sum
of per-sample losses couples the samples (one curvature estimate, one step length, one stopping
rule for the whole batch), so the hardest sample dictates the step of all others. Here every
sample ``b`` has its own ``(s, y)`` pairs, its own initial Hessian scale and its own backtracking
(Armijo) line search; the only thing shared is the batched model call.
"""

from __future__ import annotations

from typing import Callable

import torch


def batched_lbfgs(fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], z0: torch.Tensor, *,
                  steps: int, history: int = 10, max_ls: int = 12, c1: float = 1e-4, init_step: float = 0.1,
                  tol: float = 1e-7) -> tuple[torch.Tensor, int]:
    """Minimise ``sum_b f_b(z_b)`` with independent per-sample L-BFGS.

    Args:
        fn: ``fn(z, rows) -> (loss, grad)`` with ``z`` ``(R, D)`` the variables of samples ``rows``
            ``(R,)``; returns per-sample losses ``(R,)`` and gradients ``(R, D)`` (each row depends on
            its own sample only). The caller may record anything it wants at every evaluation.
        z0: ``(B, D)`` start.
        steps: L-BFGS iterations (each costs 1 to ``max_ls`` evaluations of the still-active rows).
        history: number of ``(s, y)`` pairs kept per sample.
        max_ls: backtracking steps (step halved each time) before a sample's line search fails; a
            failure clears that sample's history, a second failure in a row stops it.
        init_step: the first step (and the step after a history reset) moves no coordinate by more
            than this.
        tol: a sample stops once its gradient's largest entry falls below this.

    Returns:
        ``(z, evaluations)``: the last accepted iterate per sample ``(B, D)`` and the number of
        per-sample evaluations done.
    """
    b, d = z0.shape
    dev, dt = z0.device, z0.dtype
    z = z0.detach().clone()
    all_rows = torch.arange(b, device=dev)
    f, g = fn(z, all_rows)
    evals = b
    s_hist = torch.zeros(history, b, d, device=dev, dtype=dt)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history, b, device=dev, dtype=dt)
    gamma = torch.zeros(b, device=dev, dtype=dt)  # 0 = no curvature pair yet: use init_step scaling
    fails = torch.zeros(b, dtype=torch.long, device=dev)
    active = g.abs().amax(1) > tol
    ptr = 0
    for _ in range(steps):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        gr = g[rows]
        q = gr.clone()
        order = [(ptr - 1 - i) % history for i in range(history)]  # newest first
        alphas = []
        for i in order:
            a = rho[i, rows] * (s_hist[i, rows] * q).sum(1)
            q -= a[:, None] * y_hist[i, rows]
            alphas.append(a)
        scale = torch.where(gamma[rows] > 0, gamma[rows], init_step / gr.abs().amax(1).clamp_min(1e-12))
        r = scale[:, None] * q
        for i, a in zip(reversed(order), reversed(alphas)):
            beta = rho[i, rows] * (y_hist[i, rows] * r).sum(1)
            r += s_hist[i, rows] * (a - beta)[:, None]
        direction = -r
        gd = (gr * direction).sum(1)
        uphill = gd >= 0
        if uphill.any():  # not a descent direction: fall back to a scaled steepest descent step
            direction[uphill] = -gr[uphill] * (init_step / gr[uphill].abs().amax(1).clamp_min(1e-12))[:, None]
            gd = (gr * direction).sum(1)
        t = torch.ones(rows.numel(), device=dev, dtype=dt)
        pending = torch.ones(rows.numel(), dtype=torch.bool, device=dev)
        z_new, f_new, g_new = z[rows].clone(), f[rows].clone(), gr.clone()
        for _ls in range(max_ls):
            pr = pending.nonzero().squeeze(1)
            zt = z[rows[pr]] + t[pr, None] * direction[pr]
            ft, gt = fn(zt, rows[pr])
            evals += pr.numel()
            ok = ft <= f[rows[pr]] + c1 * t[pr] * gd[pr]
            acc = pr[ok]
            z_new[acc], f_new[acc], g_new[acc] = zt[ok], ft[ok], gt[ok]
            pending[acc] = False
            t[pr[~ok]] *= 0.5
            if not pending.any():
                break
        accepted = ~pending
        s_vec, y_vec = z_new - z[rows], g_new - gr
        sy = (s_vec * y_vec).sum(1)
        valid = accepted & (sy > 1e-10)
        s_hist[ptr], y_hist[ptr], rho[ptr] = 0, 0, 0
        s_hist[ptr, rows[valid]], y_hist[ptr, rows[valid]] = s_vec[valid], y_vec[valid]
        rho[ptr, rows[valid]] = 1.0 / sy[valid]
        gamma[rows[valid]] = sy[valid] / (y_vec[valid] * y_vec[valid]).sum(1).clamp_min(1e-20)
        ptr = (ptr + 1) % history
        z[rows], f[rows], g[rows] = z_new, f_new, g_new
        failed = rows[pending]
        fails[rows[accepted]] = 0
        fails[failed] += 1
        rho[:, failed] = 0  # forget the curvature of samples whose line search failed
        gamma[failed] = 0
        active[failed[fails[failed] >= 2]] = False
        active[rows] &= g[rows].abs().amax(1) > tol
    return z, evals
