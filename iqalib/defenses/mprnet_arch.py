"""MPRNet: Zamir et al., "Multi-Stage Progressive Image Restoration", CVPR 2021 (arXiv 2102.02808).

Written for iqalib from the paper's description; the attribute names follow the official
release (swz30/MPRNet) so its checkpoints load with ``strict=True``.

Three stages: stages 1 and 2 are channel-attention U-Nets working on 4 and 2 non-overlapping
patches of the image; stage 3 (ORSNet) works at full resolution without downsampling.
Supervised attention modules (SAM) pass each stage's features on, gated by its own
intermediate image, and cross-stage feature fusion (CSFF) feeds stage-1 encoder/decoder
features into stage 2 and stage-2 features into stage 3.

Widths by task (official checkpoints): denoise 80/48/32, deblur 96/48/32, derain 40/20/16
(``n_feat`` / ``scale_unetfeats`` / ``scale_orsnetfeats``); 8 CABs per ORB, kernel 3,
channel-attention reduction 4, no conv biases, one PReLU shared by the whole network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class CALayer(nn.Module):
    """Squeeze-and-excitation channel attention: pool -> 1x1 down -> ReLU -> 1x1 up -> sigmoid."""

    def __init__(self, ch: int, reduction: int, bias: bool):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(ch, ch // reduction, 1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(ch // reduction, ch, 1, bias=bias), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: conv-act-conv, channel attention, residual."""

    def __init__(self, ch: int, k: int, reduction: int, bias: bool, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(_conv(ch, ch, k, bias), act, _conv(ch, ch, k, bias))
        self.CA = CALayer(ch, reduction, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention: predicts a stage image (residual on the input) and gates features."""

    def __init__(self, ch: int, k: int, bias: bool):
        super().__init__()
        self.conv1 = _conv(ch, ch, k, bias)
        self.conv2 = _conv(ch, 3, k, bias)
        self.conv3 = _conv(3, ch, k, bias)

    def forward(self, feat: Tensor, img: Tensor) -> tuple[Tensor, Tensor]:
        stage_img = self.conv2(feat) + img
        gate = torch.sigmoid(self.conv3(stage_img))
        return self.conv1(feat) * gate + feat, stage_img


class _Seq1(nn.Module):
    """Holds a resample conv at key ``<attr>.1`` (the official ``nn.Sequential(Upsample, Conv)``)."""

    def __init__(self, cin: int, cout: int, factor: float):
        super().__init__()
        self.factor = factor
        self.add_module("1", nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return getattr(self, "1")(x)


class DownSample(nn.Module):
    def __init__(self, ch: int, s: int):
        super().__init__()
        self.down = _Seq1(ch, ch + s, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(x)


class UpSample(nn.Module):
    def __init__(self, ch: int, s: int):
        super().__init__()
        self.up = _Seq1(ch + s, ch, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(x)


class SkipUpSample(UpSample):
    def forward(self, x: Tensor, skip: Tensor) -> Tensor:  # type: ignore[override]
        return self.up(x) + skip


def _cabs(n: int, ch: int, k: int, r: int, bias: bool, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(*[CAB(ch, k, r, bias, act) for _ in range(n)])


class Encoder(nn.Module):
    """Three-level encoder; with ``csff`` it adds the previous stage's encoder/decoder features."""

    def __init__(self, n_feat, k, r, act, bias, s, csff):
        super().__init__()
        widths = (n_feat, n_feat + s, n_feat + 2 * s)
        for i, w in enumerate(widths, 1):
            setattr(self, f"encoder_level{i}", _cabs(2, w, k, r, bias, act))
        self.down12 = DownSample(widths[0], s)
        self.down23 = DownSample(widths[1], s)
        self.csff = csff
        if csff:
            for i, w in enumerate(widths, 1):
                setattr(self, f"csff_enc{i}", nn.Conv2d(w, w, 1, bias=bias))
                setattr(self, f"csff_dec{i}", nn.Conv2d(w, w, 1, bias=bias))

    def _fuse(self, i, x, enc, dec):
        if enc is None or dec is None:
            return x
        return x + getattr(self, f"csff_enc{i}")(enc[i - 1]) + getattr(self, f"csff_dec{i}")(dec[i - 1])

    def forward(self, x, enc=None, dec=None):
        e1 = self._fuse(1, self.encoder_level1(x), enc, dec)
        e2 = self._fuse(2, self.encoder_level2(self.down12(e1)), enc, dec)
        e3 = self._fuse(3, self.encoder_level3(self.down23(e2)), enc, dec)
        return [e1, e2, e3]


class Decoder(nn.Module):
    """Three-level decoder with channel-attended skip connections."""

    def __init__(self, n_feat, k, r, act, bias, s):
        super().__init__()
        widths = (n_feat, n_feat + s, n_feat + 2 * s)
        for i, w in enumerate(widths, 1):
            setattr(self, f"decoder_level{i}", _cabs(2, w, k, r, bias, act))
        self.skip_attn1 = CAB(widths[0], k, r, bias, act)
        self.skip_attn2 = CAB(widths[1], k, r, bias, act)
        self.up21 = SkipUpSample(widths[0], s)
        self.up32 = SkipUpSample(widths[1], s)

    def forward(self, feats):
        e1, e2, e3 = feats
        d3 = self.decoder_level3(e3)
        d2 = self.decoder_level2(self.up32(d3, self.skip_attn2(e2)))
        d1 = self.decoder_level1(self.up21(d2, self.skip_attn1(e1)))
        return [d1, d2, d3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a conv, residual."""

    def __init__(self, ch, k, r, act, bias, num_cab):
        super().__init__()
        # the closing conv has no bias in the official model whatever ``bias`` says
        self.body = nn.Sequential(*[CAB(ch, k, r, bias, act) for _ in range(num_cab)],
                                  _conv(ch, ch, k, False))

    def forward(self, x):
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage 3: three ORBs at full resolution, each fed stage-2 features upsampled to full size."""

    def __init__(self, n_feat, s_ors, k, r, act, bias, s_unet, num_cab):
        super().__init__()
        w = n_feat + s_ors
        self.orb1 = ORB(w, k, r, act, bias, num_cab)
        self.orb2 = ORB(w, k, r, act, bias, num_cab)
        self.orb3 = ORB(w, k, r, act, bias, num_cab)
        self.up_enc1 = UpSample(n_feat, s_unet)
        self.up_dec1 = UpSample(n_feat, s_unet)
        self.up_enc2 = nn.Sequential(UpSample(n_feat + s_unet, s_unet), UpSample(n_feat, s_unet))
        self.up_dec2 = nn.Sequential(UpSample(n_feat + s_unet, s_unet), UpSample(n_feat, s_unet))
        for i in (1, 2, 3):
            setattr(self, f"conv_enc{i}", nn.Conv2d(n_feat, w, 1, bias=bias))
            setattr(self, f"conv_dec{i}", nn.Conv2d(n_feat, w, 1, bias=bias))

    def forward(self, x, enc, dec):
        x = self.orb1(x) + self.conv_enc1(enc[0]) + self.conv_dec1(dec[0])
        x = self.orb2(x) + self.conv_enc2(self.up_enc1(enc[1])) + self.conv_dec2(self.up_dec1(dec[1]))
        x = self.orb3(x) + self.conv_enc3(self.up_enc2(enc[2])) + self.conv_dec3(self.up_dec2(dec[2]))
        return x


class MPRNet(nn.Module):
    """The full three-stage network. ``forward`` returns ``[stage3, stage2, stage1]`` images;
    the restored image is item 0. Input height and width must be multiples of 8 (callers pad)."""

    def __init__(self, in_c=3, out_c=3, n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32,
                 num_cab=8, kernel_size=3, reduction=4, bias=False):
        super().__init__()
        k, r, s = kernel_size, reduction, scale_unetfeats
        # a single PReLU instance is shared by every CAB, as in the official model: its one
        # slope is saved under every CAB's key and all copies must hold the same value
        act = nn.PReLU()
        for i in (1, 2, 3):
            setattr(self, f"shallow_feat{i}",
                    nn.Sequential(_conv(in_c, n_feat, k, bias), CAB(n_feat, k, r, bias, act)))
        self.stage1_encoder = Encoder(n_feat, k, r, act, bias, s, csff=False)
        self.stage1_decoder = Decoder(n_feat, k, r, act, bias, s)
        self.stage2_encoder = Encoder(n_feat, k, r, act, bias, s, csff=True)
        self.stage2_decoder = Decoder(n_feat, k, r, act, bias, s)
        self.stage3_orsnet = ORSNet(n_feat, scale_orsnetfeats, k, r, act, bias, s, num_cab)
        self.sam12 = SAM(n_feat, 1, bias)
        self.sam23 = SAM(n_feat, 1, bias)
        self.concat12 = _conv(2 * n_feat, n_feat, k, bias)
        self.concat23 = _conv(2 * n_feat, n_feat + scale_orsnetfeats, k, bias)
        self.tail = _conv(n_feat + scale_orsnetfeats, out_c, k, bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        h, w = x.shape[-2:]
        hh, hw = h // 2, w // 2
        top, bot = x[..., :hh, :], x[..., hh:, :]
        quads = [top[..., :hw], top[..., hw:], bot[..., :hw], bot[..., hw:]]

        # stage 1: four quarter patches share one encoder; left/right halves are re-joined
        enc1 = [self.stage1_encoder(self.shallow_feat1(q)) for q in quads]
        f1_top = [torch.cat(p, 3) for p in zip(enc1[0], enc1[1])]
        f1_bot = [torch.cat(p, 3) for p in zip(enc1[2], enc1[3])]
        r1_top, r1_bot = self.stage1_decoder(f1_top), self.stage1_decoder(f1_bot)
        sam_top, img1_top = self.sam12(r1_top[0], top)
        sam_bot, img1_bot = self.sam12(r1_bot[0], bot)
        img1 = torch.cat([img1_top, img1_bot], 2)

        # stage 2: two half patches, fused with stage-1 features (CSFF)
        x2_top = self.concat12(torch.cat([self.shallow_feat2(top), sam_top], 1))
        x2_bot = self.concat12(torch.cat([self.shallow_feat2(bot), sam_bot], 1))
        f2 = [torch.cat(p, 2) for p in zip(self.stage2_encoder(x2_top, f1_top, r1_top),
                                            self.stage2_encoder(x2_bot, f1_bot, r1_bot))]
        r2 = self.stage2_decoder(f2)
        sam3, img2 = self.sam23(r2[0], x)

        # stage 3: full resolution
        x3 = self.concat23(torch.cat([self.shallow_feat3(x), sam3], 1))
        x3 = self.stage3_orsnet(x3, f2, r2)
        return [self.tail(x3) + x, img2, img1]


#: (n_feat, scale_unetfeats, scale_orsnetfeats) of the official checkpoints
MPRNET_WIDTHS = {"denoise": (80, 48, 32), "deblur": (96, 48, 32), "derain": (40, 20, 16)}


def build_mprnet(task: str = "denoise") -> MPRNet:
    if task not in MPRNET_WIDTHS:
        raise ValueError(f"MPRNet task must be one of {sorted(MPRNET_WIDTHS)}, got {task!r}")
    n, s, o = MPRNET_WIDTHS[task]
    return MPRNet(n_feat=n, scale_unetfeats=s, scale_orsnetfeats=o)
