"""MetaIQA (one of the paper's three metrics), through pyiqa's ``metaiqa`` network.

Zhu, Li, Wu, Dong & Shi, "MetaIQA: Deep Meta-Learning for No-Reference Image Quality
Assessment", CVPR 2020. pyiqa 0.1.16's re-implementation: torchvision ResNet-18 (1000-way fc
kept) -> head Linear(1000,1024)-BN-PReLU-Dropout-Linear(1024,512)-BN-PReLU-Dropout-
Linear(512,1)-Sigmoid; ImageNet-normalised RGB input; score in (0, 1), higher is better.

Input size: by default the image goes in at its own resolution, as the MSU group's wrapper
feeds it (``subjects/meta-iqa/src/model.py``: normalise, ResNet-18, head; the ResNet's adaptive
average pooling takes any size). ``resize=224`` (preset ``metaiqa:resize224``) is pyiqa's
pre-processing: a bilinear resize to 224x224 first.

Weights: pyiqa downloads ``Metaiqa_livec.pth`` for inference (``Metaiqa_prior.pth`` only when
the running script is called ``train.py``) and loads an explicit ``pretrained_model_path``
with ``strict=False`` and without renaming the original ``net.*`` head keys, so a wrong
file would load silently. We therefore build pyiqa's network empty (``pretrained=False``)
and load the catalogue file ``metaiqa`` (= ``Metaiqa_livec.pth``) ourselves: unwrap
``params`` / ``state_dict``, strip ``net_g.`` / ``module.``, rename ``net.`` -> ``head.`` as
pyiqa's inference path does, then load with strict key checks.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import METRICS
from ._checkpoint import describe, load_strict, read_checkpoint
from .base import check_batch
from .pyiqa_adapter import PyiqaMetric

WEIGHT_FILE = "Metaiqa_livec.pth"


def clean_metaiqa_state(ckpt: Mapping) -> dict:
    """Key clean-up of pyiqa's inference loader, applied to a MetaIQA checkpoint."""
    state = ckpt
    for key in ("params", "state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    out = {}
    for k, v in state.items():
        k = k.replace("net_g.", "").replace("module.", "")
        if k.startswith("net."):
            k = "head." + k[len("net."):]
        out[k] = v
    return out


class MetaIQA(PyiqaMetric):
    """MetaIQA (Zhu et al., CVPR 2020) via pyiqa; native resolution; range (0, 1); higher better.

    Args:
        pretrained: load the ``metaiqa`` checkpoint (default True); False gives a seeded
            random initialisation for tests.
        checkpoint: a path or dict in the ``Metaiqa_livec.pth`` layout instead of the catalogue.
        seed: seed of the random initialisation.
        resize: None (default, the MSU group's wrapper) scores the image at its own size;
            224 resizes it to 224x224 first (bilinear), as pyiqa's ``metaiqa`` does.
    """

    weights = ("metaiqa",)

    def __init__(self, *, pretrained: bool = True,
                 checkpoint: str | os.PathLike | Mapping | None = None, seed: int = 0,
                 resize: int | None = None, **kwargs: Any):
        if resize is not None and (isinstance(resize, bool) or int(resize) != resize
                                   or int(resize) < 32):
            raise ValueError(f"metaiqa resize must be None (native size) or a side >= 32, "
                             f"got {resize!r}")
        ckpt = read_checkpoint("metaiqa", checkpoint) \
            if (pretrained or checkpoint is not None) else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # pretrained=False: pyiqa builds the network without touching the internet
            super().__init__("metaiqa", name="metaiqa", pretrained=False,
                             score_range=(0.0, 1.0), **kwargs)
        self.resize = None if resize is None else int(resize)
        if ckpt is not None:
            self.load_checkpoint(ckpt, source=checkpoint)
        self.eval()
        self.requires_grad_(False)  # attacks need input gradients only

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x)
        net = self.inner.net
        if self.resize is not None:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                              align_corners=False)
        score = net.head(net.resnet_layer((x - net.mean) / net.std))
        return score.reshape(x.shape[0])

    def extra_repr(self) -> str:
        return f"resize={self.resize}, " + super().extra_repr()

    def load_checkpoint(self, checkpoint: str | os.PathLike | Mapping | None = None, *,
                        source: Any = None) -> None:
        """Load ``Metaiqa_livec.pth`` (catalogue if None, else a path or dict), strictly."""
        what = describe("MetaIQA", "metaiqa", checkpoint if source is None else source)
        state = clean_metaiqa_state(read_checkpoint("metaiqa", checkpoint))
        net = self.inner.net
        own = net.state_dict()
        # the ImageNet mean/std buffers are pyiqa's additions, not part of the released file
        for k in ("mean", "std"):
            if k not in state:
                state[k] = own[k]
        load_strict(net, state, what)
        net.to(self.device)


@METRICS.register("metaiqa", aliases=["meta-iqa", "pyiqa-metaiqa"], tags=("paper", "deep"),
                  presets={"resize224": {"resize": 224}})
def metaiqa(**kwargs: Any) -> MetaIQA:
    """MetaIQA (CVPR 2020), ResNet-18 via pyiqa at the input's resolution; higher is better."""
    return MetaIQA(**kwargs)
