"""PGD with an L2 budget: the attack that checks a certified interval.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards deep learning models resistant to adversarial
attacks" (ICLR 2018), in its L2 form: normalised-gradient steps of size ``step`` (default
``2.5 eps / steps``), each followed by the projection onto the L2 ball of radius ``eps`` around
the clean image and onto [0, 1] (clipping to [0, 1] never lengthens a perturbation, so the
result stays in the ball). Against a :class:`~iqalib.certify.smoothing.SmoothedMetric` every
gradient is a Monte-Carlo gradient over fresh noise draws (EOT: Athalye, Carlini & Wagner, ICML
2018; the adaptive attack on smoothed models of Salman et al., NeurIPS 2019); ``eot`` averages
that many gradients per step.

``direction="raise"`` improves the quality score as every attack of the study does (``"lower"``
worsens it); a certified interval has two ends, so its check runs both. Unlike the study's
attacks the output is NOT rounded to the 8-bit grid: rounding alone moves a 299x299 image by an
L2 norm of about 0.6, more than the radii being certified. That breaks the attack contract of
:mod:`iqalib.attacks` (outputs on the 8-bit grid), so this attack is not in the ``ATTACKS``
registry: it is a tool of the certificate check, ``iqalib.certify.PGDL2``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..attacks.base import Attack, check_count, check_nonnegative, check_positive


def project_l2(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L2 ball of radius ``eps`` around ``x`` (per image), then onto [0,1]."""
    d = x_adv - x
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    d = d * torch.clamp(eps / norm, max=1.0)
    return (x + d).clamp(0, 1)


class PGDL2(Attack):
    """PGD with an L2 budget (Madry et al., ICLR 2018) and optional EOT gradient averaging.

    Defaults: ``eps=0.5`` (L2 in [0,1] units over all pixels and channels), ``steps=20``,
    ``step=None`` (= ``2.5 * eps / steps``), ``eot=1`` gradients averaged per step,
    ``random_start=False``, ``direction="raise"``. Output is not quantised (see the module).
    """

    name = "pgd-l2"

    def __init__(self, metric, *, eps: float = 0.5, steps: int = 20, step: float | None = None,
                 eot: int = 1, random_start: bool = False, direction: str = "raise",
                 seed: int = 0):
        if direction not in ("raise", "lower"):
            raise ValueError(f"direction must be 'raise' or 'lower', got {direction!r}")
        # an L2 radius over a whole image may well exceed 1 (a 10/255 L-inf ball reaches 20)
        eps = check_nonnegative(eps, "eps")
        steps = check_count(steps, "steps")
        eot = check_count(eot, "eot")
        step = 2.5 * eps / steps if step is None else check_positive(step, "step")
        super().__init__(metric, seed=seed, eps=eps, steps=steps, step=float(step), eot=eot,
                         random_start=bool(random_start), direction=direction)

    def objective(self, x: Tensor) -> Tensor:
        """Per-image loss to minimise: the score loss, or its negation for ``"lower"``."""
        loss = self.score_loss(x)
        return loss if self.direction == "raise" else -loss

    def perturb(self, x: Tensor) -> Tensor:
        x_adv = x.clone()
        if self.random_start and self.eps > 0:
            d = torch.randn_like(x)
            r = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * self.eps
            x_adv = project_l2(x + d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * r, x, self.eps)
        for _ in range(self.steps):
            grad = torch.zeros_like(x)
            for _ in range(self.eot):
                grad += self.loss_and_grad(x_adv, self.objective)[1]
            # any nonzero gradient gives a full step, however flat the metric is there
            norm = grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
            x_adv = project_l2(x_adv - self.step * grad / norm.view(-1, 1, 1, 1), x, self.eps)
        return x_adv

    def finalise(self, x_adv: Tensor, x: Tensor) -> Tensor:
        # not rounded to 8 bits, which would leave the L2 ball (see the module docstring)
        return project_l2(x_adv, x, self.eps)


__all__ = ["PGDL2", "project_l2"]
