"""JPEG compression purifiers: the real codec and a differentiable approximation.

JPEG as an adversarial defense: Dziugaite et al., "A study of the effect of JPG compression on
adversarial images" (2016); Guo et al. (ICLR 2018). The study (arXiv 2404.06957) uses quality 50
and sweeps 10 ... 100. The differentiable codec is Reich et al., "Differentiable JPEG: the devil
is in the details" (WACV 2024), as implemented by kornia.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from ..registry import DEFENSES
from .base import Defense

_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def _check_quality(q) -> int:
    q = int(q)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {q}")
    return q


def to_uint8(x: Tensor) -> Tensor:
    """[0,1] float -> uint8 by rounding (the MSU group's code truncates with ``.type(uint8)``,
    which darkens every image by half a grey level on average; rounding is what PIL and
    ``torchvision.utils.save_image`` do)."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)


@DEFENSES.register("jpeg", presets={f"q{q}": {"quality": q} for q in _QUALITIES},
                   tags=("transform", "compression"))
class JPEG(Defense):
    """Real JPEG encode + decode at ``quality`` (default 50; presets q10 ... q100).

    libjpeg through ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` on 8-bit images
    (baseline, 4:2:0 chroma subsampling, libjpeg's standard tables scaled by quality: what PIL's
    ``Image.save(format="JPEG", quality=q)`` writes). Images are rounded to uint8 first. The
    codec runs on the CPU; the result returns to the input's device.

    Not differentiable (rounding and quantisation): adaptive attacks need BPDA or ``jpeg-diff``.
    """

    name = "jpeg"
    differentiable = False

    def __init__(self, *, quality: int = 50, seed: int = 0):
        super().__init__(seed=seed, quality=_check_quality(quality))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        imgs = list(to_uint8(x).cpu())
        decoded = decode_jpeg(encode_jpeg(imgs, quality=self.quality))
        out = torch.stack(decoded).to(device=x.device)
        return out.to(x.dtype) / 255.0


@DEFENSES.register("jpeg-diff", aliases=["diffjpeg", "jpeg-differentiable"],
                   presets={f"q{q}": {"quality": q} for q in _QUALITIES},
                   tags=("transform", "compression"))
class JPEGDiff(Defense):
    """Differentiable JPEG (kornia ``jpeg_codec_differentiable``) at ``quality`` (default 50).

    Rounding is replaced by a smooth approximation, so gradients flow; outputs are close to,
    not equal to, the real codec's (see tests). Use it as the attacker's surrogate for ``jpeg``
    or as a purifier of its own (the MSU group's ``diffjpeg``).
    """

    name = "jpeg-diff"

    def __init__(self, *, quality: int = 50, seed: int = 0):
        super().__init__(seed=seed, quality=_check_quality(quality))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        from kornia.enhance import jpeg_codec_differentiable

        q = torch.full((x.shape[0],), float(self.quality), device=x.device, dtype=x.dtype)
        return jpeg_codec_differentiable(x, q).clamp(0, 1)
