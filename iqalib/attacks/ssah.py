"""SSAH: a semantic attack that keeps the image's low-frequency content."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, adam_image_loop, check_count, check_nonnegative, check_positive


def _haar_ll_kernel(x: Tensor) -> Tensor:
    # the orthonormal Haar low-pass in 2-D: (1/sqrt2)^2 on each of the 4 pixels of a block
    return torch.full((3, 1, 2, 2), 0.5, dtype=x.dtype, device=x.device)


def haar_dwt_ll(x: Tensor) -> Tensor:
    """One-level 2-D Haar DWT, low-frequency band only: ``[B,3,H,W] -> [B,3,ceil(H/2),ceil(W/2)]``.

    Odd sizes are padded by replicating the last row / column (SSAH's ``odd="replicate"``;
    by default SSAH zero-pads the image itself first, so the transform sees even sizes).
    """
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.conv2d(x, _haar_ll_kernel(x), stride=2, groups=3)


def haar_idwt_ll(ll: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse one-level Haar DWT of the low band alone (high bands zero), cropped to ``size``."""
    out = F.conv_transpose2d(ll, _haar_ll_kernel(ll), stride=2, groups=3)
    return out[..., :size[0], :size[1]]


def low_frequency(x: Tensor) -> Tensor:
    """The image's Haar low-frequency component at full size (each 2x2 block's mean)."""
    return haar_idwt_ll(haar_dwt_ll(x), x.shape[-2:])


#: how SSAH treats an odd height / width (see :class:`SSAH`)
ODD_SIZES = ("zero-pad", "replicate")


@ATTACKS.register("ssah", tags=("gradient",), presets={"replicate": {"odd": "replicate"}})
class SSAH(Attack):
    """SSAH (Luo et al., "Frequency-driven imperceptible adversarial attack on semantic
    similarity", CVPR 2022), as the MSU group adapts it to IQA metrics.

    Adam on the image (``lr=0.001``, ``steps=10``) minimising
    ``score_loss + lambda_lf * SmoothL1_sum(LL(x'), LL(x))`` per image, where ``LL`` is the
    one-level Haar low-frequency reconstruction (``lambda_lf=0.1``): the perturbation is
    pushed into high frequencies, where it is less visible.

    Odd sizes (the NIPS'17 images are 299x299): ``odd="zero-pad"`` (default) is the MSU
    code's: the image gets a black last row / column, the whole attack (metric included) runs
    on the padded image, and the pad is cut off at the end. ``odd="replicate"`` (preset
    ``ssah:replicate``) attacks the image at its own size and pads only inside the wavelet
    transform, by repeating the last row / column, so the metric never sees a black line.
    """

    name = "ssah"
    has_eps = False

    def __init__(self, metric, *, lr: float = 0.001, steps: int = 10, lambda_lf: float = 0.1,
                 odd: str = "zero-pad", seed: int = 0):
        check_positive(lr, "ssah lr")
        check_count(steps, "ssah steps")
        check_nonnegative(lambda_lf, "ssah lambda_lf")
        if odd not in ODD_SIZES:
            raise ValueError(f"ssah odd must be one of {ODD_SIZES}, got {odd!r}")
        super().__init__(metric, lr=float(lr), steps=int(steps), lambda_lf=float(lambda_lf),
                         odd=odd, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self.odd == "zero-pad":
            x = F.pad(x, (0, w % 2, 0, h % 2))  # zeros: the MSU code's black row / column
        x_ll = low_frequency(x)

        def loss(xa: Tensor) -> Tensor:
            lf = F.smooth_l1_loss(low_frequency(xa), x_ll, reduction="none").sum(dim=(1, 2, 3))
            return self.score_loss(xa) + self.lambda_lf * lf

        return adam_image_loop(x, loss, lr=self.lr, steps=self.steps)[..., :h, :w]
