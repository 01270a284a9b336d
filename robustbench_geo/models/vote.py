"""Test-time majority vote over random transforms (Engstrom et al., ICML 2019), as a model.

:class:`MajorityVote` wraps an image classifier: each call warps every image by ``votes`` random
rotations + shifts from a box (Engstrom et al.'s MNIST box by default: +-30 degrees, +-3 px),
classifies each copy with the wrapped model and returns, per class,

    ``votes received + 0.5 * mean softmax probability over the copies``

so ``argmax`` is the majority vote of the copies (ties broken by the mean probability; the second
term is below 1 and cannot overturn a majority) and the output is differentiable through the mean
probability, the expectation of the member outputs over the call's draws (EOT). The attacks see
it as any other model.

Randomness (draws on the CPU, deterministic for ``seed``):

* ``randomness="fresh"`` (deployed): every call draws new transforms, independently per image;
  call ``i`` uses a generator seeded from ``(seed, i)``. A gradient attack's step is one call, so
  its forward and backward pass see the same draws (fixed randomness per attack step), and a
  rerun with the same seed sees the same sequence of draws.
* ``randomness="fixed"``: every call uses the same ``votes`` transforms for every image, so the
  wrapper is a deterministic function (what an attack that linearises and bisects, like ManiFool,
  needs; an expectation over fixed draws).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_geo.check import check_number, check_positive_int, unknown_name_error
from robustbench_geo.geometry import WARP_DEFAULTS, affine_matrix, warp

RANDOMNESS = ("fresh", "fixed")


class MajorityVote(nn.Module):
    """Majority vote of ``model`` over ``votes`` random rotations + shifts of each input (module docstring).

    Args:
        model: image classifier ``(B, C, H, W)`` in ``[0, 1]`` -> logits ``(B, K)``.
        votes: transforms per input.
        max_angle_deg: rotations uniform in ``[-max, max]`` degrees (counter-clockwise).
        max_shift_px: shifts uniform in ``[-max, max]`` pixels along x and y.
        seed: seed of the draws.
        randomness: ``"fresh"`` (new draws per call, as deployed) or ``"fixed"`` (the same draws every call).
    """

    def __init__(self, model: nn.Module, *, votes: int = 10, max_angle_deg: float = 30.0, max_shift_px: float = 3.0,
                 seed: int = 0, randomness: str = "fresh"):
        super().__init__()
        self.model = model
        self.votes = check_positive_int(votes, "votes")
        self.max_angle_deg = check_number(max_angle_deg, "max_angle_deg", low=0.0, high=180.0)
        self.max_shift_px = check_number(max_shift_px, "max_shift_px", low=0.0)
        self.seed = check_number(seed, "seed", integer=True, low=0)
        if randomness not in RANDOMNESS:
            raise unknown_name_error("randomness mode", randomness, RANDOMNESS)
        self.randomness = randomness
        self.calls = 0

    def draws(self, batch: int, call: int) -> dict[str, torch.Tensor]:
        """The transforms of call number ``call`` for a batch of ``batch`` images: ``(votes, batch)`` per field.

        ``randomness="fixed"`` ignores ``call`` and gives every image the same ``votes`` transforms.
        """
        g = torch.Generator().manual_seed(self.seed if self.randomness == "fixed" else self.seed * 1_000_003 + call + 1)
        cols = 1 if self.randomness == "fixed" else batch
        u = torch.rand(3, self.votes, cols, generator=g) * 2 - 1
        out = {"angle_deg": u[0] * self.max_angle_deg, "tx_px": u[1] * self.max_shift_px, "ty_px": u[2] * self.max_shift_px}
        return {k: v.expand(self.votes, batch) for k, v in out.items()}

    def members(self, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(votes, B, K)`` of the wrapped model on the ``draws`` transforms of ``x``."""
        b = x.shape[0]
        m = affine_matrix(tuple(x.shape[-2:]), draws["angle_deg"].reshape(-1), draws["tx_px"].reshape(-1),
                          draws["ty_px"].reshape(-1)).to(x.device, x.dtype)
        copies = warp(x.repeat(self.votes, 1, 1, 1), m, **WARP_DEFAULTS)
        return self.model(copies).view(self.votes, b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draws = self.draws(x.shape[0], self.calls)
        self.calls += 1
        logits = self.members(x, draws)
        counts = F.one_hot(logits.argmax(2), logits.shape[2]).sum(0).to(logits.dtype)
        return counts + 0.5 * logits.float().softmax(2).mean(0).to(logits.dtype)

    def describe(self) -> dict:
        """The defense and its parameters, for results and report labels."""
        return {"defense": "majority_vote", "votes": self.votes, "max_angle_deg": self.max_angle_deg,
                "max_shift_px": self.max_shift_px, "seed": self.seed, "randomness": self.randomness}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "defense")
