"""Sign-gradient attacks with an L-inf budget: I-FGSM, MI-FGSM and AMI-FGSM.

All three minimise the per-image score loss ``1 - sign * score / range`` (see
:mod:`iqalib.attacks.base`) with signed steps inside the L-inf ball of radius ``eps`` around the
clean image.

Two ways to stay inside the ball (``projection=``):

- ``"perturbation"`` (I-FGSM and MI-FGSM default): the MSU group's code
  (``methods/ifgsm/run.py`` of msu-video-group/adversarial-defenses-for-iqa, ``mifgsm`` of the
  metrics robustness benchmark). A perturbation ``p`` is clipped to ``[-eps, eps]`` after every
  step but not to [0, 1]; the metric sees ``clip(x + p, 0, 1)`` and the gradient with respect
  to that image drives ``p``; the result is ``clip(x + p, 0, 1)``.
- ``"image"``: torchattacks' ``BIM`` order (step on the image iterate, then clip to
  ``[x - eps, x + eps]`` and to [0, 1]), so our I-FGSM and torchattacks'
  ``BIM(eps, alpha, steps)`` on :class:`~iqalib.attacks.torchattacks_adapter.ScoreAsLogits`
  give the same images (tested). AMI-FGSM uses it because the benchmark's AMI-FGSM clips the
  image iterate to [0, 1] and never needs the ball (``steps * eps / steps = eps``).

The two agree until a pixel saturates at 0 or 1: there ``p`` keeps the part of the step the
clip removed, ``"image"`` forgets it.

The loops add no host synchronisation of their own (every update is an in-place tensor
operation; nothing is read back to Python until the attack ends); a metric's own input check
in its ``forward`` may still read values back.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, check_count, check_nonnegative, check_positive, check_unit

#: how an iterate is kept inside the L-inf ball (see the module docstring)
PROJECTIONS = ("perturbation", "image")


def _check_projection(projection) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")


def per_image(v: Tensor | float, x: Tensor) -> Tensor | float:
    """A per-image value ``[B]`` broadcast against ``[B,3,H,W]``; floats pass through."""
    if torch.is_tensor(v):
        return v.to(x).reshape(-1, 1, 1, 1)
    return v


def sign_step_loop(attack: Attack, x: Tensor, *, eps, step, steps: int, momentum: float = 0.0,
                   normalise_l1: bool = False, projection: str = "perturbation",
                   loss_fn: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """The shared loop: a signed step ``step * sign(g)`` per iteration, then the projection.

    With ``momentum > 0`` the direction is ``g_t = momentum * g_{t-1} + grad``, where ``grad``
    is divided by its per-image L1 norm when ``normalise_l1`` (Dong et al. 2018); every norm
    is per image, so images of a batch never influence each other. ``eps`` and ``step`` are
    floats or per-image ``[B]`` tensors. ``projection`` is ``"perturbation"`` or ``"image"``.
    """
    _check_projection(projection)
    eps, step = per_image(eps, x), per_image(step, x)
    neg_eps = -eps
    # the momentum keeps its own buffer: the step's sign goes into `direction`
    g_acc = torch.zeros_like(x) if momentum else None
    direction = torch.empty_like(x) if momentum else None
    if projection == "image":
        # clip(min(max(z, x - eps), x + eps), 0, 1) is clamp(z, lo, hi) with these bounds
        lo, hi = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
        x_adv = x.clone()
    else:
        p = torch.zeros_like(x)
        x_adv = x.clone()  # clip(x + p, 0, 1), rebuilt in place after each step
    for _ in range(steps):
        _, grad = attack.loss_and_grad(x_adv, loss_fn)
        with torch.no_grad():
            if normalise_l1:
                # a zero gradient stays zero instead of becoming NaN
                grad.div_(grad.abs().sum(dim=(1, 2, 3), keepdim=True).clamp_min_(1e-12))
            if g_acc is not None:
                g_acc.mul_(momentum).add_(grad)
                torch.sign(g_acc, out=direction)
                signed = direction
            else:
                signed = grad.sign_()  # autograd handed us a fresh tensor: reuse it
            target = x_adv if projection == "image" else p
            if torch.is_tensor(step):
                target.addcmul_(signed, step, value=-1.0)
            else:
                target.add_(signed, alpha=-step)
            if projection == "image":
                torch.clamp(x_adv, lo, hi, out=x_adv)
            else:
                torch.clamp(p, neg_eps, eps, out=p)
                torch.add(x, p, out=x_adv).clamp_(0, 1)
    return x_adv


@ATTACKS.register("ifgsm", aliases=["i-fgsm", "bim"], tags=("gradient", "linf"),
                  presets={"eps2": {"eps": 2 / 255}, "eps4": {"eps": 4 / 255},
                           "eps8": {"eps": 8 / 255}, "eps16": {"eps": 16 / 255},
                           "image": {"projection": "image"}})
class IFGSM(Attack):
    """I-FGSM (Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world",
    ICLR workshop 2017), as the MSU group applies it to IQA metrics.

    Defaults (the study's): ``eps=10/255``, ``steps=10``, ``alpha=1/255``,
    ``projection="perturbation"`` (the MSU code's clipped perturbation; ``"image"``, preset
    ``ifgsm:image``, is torchattacks' BIM order).
    """

    name = "ifgsm"

    def __init__(self, metric, *, eps: float = 10 / 255, steps: int = 10, alpha: float = 1 / 255,
                 projection: str = "perturbation", seed: int = 0):
        check_unit(eps, "ifgsm eps")
        check_count(steps, "ifgsm steps")
        check_positive(alpha, "ifgsm alpha")
        _check_projection(projection)
        super().__init__(metric, eps=float(eps), steps=int(steps), alpha=float(alpha),
                         projection=projection, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        return sign_step_loop(self, x, eps=self.eps, step=self.alpha, steps=self.steps,
                              projection=self.projection)


@ATTACKS.register("mifgsm", aliases=["mi-fgsm"], tags=("gradient", "linf"),
                  presets={"l1": {"normalise_l1": True}})
class MIFGSM(Attack):
    """MI-FGSM (Dong et al., "Boosting adversarial attacks with momentum", CVPR 2018), as the
    MSU metrics robustness benchmark runs it.

    Defaults: ``eps=10/255``, ``steps=10``, ``alpha=1/255``, ``momentum=1.0``; the momentum
    accumulates the raw gradient (the benchmark's form), ``projection="perturbation"``.
    ``normalise_l1=True`` (preset ``mifgsm:l1``) divides each step's gradient by its per-image
    L1 norm first, as Dong et al. and torchattacks' ``MIFGSM`` do.
    """

    name = "mifgsm"

    def __init__(self, metric, *, eps: float = 10 / 255, steps: int = 10, alpha: float = 1 / 255,
                 momentum: float = 1.0, normalise_l1: bool = False,
                 projection: str = "perturbation", seed: int = 0):
        check_unit(eps, "mifgsm eps")
        check_count(steps, "mifgsm steps")
        check_positive(alpha, "mifgsm alpha")
        check_nonnegative(momentum, "mifgsm momentum")
        if not isinstance(normalise_l1, bool):
            raise ValueError(f"mifgsm normalise_l1 must be True or False, got {normalise_l1!r}")  # noqa: TRY004 - one error class for every bad setting
        _check_projection(projection)
        super().__init__(metric, eps=float(eps), steps=int(steps), alpha=float(alpha),
                         momentum=float(momentum), normalise_l1=normalise_l1,
                         projection=projection, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        return sign_step_loop(self, x, eps=self.eps, step=self.alpha, steps=self.steps,
                              momentum=self.momentum, normalise_l1=self.normalise_l1,
                              projection=self.projection)


@ATTACKS.register("amifgsm", aliases=["ami-fgsm"], tags=("gradient", "linf"),
                  presets={"niqe": {"eps": "niqe"}})
class AMIFGSM(Attack):
    """AMI-FGSM: momentum I-FGSM with the step tied to the budget, ``alpha = eps / steps``,
    as the MSU metrics robustness benchmark runs it (Antsiferova et al., "Comparing the
    robustness of modern no-reference image- and video-quality metrics to adversarial
    attacks", AAAI 2024; momentum from Dong et al. 2018).

    Defaults: ``eps=10/255``, ``steps=10``, ``momentum=1.0``; the momentum accumulates the
    raw gradient and the image iterate is clipped to [0, 1] (the benchmark's form; ``steps``
    steps of ``eps / steps`` never leave the ball). ``eps="niqe"`` is the benchmark's
    adaptive variant: a per-image budget ``1 / NIQE(image)`` (``niqe_metric`` defaults to
    ``iqalib.load_metric("niqe")``; any [B]-scoring callable can be given instead).
    """

    name = "amifgsm"

    def __init__(self, metric, *, eps: float | str = 10 / 255, steps: int = 10,
                 momentum: float = 1.0, seed: int = 0, niqe_metric=None):
        if isinstance(eps, str):
            if eps != "niqe":
                raise ValueError(f"amifgsm eps must be a number >= 0 or 'niqe', got {eps!r}")
        else:
            eps = check_unit(eps, "amifgsm eps")
        check_count(steps, "amifgsm steps")
        check_nonnegative(momentum, "amifgsm momentum")
        super().__init__(metric, eps=eps, steps=int(steps), momentum=float(momentum), seed=seed)
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
                              momentum=self.momentum, projection="image")
