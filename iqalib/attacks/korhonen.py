"""Korhonen & You's attack: Adam on the image, gradient weighted by a spatial-activity map."""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, adam_image_loop, check_count, check_positive

# The 5x5 structuring element of the benchmark: a disc (a square without its corners)
_DISC5 = torch.tensor([[0, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [0, 1, 1, 1, 0]], dtype=torch.float32)

# scipy.ndimage.sobel's default (axis=-1): the derivative [-1, 0, 1] across columns, smoothed
# [1, 2, 1] down rows; conv2d correlates, as scipy does
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])

#: the spatial-activity maps :func:`spatial_activity_map` offers
MASKS = ("benchmark", "magnitude")


def spatial_activity_map(x: Tensor, kind: str = "benchmark") -> Tensor:
    """Per-image mask ``[B,1,H,W]``: a Sobel response of the luma, zeroed on the one-pixel
    border, divided by its per-image maximum, dilated with a 5x5 disc (cv2.dilate / kornia).

    ``kind="benchmark"`` (default) is the MSU group's ``makeSpatialActivityMap``: scipy's
    ``ndimage.sobel`` with its default axis, i.e. the *signed horizontal* derivative only,
    divided by the map's (signed) maximum, then by 255 after the dilation. Negative entries
    stay negative, so there the mask reverses the gradient. ``kind="magnitude"`` is the
    gradient magnitude of both Sobel directions that Korhonen & You describe, in [0, 1].
    A map whose maximum is 0 (a flat image) becomes all ones (before the 1/255), the
    benchmark's rule, so the attack still runs on it.
    """
    if kind not in MASKS:
        raise ValueError(f"korhonen mask must be one of {MASKS}, got {kind!r}")
    # the luma of BT.601 (cv2's RGB2YCrCb on floats; its offsets and scale cancel below)
    y = kornia.color.rgb_to_ycbcr(x)[:, :1]
    if kind == "benchmark":
        sob = F.conv2d(y, _SOBEL_X.to(y).reshape(1, 1, 3, 3))
    else:
        g = kornia.filters.spatial_gradient(y, mode="sobel", normalized=True)
        # the exact magnitude (kornia's `sobel` adds an eps inside the sqrt for its gradient)
        sob = g.pow(2).sum(dim=2).sqrt()[..., 1:-1, 1:-1]
    # the border has no full 3x3 neighbourhood: the benchmark zeroes it
    sob = F.pad(sob, (1, 1, 1, 1))
    peak = sob.amax(dim=(1, 2, 3), keepdim=True)
    flat = peak == 0
    sob = torch.where(flat, torch.ones_like(sob), sob / torch.where(flat, 1.0, peak))
    out = kornia.morphology.dilation(sob, _DISC5.to(x))
    return out / 255 if kind == "benchmark" else out


@ATTACKS.register("korhonen", aliases=["korhonen-et-al", "korhonen-you"], tags=("gradient",),
                  presets={"magnitude": {"mask": "magnitude"}})
class Korhonen(Attack):
    """Korhonen & You, "Adversarial attacks against blind image quality assessment models",
    QoEVMA 2022, as the MSU benchmark runs it.

    Adam on the image (``lr=0.005``, ``steps=10``) with the gradient multiplied by a
    spatial-activity map of the clean image (:func:`spatial_activity_map`). ``mask="benchmark"``
    (default) is the benchmark's map: signed horizontal Sobel of the luma, normalised by its
    maximum, dilated 5x5, divided by 255; the 1/255 matters, because it brings the gradient
    near Adam's eps (1e-8), where Adam's step shrinks. ``mask="magnitude"`` (preset
    ``korhonen:magnitude``) is the Sobel magnitude the paper describes. Unrestricted in L-inf;
    Adam bounds each pixel's drift by about ``lr * steps``.
    """

    name = "korhonen"
    has_eps = False

    def __init__(self, metric, *, lr: float = 0.005, steps: int = 10, mask: str = "benchmark",
                 seed: int = 0):
        check_positive(lr, "korhonen lr")
        check_count(steps, "korhonen steps")
        if mask not in MASKS:
            raise ValueError(f"korhonen mask must be one of {MASKS}, got {mask!r}")
        super().__init__(metric, lr=float(lr), steps=int(steps), mask=mask, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        mask = spatial_activity_map(x, self.mask)
        return adam_image_loop(x, self.score_loss, lr=self.lr, steps=self.steps, grad_mask=mask)
