"""SRVGGNetCompact, the small Real-ESRGAN generator behind ``realesr-general-x4v3``.

Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic
Data", ICCVW 2021 (xinntao/Real-ESRGAN, BSD-3-Clause). Written for iqalib from the
architecture's description; attribute names (``body.{i}``) follow the release so its
checkpoints load with ``strict=True``.

A plain VGG-style stack at low resolution: conv 3->F, PReLU(F), then ``num_conv`` x
(conv F->F, PReLU(F)), then conv F->3*s^2 and a pixel shuffle to the x``s`` grid. The network
predicts a residual over the nearest-neighbour upsampled input.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SRVGGNetCompact(nn.Module):
    """Defaults are ``realesr-general-x4v3``'s: 64 features, 32 body convs, x4, PReLU."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 32, upscale: int = 4):
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
                                   nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale ** 2, 3, padding=1))
        self.body = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.upscale)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def interpolate_states(a: dict, b: dict, weight_a: float) -> dict:
    """Deep network interpolation (Wang et al., "Deep network interpolation for continuous
    imagery effect transition", CVPR 2019): every tensor ``w*a + (1-w)*b``. Real-ESRGAN's
    denoise strength s uses ``a = x4v3``, ``b = wdn-x4v3``, ``w = s``."""
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))[:5]
        raise ValueError(f"cannot interpolate checkpoints with different keys, e.g. {missing}")
    return {k: weight_a * a[k] + (1.0 - weight_a) * b[k] for k in a}
