"""The guided-diffusion -> diffusers UNet2DModel conversion, checked against a tiny ADM.

The reference below is a small model written in the guided-diffusion (ADM) layout, with the
released checkpoint's key names (input_blocks / middle_block / output_blocks / time_embed /
out; in_layers / emb_layers / out_layers / skip_connection; norm / qkv / proj_out), up/down
resblocks (resblock_updown) and the legacy per-head QKV order. It is random-initialised
(including the layers ADM zero-initialises) so that every weight matters; the converted
diffusers UNet must compute the same function.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iqalib.defenses.guided_unet import (
    GuidedConfig,
    build_unet,
    convert_guided_diffusion,
    load_guided_unet,
    unet_kwargs,
)

TINY = GuidedConfig(image_size=16, in_channels=3, model_channels=32, out_channels=6,
                    num_res_blocks=1, attention_resolutions=(8, 4), channel_mult=(1, 2, 2),
                    num_head_channels=16)


# ---- a tiny ADM, written from the architecture description (Dhariwal & Nichol 2021) ----------
def adm_timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, *, up=False, down=False):
        super().__init__()
        self.up, self.down = up, down
        self.in_layers = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2, 2) if self.down else x

    def forward(self, x, emb):
        h = self.in_layers[:-1](x)
        h, x = self.resample(h), self.resample(x)
        h = self.in_layers[-1](h)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention with the legacy QKV layout: per head, rows [q_h, k_h, v_h]."""

    def __init__(self, ch, head_ch):
        super().__init__()
        self.heads = ch // head_ch
        self.norm = nn.GroupNorm(32, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x, emb=None):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        hc = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * hc, -1).split(hc, dim=1)
        w = torch.einsum("bct,bcs->bts", q, k) / math.sqrt(hc)
        a = torch.einsum("bts,bcs->bct", w.softmax(dim=-1), v).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, hh, ww)


class Seq(nn.ModuleList):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock)) else layer(x)
        return x


class TinyADM(nn.Module):
    def __init__(self, cfg: GuidedConfig):
        super().__init__()
        mc, emb = cfg.model_channels, 4 * cfg.model_channels
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(ch, emb, mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Seq([ResBlock(ch, emb, ch, down=True)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq([ResBlock(ch, emb, ch), AttentionBlock(ch, cfg.num_head_channels),
                                 ResBlock(ch, emb, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb, ch, up=True))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def forward(self, x, t):
        emb = self.time_embed(adm_timestep_embedding(t, self.mc))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


@pytest.fixture(scope="module")
def tiny_adm():
    torch.manual_seed(0)
    model = TinyADM(TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
            elif p.dim() > 1:
                p.normal_(0, 1.0 / math.sqrt(p[0].numel()))
            else:  # GroupNorm scales
                p.normal_(1.0, 0.1)
    return model


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, TINY.image_size, TINY.image_size, generator=g)
    t = torch.tensor([3, 517])
    return x, t


def test_tiny_model_has_the_checkpoint_key_scheme(tiny_adm):
    keys = set(tiny_adm.state_dict())
    for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.in_layers.2.weight",
              "input_blocks.2.0.in_layers.0.weight", "input_blocks.3.1.qkv.weight",
              "input_blocks.3.0.skip_connection.weight", "middle_block.1.proj_out.weight",
              "output_blocks.1.1.qkv.bias", "output_blocks.1.2.emb_layers.1.weight",
              "output_blocks.5.0.out_layers.3.weight",
              "out.2.weight"):
        assert k in keys, k


def test_converted_unet_matches_tiny_adm(tiny_adm):
    unet = build_unet(TINY)
    unet.load_state_dict(convert_guided_diffusion(tiny_adm.state_dict(), TINY), strict=True)
    unet.eval()
    x, t = _inputs()
    with torch.no_grad():
        ref = tiny_adm(x, t)
        got = unet(x, t).sample
    assert got.shape == ref.shape == (2, 6, 16, 16)
    assert ref.std() > 0.1  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_plain_qkv_split_gives_a_different_network(tiny_adm):
    """The legacy per-head de-interleave matters: a plain 3-way split does not reproduce ADM."""
    unet = build_unet(TINY)
    unet.load_state_dict(convert_guided_diffusion(tiny_adm.state_dict(), TINY,
                                                  legacy_attention=False), strict=True)
    x, t = _inputs()
    with torch.no_grad():
        diff = (unet(x, t).sample - tiny_adm(x, t)).abs().max()
    assert diff > 1e-2


def test_conversion_reports_unmapped_and_missing_keys(tiny_adm):
    sd = dict(tiny_adm.state_dict())
    sd["input_blocks.99.0.in_layers.2.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unmapped.*input_blocks.99"):
        convert_guided_diffusion(sd, TINY)
    sd = dict(tiny_adm.state_dict())
    del sd["middle_block.1.qkv.weight"]
    with pytest.raises(ValueError, match="not filled.*mid_block.attentions.0.to_q.weight"):
        convert_guided_diffusion(sd, TINY)
    sd = dict(tiny_adm.state_dict())
    sd["out.2.weight"] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(ValueError, match="out.*shape"):
        convert_guided_diffusion(sd, TINY)


@pytest.mark.slow  # builds a diffusers UNet2DModel: its first import alone takes ~10 s
def test_load_guided_unet_from_a_local_file(tiny_adm, tmp_path):
    path = tmp_path / "tiny_adm.pt"
    torch.save({f"module.{k}": v for k, v in tiny_adm.state_dict().items()}, path)
    unet = load_guided_unet(path, cfg=TINY)
    assert not any(p.requires_grad for p in unet.parameters())
    x, t = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, tiny_adm(x, t), rtol=1e-4, atol=1e-4)


def test_default_config_is_the_released_256_uncond_layout():
    kw = unet_kwargs()
    assert kw["block_out_channels"] == (256, 256, 512, 512, 1024, 1024)
    assert kw["down_block_types"] == ("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3
    assert kw["up_block_types"] == ("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3
    assert kw["out_channels"] == 6 and kw["attention_head_dim"] == 64
    n = sum(p.numel() for p in build_unet(device="meta").parameters())
    assert 540e6 < n < 560e6  # ADM-256 uncond has about 552.8M parameters
