"""LinearityIQA: the Norm-in-Norm quality model (one of the paper's three metrics).

Li, Jiang & Jiang, "Norm-in-Norm Loss with Faster Convergence and Better Performance for
Image Quality Assessment", ACM Multimedia 2020 (https://github.com/lidq92/LinearityIQA),
checkpoint ``p1q2.pth`` trained on KonIQ-10k (catalogue name ``linearity-p1q2``).

Architecture (re-built here from the paper's description, see WEIGHTS.md for the layout):
a ResNeXt-101 32x8d trunk (torchvision, built empty: its ImageNet weights are already inside
the checkpoint) without avgpool/fc as ``features.0..7``; global average pooling of stage 6
(1024 channels) and stage 7 (2048 channels); ``dr6`` / ``dr7`` heads
Linear(c,1024)-BN-Linear(1024,256)-BN-Linear(256,64)-BN-ReLU; ``regr6`` / ``regr7``
Linear(64,1) (side outputs used in training only); ``regression`` Linear(128,1) on the two
64-d vectors. The score is ``s * k[0] + b[0]`` with ``k``, ``b`` stored in the checkpoint,
on the KonIQ MOS scale; the paper's group normalises by the range 25.781..83.227 (their
``bounds.json``).

Defaults: ImageNet mean/std normalisation inside :meth:`Linearity.forward`; ``resize=None``
(full resolution), which is what the MSU benchmark and the adversarial-defenses-for-iqa
code of the paper's group feed the metric. ``resize=(498, 664)`` reproduces the training
resolution of the upstream repository's ``--resize`` option (bilinear, antialiased,
differentiable).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import METRICS
from ._checkpoint import describe, load_strict, read_checkpoint, require
from .base import IQAMetric, check_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the upstream training resolution (h, w) used by its optional ``--resize``
TRAIN_SIZE = (498, 664)


def _head(in_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, 1024), nn.BatchNorm1d(1024),
        nn.Linear(1024, 256), nn.BatchNorm1d(256),
        nn.Linear(256, 64), nn.BatchNorm1d(64), nn.ReLU())


class LinearityNet(nn.Module):
    """The network whose ``state_dict`` keys match ``p1q2.pth['model']``."""

    def __init__(self):
        super().__init__()
        import torchvision

        trunk = torchvision.models.resnext101_32x8d(weights=None)
        # children: conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc -> keep 0..7
        self.features = nn.Sequential(*list(trunk.children())[:-2])
        self.dr6 = _head(1024)
        self.dr7 = _head(2048)
        self.regr6 = nn.Linear(64, 1)
        self.regr7 = nn.Linear(64, 1)
        self.regression = nn.Linear(128, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        side = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in (6, 7):
                pooled = x.mean(dim=(2, 3))  # global average pooling (SPSP with P=1, 'avg')
                head, regr = (self.dr6, self.regr6) if i == 6 else (self.dr7, self.regr7)
                f = head(pooled)
                feats.append(f)
                side.append(regr(f))
        s = self.regression(torch.cat(feats, dim=1))
        return [*side, s]


class Linearity(IQAMetric):
    """LinearityIQA (Li et al., ACM MM 2020) as a differentiable metric; higher is better.

    Args:
        pretrained: load the ``linearity-p1q2`` checkpoint (default True). False gives a
            seeded random initialisation (for tests; scores are meaningless) with k=1, b=0.
        checkpoint: a path or an already loaded dict in the ``p1q2.pth`` layout
            (``{'model': state_dict, 'k': [3], 'b': [3], ...}``), instead of the catalogue.
        resize: ``None`` (default: full resolution, as the paper's group runs it) or an
            ``(h, w)`` size such as :data:`TRAIN_SIZE` ``(498, 664)``.
        seed: seed of the random initialisation when ``pretrained=False``.
    """

    name = "linearity"
    lower_better = False
    #: the MSU group's bounds.json range (metrics/defences/utils/bounds.json)
    score_range = (25.780681610107422, 83.22696685791016)
    weights = ("linearity-p1q2",)

    def __init__(self, *, pretrained: bool = True,
                 checkpoint: str | os.PathLike | Mapping | None = None,
                 resize: tuple[int, int] | None = None, seed: int = 0):
        super().__init__()
        # read the checkpoint first: a missing file fails before the 88M-parameter build
        ckpt = read_checkpoint("linearity-p1q2", checkpoint) \
            if (pretrained or checkpoint is not None) else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init is reproducible and leaves global RNG alone
            self.net = LinearityNet()
        self.resize = tuple(resize) if resize is not None else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("k", torch.ones(()))
        self.register_buffer("b", torch.zeros(()))
        if ckpt is not None:
            self.load_checkpoint(ckpt, source=checkpoint)
        self.eval()
        self.requires_grad_(False)  # attacks need input gradients only

    def load_checkpoint(self, checkpoint: str | os.PathLike | Mapping | None = None, *,
                        source: Any = None) -> None:
        """Load ``p1q2.pth`` (catalogue if None, else a path or loaded dict); strict keys;
        sets k and b."""
        what = describe("Linearity", "linearity-p1q2", checkpoint if source is None else source)
        ckpt = read_checkpoint("linearity-p1q2", checkpoint)
        load_strict(self.net, require(ckpt, "model", what), what)
        k = torch.as_tensor(require(ckpt, "k", what), dtype=torch.float32).flatten()
        b = torch.as_tensor(require(ckpt, "b", what), dtype=torch.float32).flatten()
        # k[0], b[0] map the final regression output to MOS (k[1:], b[1:] serve the side heads)
        self.k.copy_(k[0])
        self.b.copy_(b[0])

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x)
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False,
                              antialias=True)
        x = (x - self.mean) / self.std
        s = self.net(x)[-1]
        return s[:, 0] * self.k + self.b

    def extra_repr(self) -> str:
        return f"resize={self.resize}, " + super().extra_repr()


@METRICS.register("linearity", aliases=["linearityiqa", "linearity-iqa", "linearity-p1q2"],
                  tags=("paper", "deep"))
def linearity(**kwargs: Any) -> Linearity:
    """LinearityIQA (Norm-in-Norm, ACM MM 2020), ResNeXt-101, KonIQ; higher is better."""
    return Linearity(**kwargs)
