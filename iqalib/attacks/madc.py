"""MAD competition adapted to attack one metric while holding the RMSE fixed."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, check_count, check_positive, check_unit


def rmse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image root-mean-square error ``[B]``."""
    return (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt()


@ATTACKS.register("madc", aliases=["mad", "mad-competition"], tags=("gradient",))
class MADC(Attack):
    """MAD competition (Wang & Simoncelli, "Maximum differentiation (MAD) competition: a
    methodology for comparing computational models of perceptual quantities", J. Vision 2008),
    as the MSU benchmark adapts it into an attack.

    Each of ``steps=8`` iterations takes a signed step of size ``lr=0.001`` along the score
    gradient projected orthogonally to the gradient of RMSE(x', x) (the first step, where the
    RMSE gradient is undefined, is unprojected), so the step changes the score while leaving
    the distortion level first-order unchanged. If RMSE exceeds ``eps=10/255`` the image is
    pulled back towards the clean one by signed steps of ``pull=0.0005`` until it does not.
    Everything is per image. The RMSE gradient is ``(x' - x) / (N * RMSE)``: the projection
    only needs its direction, ``x' - x``, so it is computed in closed form.
    """

    name = "madc"
    has_eps = True

    def __init__(self, metric, *, lr: float = 0.001, steps: int = 8, eps: float = 10 / 255,
                 pull: float = 0.0005, seed: int = 0):
        check_positive(lr, "madc lr")
        check_count(steps, "madc steps")
        check_unit(eps, "madc eps")
        check_positive(pull, "madc pull")
        super().__init__(metric, lr=float(lr), steps=int(steps), eps=float(eps), pull=float(pull),
                         seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        x_adv = x.clone()
        for i in range(self.steps):
            _, g = self.loss_and_grad(x_adv)
            with torch.no_grad():
                if i > 0:
                    d = x_adv - x
                    dd = d.pow(2).sum(dim=(1, 2, 3), keepdim=True)
                    coef = (d * g).sum(dim=(1, 2, 3), keepdim=True) / dd.clamp_min(1e-20)
                    # an image still equal to the clean one has no RMSE direction: keep g
                    g = torch.where(dd > 0, g - coef * d, g)
                x_adv.add_(g.sign_(), alpha=-self.lr).clamp_(0, 1)
                x_adv = self._hold_rmse(x_adv, x)
        return x_adv

    def _hold_rmse(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Pull images whose RMSE exceeds ``eps`` back by signed steps of ``pull`` until none
        does. The host looks once per attack step when no image is over the budget (always,
        with the defaults: 8 steps of 0.001 stay far inside 10/255); otherwise the pulls run
        in bursts masked per image, one look per burst of ``lr / pull + 2`` rounds (one
        attack step's drift), instead of one per round."""
        if not bool((rmse(x_adv, x) > self.eps).any()):
            return x_adv
        burst = int(self.lr / self.pull) + 2
        # each pull moves every pixel at most `pull` towards x, so the loop ends within
        # max|x_adv - x| / pull rounds; the cap only guards against a NaN
        max_rounds = int(1.0 / self.pull) + 2
        for _ in range(0, max_rounds, burst):
            for _ in range(burst):
                over = (rmse(x_adv, x) > self.eps).reshape(-1, 1, 1, 1)
                pulled = (x_adv - self.pull * (x_adv - x).sign()).clamp_(0, 1)
                x_adv = torch.where(over, pulled, x_adv)
            if not bool((rmse(x_adv, x) > self.eps).any()):
                break
        return x_adv
