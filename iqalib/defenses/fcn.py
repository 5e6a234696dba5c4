"""The FCN filter: the study's trained purifier against colour-filter attacks (AdvCF).

Gushchin et al., "Adversarial purification for no-reference image-quality metrics:
applicability study and new methods" (arXiv 2404.06957): a three-layer fully convolutional
network trained with MSE to map AdvCF-attacked images back to their clean versions; the paper's
best purifier against AdvCF. Architecture (the authors' ``FCN(3, 3, 64, norm_type='instance')``
in wianluna/adversarial_purification, ``defenses/conv_filter/fcn.py``): Conv3x3 3->64,
LeakyReLU 0.2, Conv3x3 64->16, InstanceNorm (no affine), LeakyReLU 0.2, Conv3x3 16->3, tanh;
the purifier clamps to [0, 1] as their ``FCNDefense`` does.

This module holds the model and the purifier. Training (the authors' recipe for the paper
profile, and the recipe of the shipped offline filter) lives in
:mod:`iqalib.training.fcn_filter`; ``python -m iqalib.training.fcn_filter`` retrains the
shipped file ``iqalib/assets/fcn_filter.pt``, whose ``meta`` says what trained it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..download import sha256_file
from ..errors import MissingWeightsError
from ..paths import assets_dir
from ..registry import DEFENSES
from .base import NetworkDefense, frozen

DEFAULT_ASSET = "fcn_filter.pt"
#: the ``meta`` entries of a checkpoint that describe where the filter came from; they go into
#: the purifier's hyperparameters, hence into every results row's ``defense_params``
PROVENANCE_KEYS = ("recipe", "metric", "attack", "dataset", "split", "n_train", "n_val",
                   "train_ids_sha256", "epoch", "val_ssim", "val_ssim_attacked")


class FCNFilter(nn.Module):
    """The three-conv filter. Parameter names (``conv1``/``conv2``/``conv3``) match the authors'
    checkpoints (``best_fcn.pth``: ``{"model": state_dict, "epoch": n}``), which load as is."""

    def __init__(self, hidden: int = 64, bottleneck: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, bottleneck, 3, padding=1)
        # InstanceNorm without affine parameters: per-image feature statistics are removed,
        # which is what lets the filter undo a global colour curve whatever its strength
        self.norm = nn.InstanceNorm2d(bottleneck)
        self.conv3 = nn.Conv2d(bottleneck, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.norm(self.conv2(h)), 0.2)
        return torch.tanh(self.conv3(h))


def state_sha256(state: dict[str, Tensor]) -> str:
    """sha256 of a state dict's tensors (names, shapes, float32 bytes), for in-memory filters."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_fcn_state(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from one of our files or an authors' ``best_fcn.pth``
    (``weights_only=True``: plain tensors and primitive types only)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"FCN filter weights not found at {path}. The package ships "
            f"iqalib/assets/{DEFAULT_ASSET}; train one with notebooks/06_fcn_filter.ipynb or "
            "`python -m iqalib.training.fcn_filter`.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    meta = dict(ckpt.get("meta", {})) if isinstance(ckpt, dict) else {}
    if isinstance(ckpt, dict) and "epoch" in ckpt:
        meta.setdefault("epoch", ckpt["epoch"])
    return state, meta


def provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's ``meta`` that identifies what trained it
    (:data:`PROVENANCE_KEYS`; floats rounded to 4 digits)."""
    out = {}
    for k in PROVENANCE_KEYS:
        if k in meta:
            v = meta[k]
            out[k] = round(float(v), 4) if isinstance(v, float) else v
    return out


@DEFENSES.register("fcn-filter", aliases=["fcn", "conv-filter"], tags=("trained", "network"))
class FCNFilterDefense(NetworkDefense):
    """The trained FCN filter as a purifier (arXiv 2404.06957; the paper's best against AdvCF).

    Keywords: ``weights`` (path of a checkpoint: ours or an authors' ``best_fcn.pth``; default
    the shipped ``iqalib/assets/fcn_filter.pt``), ``pretrained`` (False: random init, for
    tests). The shipped filter was trained offline against AdvCF on ``effnet-iqa``
    (``self.meta`` and README, "Assets"); the paper profile trains its own (notebook 06).

    Provenance: the hyperparameters (``hparams``, the results table's ``defense_params``)
    hold the weights file's name and sha256 and what trained it (metric, attack, data set,
    split, epoch, held-out SSIM), so rows of different filters never mix and the grid's
    cache keys differ. Deterministic, differentiable, same size out as in.
    """

    name = "fcn-filter"

    def __init__(self, *, weights: str | Path | None = None, pretrained: bool = True,
                 seed: int = 0, model: FCNFilter | None = None, meta: dict | None = None):
        self.meta: dict = dict(meta or {})
        if model is not None:  # a filter trained in this session (iqalib.training.fcn_filter)
            net = model
            label, digest = "<in memory>", {"state_sha256": state_sha256(model.state_dict())}
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = FCNFilter()
            label, digest = None, {}
            if pretrained:
                path = Path(weights) if weights else assets_dir() / DEFAULT_ASSET
                state, self.meta = load_fcn_state(path)
                net.load_state_dict(state, strict=True)
                label, digest = path.name, {"sha256": sha256_file(path)}
        # the file's name, not its folder: rows stay free of machine paths; the hash identifies it
        super().__init__(seed=seed, weights=label, pretrained=bool(pretrained or model is not None),
                         **digest, trained=provenance(self.meta))
        self.net = frozen(net)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return self.net(self._run(x)).clamp(0, 1).to(x.dtype)


__all__ = ["DEFAULT_ASSET", "FCNFilter", "FCNFilterDefense", "load_fcn_state",
           "provenance", "state_sha256"]
