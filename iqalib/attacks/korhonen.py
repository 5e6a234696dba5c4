"""Korhonen & You's attack: Adam on the image, gradient confined to textured regions."""
from __future__ import annotations

import kornia
import torch
from torch import Tensor

from ..registry import ATTACKS
from .base import Attack, adam_image_loop

# The 5x5 structuring element of the benchmark: a disc (a square without its corners)
_DISC5 = torch.tensor([[0, 1, 1, 1, 0],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [1, 1, 1, 1, 1],
                       [0, 1, 1, 1, 0]], dtype=torch.float32)


def spatial_activity_map(x: Tensor) -> Tensor:
    """Per-image mask ``[B,1,H,W]`` in [0,1]: Sobel magnitude of the luma, zeroed on the
    one-pixel border, divided by its per-image maximum, dilated with a 5x5 disc.

    Perturbations hidden in textured regions are less visible (contrast masking), which is
    why Korhonen & You confine the gradient to them. A flat image gets an all-ones mask
    (the benchmark's rule), so the attack still runs on it.
    """
    y = kornia.color.rgb_to_ycbcr(x)[:, :1]
    # kornia's `sobel` adds an eps inside the sqrt (for its gradient); the mask needs no
    # gradient, so take the exact magnitude of the two Sobel responses
    g = kornia.filters.spatial_gradient(y, mode="sobel", normalized=True)
    sob = g.pow(2).sum(dim=2).sqrt()
    # the border has no full 3x3 neighbourhood: the benchmark zeroes it
    sob = torch.nn.functional.pad(sob[..., 1:-1, 1:-1], (1, 1, 1, 1))
    peak = sob.amax(dim=(1, 2, 3), keepdim=True)
    flat = peak <= 0
    sob = torch.where(flat, torch.ones_like(sob), sob / torch.where(flat, 1.0, peak))
    return kornia.morphology.dilation(sob, _DISC5.to(x))


@ATTACKS.register("korhonen", aliases=["korhonen-et-al", "korhonen-you"], tags=("gradient",))
class Korhonen(Attack):
    """Korhonen & You, "Adversarial attacks against blind image quality assessment models",
    QoEVMA 2022 (as run by the MSU benchmark).

    Adam on the image (``lr=0.005``, ``steps=10``) with the gradient multiplied by a
    spatial-activity map (Sobel magnitude of the luma, normalised, dilated 5x5; kornia).
    Unrestricted in L-inf; Adam bounds each pixel's drift by about ``lr * steps``.

    The benchmark computes the map with a horizontal-only signed Sobel (scipy's default
    axis) and divides it by 255; we use the gradient magnitude the paper describes, and the
    division is immaterial because Adam's steps are invariant to a constant gradient scale.
    """

    name = "korhonen"
    has_eps = False

    def __init__(self, metric, *, lr: float = 0.005, steps: int = 10, seed: int = 0):
        super().__init__(metric, lr=lr, steps=steps, seed=seed)

    def perturb(self, x: Tensor) -> Tensor:
        mask = spatial_activity_map(x)
        return adam_image_loop(x, self.score_loss, lr=self.lr, steps=self.steps, grad_mask=mask)
