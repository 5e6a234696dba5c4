"""Run torchattacks' sign-gradient attacks (FGSM, BIM, PGD, MIFGSM) against an IQA metric.

torchattacks' losses assume class logits, and a bare score gives them nothing to work with.
:class:`ScoreAsLogits` shows the metric as a two-class model with logits ``[-q, q]``,
``q = sign * score`` (sign = -1 for lower-is-better metrics). With label 0, the
cross-entropy is ``log(1 + exp(2q))``, strictly increasing in ``q``, so its gradient is the
score gradient times a positive per-image factor and every *sign*-gradient attack of
torchattacks raises the score exactly as it would raise the loss. (Attacks that use the
gradient's magnitude, such as CW or DeepFool, are not equivalent.)

torchattacks (installed ``--no-deps``; see OFFLINE.md) is imported lazily.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..metrics.base import IQAMetric


class ScoreAsLogits(nn.Module):
    """``model(x) -> [B, 2]`` logits ``stack([-q, q])`` with ``q = metric.sign * metric(x)``.

    Attack with label 0 (``labels_for(x)``). Holds an empty parameter on the metric's
    device because torchattacks reads the device from ``next(model.parameters())``.
    """

    def __init__(self, metric: IQAMetric):
        super().__init__()
        self.metric = metric
        self._device_anchor = nn.Parameter(torch.empty(0, device=metric.device),
                                           requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        q = self.metric.sign * self.metric(x)
        return torch.stack([-q, q], dim=1)

    @staticmethod
    def labels_for(x: Tensor) -> Tensor:
        """The label every image gets: class 0, so raising the loss raises ``q``."""
        return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)


def torchattacks_attack(name: str, metric: IQAMetric, **kwargs):
    """A torchattacks attack (e.g. ``"BIM"``, ``eps=10/255, alpha=1/255, steps=10``) on the
    metric's score; call it as ``atk(x, ScoreAsLogits.labels_for(x))``."""
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - installed in the project venv
        raise ImportError("torchattacks is not installed: `pip install --no-deps "
                          "torchattacks==3.5.1` (its requests pin clashes with Jupyter)") from e
    cls = getattr(torchattacks, name)
    return cls(ScoreAsLogits(metric).eval(), **kwargs)


def run_torchattacks(name: str, metric: IQAMetric, x: Tensor, **kwargs) -> Tensor:
    """Attack a batch with torchattacks' ``name`` on the metric's score; returns x_adv
    (not quantised: torchattacks does not quantise)."""
    atk = torchattacks_attack(name, metric, **kwargs)
    return atk(x, ScoreAsLogits.labels_for(x))
