"""The attack contract and the machinery every attack shares.

An attack raises a metric's quality score (metric "boosting"). The loss every attack of
the study minimises is ``1 - sign * score / range_width`` per image, where ``sign = -1`` for
lower-is-better metrics and ``range_width`` is the metric's normalisation range
(Antsiferova et al., MSU metrics robustness benchmark). Outputs are clamped to [0,1] and
quantised to 1/255 as the study does, so an attacked image survives being saved as 8-bit PNG.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .._params import HasParams
from ..errors import ImageError
from ..metrics.base import IQAMetric, check_batch, inputs_checked


def quantise(x: Tensor) -> Tensor:
    """Clamp to [0,1] and round to the 8-bit grid."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto the L-inf ball of radius ``eps`` around ``x`` and onto [0,1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


# -- keyword checks: every attack validates its settings in __init__ ----------------------
def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not (
            torch.is_tensor(v) and v.numel() == 1):
        raise ValueError(f"{what} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v}")
    return v


def check_positive(v, what: str) -> float:
    """``v`` as a float, or a ValueError unless it is a finite number > 0."""
    v = _number(v, what)
    if not v > 0:
        raise ValueError(f"{what} must be > 0, got {v}")
    return v


def check_nonnegative(v, what: str) -> float:
    """``v`` as a float, or a ValueError unless it is a finite number >= 0."""
    v = _number(v, what)
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return v


def check_unit(v, what: str) -> float:
    """``v`` as a float, or a ValueError unless it lies in [0, 1] (a budget on [0,1] images)."""
    v = _number(v, what)
    if not 0 <= v <= 1:
        raise ValueError(f"{what} must be in [0, 1] (images are in [0, 1]), got {v}")
    return v


def check_count(v, what: str, minimum: int = 1) -> int:
    """``v`` as an int, or a ValueError unless it is a whole number >= ``minimum``."""
    if isinstance(v, bool) or not isinstance(v, int) and not (
            isinstance(v, float) and v.is_integer()):
        raise ValueError(f"{what} must be a whole number >= {minimum}, got {v!r}")
    if int(v) < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {int(v)}")
    return int(v)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and freeze its parameters; restore both on exit.

    Each submodule gets its own mode back: a wrapper constructed in training mode (the
    ``nn.Module`` default) around a metric in eval mode must not leave with ``train(True)``
    applied to the metric, whose batch norm would then score on batch statistics."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


class Attack(HasParams):
    """Base class: ``attack(x) -> x_adv`` for a batch ``[B,3,H,W]`` in [0,1].

    Subclasses call ``super().__init__(metric, seed=..., **hyperparameters)`` and implement
    :meth:`perturb`. ``__call__`` handles eval mode, devices, seeding and quantisation.
    """

    name = "attack"
    #: False for attacks that need no gradient of the metric (none of the study's ten)
    needs_grad = True
    #: False for unrestricted attacks (no L-inf budget: AdvCF, Zhang et al.)
    has_eps = True
    #: catalogue names of the checkpoints this attack needs (see iqalib.weights)
    weights: tuple[str, ...] = ()

    def __init__(self, metric: IQAMetric, *, seed: int = 0, **hyperparameters):
        self.metric = metric
        self._set_params(**hyperparameters, seed=seed)

    # -- the score loss ------------------------------------------------------
    def score_loss(self, x: Tensor) -> Tensor:
        """Per-image loss ``1 - sign * score / range_width`` (``[B]``); lower = higher quality."""
        s = self.metric(x)
        return 1.0 - self.metric.sign * s / self.metric.range_width

    def loss_and_grad(self, x: Tensor, loss_fn=None) -> tuple[Tensor, Tensor]:
        """Loss ``[B]`` (detached) and its gradient with respect to ``x``.

        Images of a batch are independent, so the gradient of the summed loss is each
        image's own gradient.
        """
        loss_fn = loss_fn or self.score_loss
        x = x.detach().requires_grad_(True)  # a view: no copy of the iterate
        loss = loss_fn(x)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        if not grad.is_contiguous():
            # an expanded gradient (a score linear in the mean) cannot be updated in place
            grad = grad.contiguous()
        return loss.detach(), grad

    # -- running -------------------------------------------------------------
    def perturb(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: Tensor) -> Tensor:
        check_batch(x, f"{self.name} input")
        device = self.metric.device
        x = x.detach().to(device)
        with eval_mode(self.metric), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            # the input was checked above: the loop's forwards skip the per-step host read
            with torch.enable_grad(), inputs_checked():
                x_adv = self.perturb(x)
        if not torch.isfinite(x_adv).all():
            raise ImageError(f"{self.name} produced NaN or Inf values (a non-finite gradient of "
                             f"{self.metric.name}?); the input images were finite")
        return self.finalise(x_adv.detach(), x)

    def finalise(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The attack's output from the loop's last iterate ``x_adv`` (``x``: the clean batch
        on the metric's device): rounded to the 8-bit grid (:func:`quantise`), as the study
        saves its attacked images as PNG."""
        return quantise(x_adv)


def adam_image_loop(x: Tensor, loss_fn, *, lr: float, steps: int,
                    grad_mask: Tensor | None = None) -> Tensor:
    """Optimise the image itself with Adam, clamping to [0,1] after every step.

    ``loss_fn(x_adv) -> [B]`` per-image losses; their sum is minimised. Adam's update is
    elementwise, so each image follows its own gradient and batches stay independent.
    ``grad_mask`` (broadcastable to ``x``) multiplies the gradient before the step
    (Korhonen et al.'s spatial-activity mask). Shared by Korhonen, SSAH and Zhang et al.
    """
    x_adv = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_adv], lr=lr)
    for _ in range(steps):
        loss = loss_fn(x_adv)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        with torch.no_grad():
            # a NaN from a metric's sqrt/log at a flat patch must not poison the image
            torch.nan_to_num_(grad)
            if grad_mask is not None:
                grad.mul_(grad_mask)
        x_adv.grad = grad
        opt.step()
        with torch.no_grad():
            x_adv.clamp_(0, 1)
    return x_adv.detach()
