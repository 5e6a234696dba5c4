"""Synthetic distortions at five severity levels, for training and sanity-checking IQA metrics.

Every distortion maps a batch ``[B,3,H,W]`` RGB in [0,1] to a batch of the same shape, in
[0,1], at an integer ``level`` in 1..5 (1 = barely visible, 5 = severe; ``level=0`` returns
the input unchanged). The level tables follow the spirit of the TID2013 / KADID-10k
distortion sets (Ponomarenko et al. 2015; Lin et al. 2019): five roughly perceptually
spaced steps per type. Random distortions take a ``seed`` and are deterministic under it.

>>> from iqalib.distortions import distort, list_distortions
>>> y = distort(x, "blur", 3)                       # Gaussian blur, sigma 1.5 px
>>> y = distort(x, "noise", 2, seed=1)              # white Gaussian noise, sigma 0.03
"""
from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UnknownNameError

#: severity tables, index 0 = level 1 (units in each function's docstring)
LEVELS: dict[str, tuple[float, ...]] = {
    "noise": (0.012, 0.025, 0.045, 0.075, 0.12),        # std of white noise, [0,1] units
    "blur": (0.6, 1.0, 1.6, 2.5, 4.0),                 # Gaussian sigma, pixels
    "jpeg": (60, 35, 20, 10, 5),                         # PIL JPEG quality
    "contrast": (0.8, 0.65, 0.5, 0.35, 0.22),           # contrast factor (1 = unchanged)
    "saturation": (0.6, 0.4, 0.2, 0.08, 0.0),           # saturation factor (0 = greyscale)
    "pixelate": (2.0, 3.0, 4.0, 6.0, 8.0),              # down-sampling factor (box down, nearest up)
    "brightness": (0.85, 0.72, 0.6, 0.48, 0.36),        # brightness factor (darkening)
}


def _check(x: Tensor, level: int, kind: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"distortion {kind!r} needs a [B,3,H,W] batch, got {tuple(x.shape)}")
    if not 0 <= int(level) <= 5:
        raise ValueError(f"level must be an integer in 0..5, got {level}")


def gaussian_noise(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Additive white Gaussian noise, std ``LEVELS['noise']`` in [0,1] units, then clipped."""
    sigma = LEVELS["noise"][level - 1]
    # a CPU generator makes the noise identical on every device for a given seed
    g = torch.Generator().manual_seed(int(seed))
    n = torch.randn(x.shape, generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return (x + sigma * n).clamp(0, 1)


def gaussian_blur(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Gaussian blur (kornia), sigma ``LEVELS['blur']`` pixels, kernel 2*ceil(3 sigma)+1, reflect."""
    import kornia

    sigma = float(LEVELS["blur"][level - 1])
    k = 2 * int(np.ceil(3 * sigma)) + 1
    # the kernel may not exceed the image for reflect padding
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    return kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="reflect")


def jpeg(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """A real JPEG round trip through PIL's libjpeg at quality ``LEVELS['jpeg']`` (4:2:0).

    Not differentiable (it is a codec); used to make training data and for sanity checks.
    """
    from PIL import Image

    q = int(LEVELS["jpeg"][level - 1])
    arr = (x.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
    return y.to(device=x.device, dtype=x.dtype)


def contrast(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Contrast reduction towards the mean grey level (torchvision ``adjust_contrast``)."""
    from torchvision.transforms.functional import adjust_contrast

    return adjust_contrast(x, LEVELS["contrast"][level - 1]).clamp(0, 1)


def saturation(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Colour desaturation towards the luma image (torchvision ``adjust_saturation``)."""
    from torchvision.transforms.functional import adjust_saturation

    return adjust_saturation(x, LEVELS["saturation"][level - 1]).clamp(0, 1)


def pixelate(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Pixelation: area down-sampling by ``LEVELS['pixelate']`` then nearest up-sampling."""
    f = LEVELS["pixelate"][level - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h / f)), max(1, round(w / f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def brightness(x: Tensor, level: int, *, seed: int = 0) -> Tensor:
    """Darkening: multiply by ``LEVELS['brightness']`` (torchvision ``adjust_brightness``)."""
    from torchvision.transforms.functional import adjust_brightness

    return adjust_brightness(x, LEVELS["brightness"][level - 1]).clamp(0, 1)


DISTORTIONS: dict[str, Callable[..., Tensor]] = {
    "noise": gaussian_noise,
    "blur": gaussian_blur,
    "jpeg": jpeg,
    "contrast": contrast,
    "saturation": saturation,
    "pixelate": pixelate,
    "brightness": brightness,
}


def list_distortions() -> list[str]:
    """Names accepted by :func:`distort`."""
    return list(DISTORTIONS)


def distort(x: Tensor, kind: str, level: int, *, seed: int = 0) -> Tensor:
    """Apply distortion ``kind`` at ``level`` (0..5; 0 = identity) to a batch in [0,1]."""
    if kind not in DISTORTIONS:
        import difflib

        close = difflib.get_close_matches(kind, list(DISTORTIONS), n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown distortion {kind!r}.{hint} Known: {', '.join(DISTORTIONS)}.")
    _check(x, level, kind)
    if int(level) == 0:
        return x.clone()
    return DISTORTIONS[kind](x, int(level), seed=seed)
