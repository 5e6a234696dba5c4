"""Adaptive attacks on a defended metric: BPDA and EOT (beyond the study).

The study attacks the bare metric and then purifies. An attacker who knows the purifier
attacks ``metric(purify(x))`` instead. Two obstacles, two standard answers (Athalye,
Carlini & Wagner, "Obfuscated gradients give a false sense of security", ICML 2018):

* **BPDA** (Backward Pass Differentiable Approximation): a purifier without useful
  gradients (JPEG, median, quantisation: ``Defense.differentiable == False``) is run
  forward as is, and treated as the identity on the backward pass (straight-through).
  A purifier that changes the size gets its gradient resized back to the input size.
* **EOT** (Expectation over Transformation): a stochastic purifier (random crop, DiffPure)
  is averaged over ``eot`` draws, each with its own ``torch.Generator`` seeded
  ``seed + i``, so the attack follows the expected defended score and is reproducible.

:class:`DefendedMetric` packages both as an ordinary differentiable :class:`IQAMetric`, so
any gradient attack of :mod:`iqalib.attacks` targets the defended metric unchanged::

    dm = DefendedMetric(metric, load_defense("jpeg"), bpda="auto")
    x_adv = load_attack("ifgsm", dm)(x)
    x_adv = adaptive("ifgsm", metric, "random-crop", eot=8)(x)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.base import IQAMetric
from ..registry import ATTACKS


class _StraightThrough(torch.autograd.Function):
    """Forward: the purified image (computed outside the graph). Backward: the identity,
    resized to the input's size when the purifier changed it."""

    @staticmethod
    def forward(ctx, x: Tensor, purified: Tensor) -> Tensor:
        ctx.in_size = x.shape[-2:]
        return purified.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        if grad.shape[-2:] != ctx.in_size:
            grad = F.interpolate(grad, size=tuple(ctx.in_size), mode="bilinear",
                                 align_corners=False)
        return grad, None


def bpda(defense, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``defense(x)`` forward, identity backward (Athalye et al. 2018)."""
    with torch.no_grad():
        purified = defense(x.detach(), generator=generator) if defense.stochastic \
            else defense(x.detach())
    return _StraightThrough.apply(x, purified)


class DefendedMetric(IQAMetric):
    """``metric(defense(x))`` as a differentiable metric, for adaptive attacks.

    Args:
        metric: the metric under attack.
        defense: a :class:`~iqalib.defenses.base.Defense` or its name (``"jpeg:q50"``).
        eot: draws averaged for a stochastic defense (ignored for deterministic ones:
            they give the same output every time). Default 8.
        bpda: ``"auto"`` (straight-through when ``defense.differentiable`` is False),
            ``True`` (always) or ``False`` (never: true gradients through the defense).
        seed: draw ``i`` uses ``torch.Generator().manual_seed(seed + i)``, so the defended
            score is a deterministic function of ``x``.

    Keeps the metric's name, direction and score range, so losses are on the same scale.
    """

    def __init__(self, metric: IQAMetric, defense, *, eot: int = 8, bpda: bool | str = "auto",
                 seed: int = 0):
        super().__init__()
        if isinstance(defense, str):
            from ..defenses import create_defense

            defense = create_defense(defense).to(metric.device)
        if bpda not in ("auto", True, False):
            raise ValueError(f"bpda must be 'auto', True or False, got {bpda!r}")
        if eot < 1:
            raise ValueError(f"eot must be >= 1, got {eot}")
        self.metric = metric
        self.defense = defense
        self.eot = int(eot) if defense.stochastic else 1
        self.use_bpda = (not defense.differentiable) if bpda == "auto" else bool(bpda)
        self.seed = seed
        self.name = f"{metric.name}|{defense.name}"
        self.lower_better = metric.lower_better
        self.score_range = metric.score_range
        self.weights = tuple(getattr(metric, "weights", ()))
        # a metric wrapper scores; it never trains (nn.Module starts in training mode)
        self.train(False)

    def _purify(self, x: Tensor, i: int) -> Tensor:
        gen = None
        if self.defense.stochastic:
            gen = torch.Generator(device=x.device).manual_seed(self.seed + i)
        if self.use_bpda:
            return bpda(self.defense, x, gen)
        return self.defense(x, generator=gen) if self.defense.stochastic else self.defense(x)

    def forward(self, x: Tensor) -> Tensor:
        scores = [self.metric(self._purify(x, i)) for i in range(self.eot)]
        return torch.stack(scores).mean(dim=0)

    def extra_repr(self) -> str:
        return (f"defense={self.defense!r}, eot={self.eot}, bpda={self.use_bpda}, "
                f"seed={self.seed}")


def adaptive(attack: str, metric: IQAMetric, defense, *, eot: int = 8,
             bpda: bool | str = "auto", defense_seed: int = 0, **attack_kw):
    """Attack ``attack`` (any registered gradient attack) aimed at ``metric(defense(x))``."""
    dm = DefendedMetric(metric, defense, eot=eot, bpda=bpda, seed=defense_seed)
    atk = ATTACKS.create(attack, metric=dm, **attack_kw)
    # record the adaptive setting with the attack's own hyperparameters (results table)
    atk.name = f"adaptive-{atk.name}"
    atk.hparams = {**atk.hparams, "defense": dm.defense.name,
                   "defense_params": dict(getattr(dm.defense, "hparams", {})),
                   "eot": dm.eot, "bpda": dm.use_bpda, "defense_seed": defense_seed}
    return atk


@ATTACKS.register("adaptive", aliases=["bpda", "eot", "bpda-eot"], tags=("adaptive",))
def _adaptive_factory(metric, *, defense, attack: str = "ifgsm", eot: int = 8,
                      bpda: bool | str = "auto", defense_seed: int = 0, **attack_kw):
    """An adaptive (BPDA + EOT) attack on the defended metric; default base attack I-FGSM."""
    return adaptive(attack, metric, defense, eot=eot, bpda=bpda, defense_seed=defense_seed,
                    **attack_kw)
