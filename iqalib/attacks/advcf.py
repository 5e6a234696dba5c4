"""AdvCF: an unrestricted attack through a per-channel piecewise-linear colour curve."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, check_count, check_nonnegative, check_positive


def colour_filter(x: Tensor, params: Tensor) -> Tensor:
    """Apply per-image, per-channel monotone colour curves.

    ``params`` ``[B,3,K]`` are the non-negative slopes of ``K`` equal pieces of [0,1]; the
    curve is normalised so it maps 1 to 1: ``f(v) = K / sum(P) * sum_k P_k * clip(v - k/K, 0, 1/K)``.
    Uniform ``P`` gives the identity.
    """
    b, c, h, w = x.shape
    k = params.shape[-1]
    # evaluate the curve by lookup instead of summing K clipped ramps: O(HW), not O(HW*K).
    # piece i covers [i/K, (i+1)/K); f(v) = (P_0 + ... + P_{i-1} + (vK - i) * P_i) / sum(P)
    v = x.reshape(b, c, h * w) * k
    idx = v.detach().floor().clamp(0, k - 1).long()
    frac = v - idx.to(v.dtype)
    below = torch.cumsum(params, dim=-1) - params  # exclusive prefix sums
    out = torch.gather(below, 2, idx) + frac * torch.gather(params, 2, idx)
    out = out / (params.sum(-1, keepdim=True) + 1e-30)
    return out.reshape(b, c, h, w)


@ATTACKS.register("advcf", aliases=["adv-cf", "colour-filter", "color-filter"],
                  tags=("gradient", "unrestricted"), presets={"lr0.01": {"lr": 0.01}})
class AdvCF(Attack):
    """AdvCF (Zhao, Liu & Larson, "Adversarial color enhancement: generating unrestricted
    adversarial images by optimizing a color filter", BMVC 2020), as the MSU group runs it
    against IQA metrics.

    A per-channel piecewise-linear colour curve with ``pieces=64`` slopes initialised to
    ``1/64`` (the identity), optimised by Adam (``lr=0.1``, ``steps=10``) on
    ``score_loss + reg * sum((P / sum P - 1/pieces)^2)`` (``reg=0.5``), slopes clamped
    non-negative before each step, the filtered image clipped to [0, 1]. The iterate with the
    best score is kept per image (scored before its 8-bit quantisation, as the group's code
    does: no extra forward pass per step). These are the group's settings, and our loop gives
    their images (tested against a restatement of their step).

    Adam's first step moves every slope by ``lr``, 6.4 times the initial slope at lr 0.1:
    about half the slopes drop to 0 at once, so the curve can change a lot in one step, and
    on a metric whose gradient favours one colour the photo can turn that colour (the offline
    effnet-iqa pushes photos towards yellow). ``lr=0.01`` (preset ``advcf:lr0.01``, the
    learning rate of Zhao et al.'s own code) changes the curve gradually; on effnet-iqa it
    also raises the score more within the 10 steps.
    """

    name = "advcf"
    has_eps = False

    def __init__(self, metric, *, pieces: int = 64, lr: float = 0.1, steps: int = 10,
                 reg: float = 0.5, seed: int = 0):
        check_count(pieces, "advcf pieces")
        check_positive(lr, "advcf lr")
        check_count(steps, "advcf steps")
        check_nonnegative(reg, "advcf reg")
        super().__init__(metric, pieces=int(pieces), lr=float(lr), steps=int(steps),
                         reg=float(reg), seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        params = torch.full((b, 3, self.pieces), 1.0 / self.pieces, device=x.device,
                            dtype=x.dtype, requires_grad=True)
        opt = torch.optim.Adam([params], lr=self.lr)
        best = x.clone()
        best_q = torch.full((b,), -float("inf"), device=x.device, dtype=x.dtype)
        sign, width = self.metric.sign, self.metric.range_width
        for _ in range(self.steps):
            with torch.no_grad():
                params.clamp_(min=0)
            share = params / params.sum(-1, keepdim=True).clamp_min(1e-30)
            l2 = (share - 1.0 / self.pieces).pow(2).sum(dim=(1, 2))
            adv = colour_filter(x, params).clamp(0, 1)
            q = sign * self.metric(adv)
            loss = 1.0 - q / width + self.reg * l2
            opt.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss.sum(), params)
            params.grad = torch.nan_to_num(grad)
            opt.step()
            with torch.no_grad():
                # keep each image's best iterate, judged by the score already computed
                # for the step (the benchmark's rule: no extra forward pass)
                q = q.detach()
                better = q > best_q
                best = torch.where(better.reshape(-1, 1, 1, 1), adv.detach(), best)
                best_q = torch.where(better, q, best_q)
        return best
