"""JPEG compression purifiers: the real codec and a differentiable approximation.

JPEG as an adversarial defense: Dziugaite et al., "A study of the effect of JPG compression on
adversarial images" (2016); Guo et al. (ICLR 2018). The study (arXiv 2404.06957) uses quality 50
and sweeps 10 ... 100. The differentiable codec is Reich et al., "Differentiable JPEG: the devil
is in the details" (WACV 2024), as implemented by kornia.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import DEFENSES
from .base import Defense

_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def _check_quality(q) -> int:
    if isinstance(q, bool) or int(q) != q or not 1 <= int(q) <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {q!r}")
    return int(q)


#: how [0,1] floats become the codec's 8-bit input
ROUNDINGS = ("truncate", "round")


def to_uint8(x: Tensor, rounding: str = "truncate") -> Tensor:
    """[0,1] float -> uint8. ``"truncate"`` is the MSU group's ``(x * 255).type(torch.uint8)``
    (images already on the 8-bit grid come back unchanged; anything between two levels goes
    down, half a level darker on average); ``"round"`` is what PIL and
    ``torchvision.utils.save_image`` do."""
    v = x.detach().clamp(0, 1) * 255
    return (v if rounding == "truncate" else v.round()).to(torch.uint8)


@DEFENSES.register("jpeg", presets={**{f"q{q}": {"quality": q} for q in _QUALITIES},
                                    "round": {"rounding": "round"}},
                   tags=("transform", "compression"))
class JPEG(Defense):
    """Real JPEG encode + decode at ``quality`` (default 50; presets q10 ... q100).

    libjpeg through ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` on 8-bit images, as the
    MSU group's code (baseline, 4:2:0 chroma subsampling, libjpeg's standard tables scaled by
    quality: what PIL's ``Image.save(format="JPEG", quality=q)`` writes). The float image
    becomes 8-bit by truncation, as theirs (``rounding="truncate"``; ``"round"``, preset
    ``jpeg:round``, rounds to nearest). The codec runs on the CPU; the result returns to the
    input's device.

    Not differentiable (rounding and quantisation): adaptive attacks need BPDA or ``jpeg-diff``.
    """

    name = "jpeg"
    differentiable = False

    def __init__(self, *, quality: int = 50, rounding: str = "truncate", seed: int = 0):
        if rounding not in ROUNDINGS:
            raise ValueError(f"jpeg rounding must be one of {ROUNDINGS}, got {rounding!r}")
        super().__init__(seed=seed, quality=_check_quality(quality), rounding=rounding)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        # imported here: torchvision costs about 2 s at `import iqalib` (it pulls in
        # torch._dynamo), and processes that never purify with JPEG do not need it
        from torchvision.io import decode_jpeg, encode_jpeg

        imgs = list(to_uint8(x, self.rounding).cpu())
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
