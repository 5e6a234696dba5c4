"""The SPAQ baseline quality model (one of the paper's three metrics).

Fang, Zhu, Zeng, Ma & Wang, "Perceptual Quality Assessment of Smartphone Photography",
CVPR 2020 (https://github.com/h4nwei/SPAQ), checkpoint ``BL_release.pt`` (catalogue name
``spaq-baseline``): a torchvision ResNet-50 whose ``fc`` is Linear(2048, 1), stored under
``ckpt['state_dict']`` with keys ``backbone.*``. Scores are on SPAQ's MOS scale; the paper's
group normalises by the range 21.749..77.756 (their ``bounds.json``).

Pre-processing, by default as the MSU group's ``MetricModel`` (the wrapper the study's
defenses repository scores with, ``subjects/spaq/src/model.py``): no resize, no intensity
normalisation, 224x224 patches every 112 pixels plus a patch flush with the bottom / right
border when the stride does not land on it (SPAQ's ``generate_patches``), every patch scored,
the scores averaged. A 299x299 NIPS'17 image gives 4 patches. Their code breaks on images
smaller than 224; here such an image is first upscaled (bilinear, antialiased) so that its
shorter side is 224. ``resize=512`` (preset ``spaq:resize512``) resizes the shorter side to
512 first, as the same file's unused ``SPAQ`` class and our earlier default did (16 patches on
a 299 px image); the official SPAQ loader resizes only images whose sides are both >= 512.
Differentiable and batched.
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

PATCH = 224
STRIDE = 112
SHORT_SIDE = 512


def patch_starts(length: int, patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Top/left offsets of the patches along one axis: every ``stride``, plus one flush
    with the far border when the stride misses it (SPAQ's ``generate_patches``)."""
    if length < patch:
        raise ValueError(f"a side of {length} px is shorter than the {patch} px patch")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def resize_shorter_side(x: Tensor, size: int) -> Tensor:
    """Bilinear resize so the shorter side is ``size`` (long side truncated like torchvision)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h <= w:
        new = (size, int(size * w / h))
    else:
        new = (int(size * h / w), size)
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)


def extract_patches(x: Tensor, patch: int = PATCH, stride: int = STRIDE) -> Tensor:
    """``[B,C,H,W]`` -> ``[B, P, C, patch, patch]`` on SPAQ's grid (differentiable slicing)."""
    hs = patch_starts(x.shape[-2], patch, stride)
    ws = patch_starts(x.shape[-1], patch, stride)
    tiles = [x[..., i:i + patch, j:j + patch] for i in hs for j in ws]
    return torch.stack(tiles, dim=1)


class SPAQNet(nn.Module):
    """The network whose ``state_dict`` keys match ``BL_release.pt['state_dict']``."""

    def __init__(self):
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


class SPAQBaseline(IQAMetric):
    """SPAQ baseline (Fang et al., CVPR 2020), ResNet-50 on 224 patches; higher is better.

    Args:
        pretrained: load the ``spaq-baseline`` checkpoint (default True); False gives a
            seeded random initialisation for tests.
        checkpoint: a path or dict in the ``BL_release.pt`` layout instead of the catalogue.
        resize: shorter side before patching; None (default, the MSU group's wrapper) keeps
            the size (images with a side below 224 are then upscaled to 224).
        patch_batch: how many patches go through the network at once (memory bound).
        seed: seed of the random initialisation.
    """

    name = "spaq"
    lower_better = False
    #: the MSU group's bounds.json range (metrics/defences/utils/bounds.json)
    score_range = (21.749107360839844, 77.75585174560547)
    weights = ("spaq-baseline",)

    def __init__(self, *, pretrained: bool = True,
                 checkpoint: str | os.PathLike | Mapping | None = None,
                 resize: int | None = None, patch_batch: int = 64, seed: int = 0):
        super().__init__()
        if resize is not None and (isinstance(resize, bool) or int(resize) != resize
                                   or int(resize) < PATCH):
            raise ValueError(f"spaq resize must be None or a side >= {PATCH}, got {resize!r}")
        if isinstance(patch_batch, bool) or int(patch_batch) != patch_batch or patch_batch < 1:
            raise ValueError(f"spaq patch_batch must be a whole number >= 1, got {patch_batch!r}")
        ckpt = read_checkpoint("spaq-baseline", checkpoint) \
            if (pretrained or checkpoint is not None) else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = SPAQNet()
        self.resize = resize
        self.patch_batch = int(patch_batch)
        if ckpt is not None:
            self.load_checkpoint(ckpt, source=checkpoint)
        self.eval()
        self.requires_grad_(False)  # attacks need input gradients only

    def load_checkpoint(self, checkpoint: str | os.PathLike | Mapping | None = None, *,
                        source: Any = None) -> None:
        """Load ``BL_release.pt`` (catalogue if None, else a path or loaded dict), strictly."""
        what = describe("SPAQ", "spaq-baseline", checkpoint if source is None else source)
        ckpt = read_checkpoint("spaq-baseline", checkpoint)
        load_strict(self.net, require(ckpt, "state_dict", what), what)

    def prepare(self, x: Tensor) -> Tensor:
        """The resized batch the patches are cut from."""
        if self.resize is not None:
            return resize_shorter_side(x, self.resize)
        if min(x.shape[-2:]) < PATCH:
            return resize_shorter_side(x, PATCH)
        return x

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x)
        patches = extract_patches(self.prepare(x))  # [B, P, 3, 224, 224]
        b, p = patches.shape[:2]
        flat = patches.reshape(b * p, *patches.shape[2:])
        scores = torch.cat([self.net(flat[i:i + self.patch_batch])
                            for i in range(0, flat.shape[0], self.patch_batch)])
        return scores.view(b, p).mean(dim=1)

    def extra_repr(self) -> str:
        return f"resize={self.resize}, " + super().extra_repr()


@METRICS.register("spaq", aliases=["spaq-baseline", "spaq-bl"], tags=("paper", "deep"),
                  presets={"resize512": {"resize": SHORT_SIDE}})
def spaq(**kwargs: Any) -> SPAQBaseline:
    """SPAQ baseline (CVPR 2020), ResNet-50 averaged over 224 patches at stride 112; higher
    is better."""
    return SPAQBaseline(**kwargs)
