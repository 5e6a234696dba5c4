"""Sign-gradient attacks with an L-inf budget: I-FGSM, MI-FGSM and AMI-FGSM.

All three minimise the per-image score loss ``1 - sign * score / range`` (see
:mod:`iqalib.attacks.base`) with signed steps and keep the iterate inside the L-inf ball
of radius ``eps`` around the clean image and inside [0, 1] after every step.

The projection order is the one torchattacks' ``BIM`` uses (step on the image iterate, then
clip to ``[x - eps, x + eps]`` and to [0, 1]), so our I-FGSM and torchattacks'
``BIM(eps, alpha, steps)`` on :class:`~iqalib.attacks.torchattacks_adapter.ScoreAsLogits`
give the same images (tested). The MSU benchmark instead keeps a perturbation ``p`` clipped
to the ball but not to [0, 1] and clips ``x + p`` only when it is evaluated; the two agree
until a pixel hits 0 or 1.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, project_linf


def per_image(v: Tensor | float, x: Tensor) -> Tensor | float:
    """A per-image value ``[B]`` broadcast against ``[B,3,H,W]``; floats pass through."""
    if torch.is_tensor(v):
        return v.to(x).reshape(-1, 1, 1, 1)
    return v


def sign_step_loop(attack: Attack, x: Tensor, *, eps, step, steps: int, momentum: float = 0.0,
                   normalise_l1: bool = False,
                   loss_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The shared loop: ``x <- proj(x - step * sign(g))``, ``g`` optionally with momentum.

    With ``momentum > 0`` the accumulated direction is ``g_t = momentum * g_{t-1} + grad``
    where ``grad`` is divided by its per-image L1 norm when ``normalise_l1`` (Dong et al.
    2018); every norm is per image, so images of a batch never influence each other.
    ``eps`` and ``step`` are floats or per-image ``[B]`` tensors.
    """
    eps, step = per_image(eps, x), per_image(step, x)
    x_adv = x.clone()
    g_acc = torch.zeros_like(x)
    for _ in range(steps):
        _, grad = attack.loss_and_grad(x_adv, loss_fn)
        if normalise_l1:
            # a zero gradient stays zero instead of becoming NaN
            grad = grad / grad.abs().sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        if momentum:
            g_acc = momentum * g_acc + grad
            grad = g_acc
        x_adv = project_linf(x_adv - step * grad.sign(), x, eps)
    return x_adv


@ATTACKS.register("ifgsm", aliases=["i-fgsm", "bim"], tags=("gradient", "linf"),
                  presets={"eps2": {"eps": 2 / 255}, "eps4": {"eps": 4 / 255},
                           "eps8": {"eps": 8 / 255}, "eps16": {"eps": 16 / 255}})
class IFGSM(Attack):
    """I-FGSM (Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world",
    ICLR workshop 2017), as the MSU benchmark applies it to IQA metrics.

    Defaults (the study's): ``eps=10/255``, ``steps=10``, ``alpha=1/255``; L-inf projection
    after every step.
    """

    name = "ifgsm"

    def __init__(self, metric, *, eps: float = 10 / 255, steps: int = 10, alpha: float = 1 / 255,
                 seed: int = 0):
        super().__init__(metric, eps=eps, steps=steps, alpha=alpha, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        return sign_step_loop(self, x, eps=self.eps, step=self.alpha, steps=self.steps)


@ATTACKS.register("mifgsm", aliases=["mi-fgsm"], tags=("gradient", "linf"))
class MIFGSM(Attack):
    """MI-FGSM (Dong et al., "Boosting adversarial attacks with momentum", CVPR 2018).

    Defaults: ``eps=10/255``, ``steps=10``, ``alpha=1/255``, ``momentum=1.0``; each step's
    gradient is divided by its per-image L1 norm before it enters the momentum (as in the
    paper and torchattacks' ``MIFGSM``; the MSU benchmark omits the normalisation).
    """

    name = "mifgsm"

    def __init__(self, metric, *, eps: float = 10 / 255, steps: int = 10, alpha: float = 1 / 255,
                 momentum: float = 1.0, seed: int = 0):
        super().__init__(metric, eps=eps, steps=steps, alpha=alpha, momentum=momentum, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        return sign_step_loop(self, x, eps=self.eps, step=self.alpha, steps=self.steps,
                              momentum=self.momentum, normalise_l1=True)


@ATTACKS.register("amifgsm", aliases=["ami-fgsm"], tags=("gradient", "linf"),
                  presets={"niqe": {"eps": "niqe"}})
class AMIFGSM(Attack):
    """AMI-FGSM: momentum I-FGSM with the step tied to the budget, ``alpha = eps / steps``,
    as the MSU metrics robustness benchmark runs it (Antsiferova et al., "Comparing the
    robustness of modern no-reference image- and video-quality metrics to adversarial
    attacks", AAAI 2024; momentum from Dong et al. 2018).

    Defaults: ``eps=10/255``, ``steps=10``, ``momentum=1.0``; the momentum accumulates the
    raw gradient (the benchmark's form). ``eps="niqe"`` is the benchmark's adaptive variant:
    a per-image budget ``1 / NIQE(image)`` (``niqe_metric`` defaults to
    ``iqalib.load_metric("niqe")``; any [B]-scoring callable can be given instead).
    """

    name = "amifgsm"

    def __init__(self, metric, *, eps: float | str = 10 / 255, steps: int = 10,
                 momentum: float = 1.0, seed: int = 0, niqe_metric=None):
        if isinstance(eps, str) and eps != "niqe":
            raise ValueError(f"eps must be a float or 'niqe', got {eps!r}")
        super().__init__(metric, eps=eps, steps=steps, momentum=momentum, seed=seed)
        # kept out of hparams: a module is not a hyperparameter worth recording
        self._niqe = niqe_metric

    def _budget(self, x: Tensor) -> Tensor | float:
        if self.eps != "niqe":
            return self.eps
        if self._niqe is None:
            from ..metrics import create_metric

            self._niqe = create_metric("niqe").to(x.device).eval()
        with torch.no_grad():
            niqe = self._niqe(x).detach().to(x).reshape(-1)
        # NIQE is positive for natural images; guard against 0 / negative scores
        return 1.0 / niqe.clamp_min(1.0)

    def perturb(self, x: Tensor) -> Tensor:
        eps = self._budget(x)
        step = eps / self.steps
        return sign_step_loop(self, x, eps=eps, step=step, steps=self.steps,
                              momentum=self.momentum)
