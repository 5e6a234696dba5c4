"""The guided-diffusion 256x256 unconditional UNet (DiffPure's prior) as a diffusers UNet2DModel.

Dhariwal and Nichol, "Diffusion Models Beat GANs on Image Synthesis" (NeurIPS 2021), the
ablated diffusion model (ADM) released as ``256x256_diffusion_uncond.pt`` (openai/guided-diffusion,
code MIT, model for research use). DiffPure (Nie et al., ICML 2022) and the study
(arXiv 2404.06957, via msu-video-group/adversarial-defenses-for-iqa) purify ImageNet-size
images with it.

diffusers ships no converter for these checkpoints. :func:`convert_guided_diffusion` maps every
key of the ADM state dict onto :class:`diffusers.UNet2DModel` built by :func:`build_unet` (the
settings in :func:`unet_kwargs`), checks every shape, and reports any key left over on
either side. ADM and UNet2DModel compute the same function here:

- ResBlock (``in_layers`` / ``emb_layers`` / ``out_layers`` / ``skip_connection``) with
  ``use_scale_shift_norm`` = ``ResnetBlock2D(time_embedding_norm="scale_shift")``; the
  ``resblock_updown`` blocks (avg-pool / nearest up inside the block) = ResnetBlock2D
  ``down=True`` / ``up=True`` (diffusers' ``downsample_type="resnet"``).
- The timestep embedding: cos then sin, frequencies ``exp(-ln(1e4) i / half)``
  (``flip_sin_to_cos=True, freq_shift=0``), then Linear-SiLU-Linear to 4x channels.
- AttentionBlock with the *legacy* QKV order (``use_new_attention_order=False``): the 1x1-conv
  ``qkv`` rows are grouped per head as ``[q_h, k_h, v_h]``, so they are de-interleaved per
  head before being split into ``to_q`` / ``to_k`` / ``to_v`` (a plain three-way split
  gives a network that runs but produces garbage; the test checks this).

The UNet outputs 6 channels: the noise ``eps`` (first 3) and the interpolation weight of the
learned variance (last 3, ``learn_sigma=True``), which diffusers' DDPMScheduler reads with
``variance_type="learned_range"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MissingWeightsError

#: the catalogue name in :mod:`iqalib.weights` (``make weights WEIGHTS=guided-diffusion-256-uncond``)
WEIGHTS_NAME = "guided-diffusion-256-uncond"


@dataclass(frozen=True)
class GuidedConfig:
    """The guided-diffusion ``create_model`` flags the conversion needs.

    Defaults are those of ``256x256_diffusion_uncond.pt``: attention_resolutions 32,16,8;
    num_channels 256; num_head_channels 64; num_res_blocks 2; channel_mult (1,1,2,2,4,4);
    learn_sigma True (6 output channels); resblock_updown True; use_scale_shift_norm True.
    """

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_head_channels: int = 64

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        """Whether each resolution level has attention (ADM: ``ds in attention_ds``)."""
        ds = {self.image_size // r for r in self.attention_resolutions}
        return tuple(2 ** level in ds for level in range(len(self.channel_mult)))


GUIDED_256_UNCOND = GuidedConfig()


def unet_kwargs(cfg: GuidedConfig = GUIDED_256_UNCOND) -> dict:
    """``UNet2DModel(**unet_kwargs(cfg))`` is the ADM architecture of ``cfg``."""
    channels = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    if any(c % 32 for c in channels):
        raise ValueError(f"ADM uses GroupNorm(32): channel widths must be multiples of 32, got {channels}")
    attn = cfg.attention_levels
    return {
        "sample_size": cfg.image_size, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
        "down_block_types": tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn),
        "up_block_types": tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D"
                                for a in reversed(attn)),
        "block_out_channels": channels, "layers_per_block": cfg.num_res_blocks,
        "attention_head_dim": cfg.num_head_channels, "norm_num_groups": 32, "attn_norm_num_groups": 32,
        "norm_eps": 1e-5, "resnet_time_scale_shift": "scale_shift", "downsample_type": "resnet",
        "upsample_type": "resnet", "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu",
        "mid_block_scale_factor": 1, "dropout": 0.0, "add_attention": True,
    }


def build_unet(cfg: GuidedConfig = GUIDED_256_UNCOND, *, device=None):
    """An (untrained) UNet2DModel with the ADM layout of ``cfg``; ``device="meta"`` allocates nothing."""
    from diffusers import UNet2DModel

    if device is None:
        return UNet2DModel(**unet_kwargs(cfg))
    with torch.device(device):
        return UNet2DModel(**unet_kwargs(cfg))


def _module_map(cfg: GuidedConfig) -> list[tuple[str, str, str]]:
    """(ADM prefix, diffusers prefix, kind) for every module holding weights.

    Walks the ADM constructor's order: ``input_blocks`` (conv_in, then per level
    ``num_res_blocks`` x [ResBlock, attention?] and a down-ResBlock except at the last level),
    ``middle_block`` (ResBlock, attention, ResBlock), ``output_blocks`` (per level, deepest
    first, ``num_res_blocks + 1`` x [ResBlock, attention?] and an up-ResBlock after the last
    one except at level 0).
    """
    m = [("time_embed.0", "time_embedding.linear_1", "plain"),
         ("time_embed.2", "time_embedding.linear_2", "plain"),
         ("input_blocks.0.0", "conv_in", "plain")]
    levels = len(cfg.channel_mult)
    attn = cfg.attention_levels
    k = 1
    for lvl in range(levels):
        for i in range(cfg.num_res_blocks):
            m.append((f"input_blocks.{k}.0", f"down_blocks.{lvl}.resnets.{i}", "resnet"))
            if attn[lvl]:
                m.append((f"input_blocks.{k}.1", f"down_blocks.{lvl}.attentions.{i}", "attention"))
            k += 1
        if lvl != levels - 1:
            m.append((f"input_blocks.{k}.0", f"down_blocks.{lvl}.downsamplers.0", "resnet"))
            k += 1
    m += [("middle_block.0", "mid_block.resnets.0", "resnet"),
          ("middle_block.1", "mid_block.attentions.0", "attention"),
          ("middle_block.2", "mid_block.resnets.1", "resnet")]
    k = 0
    for up, lvl in enumerate(reversed(range(levels))):
        for i in range(cfg.num_res_blocks + 1):
            m.append((f"output_blocks.{k}.0", f"up_blocks.{up}.resnets.{i}", "resnet"))
            sub = 1
            if attn[lvl]:
                m.append((f"output_blocks.{k}.1", f"up_blocks.{up}.attentions.{i}", "attention"))
                sub = 2
            if lvl and i == cfg.num_res_blocks:
                m.append((f"output_blocks.{k}.{sub}", f"up_blocks.{up}.upsamplers.0", "resnet"))
            k += 1
    m += [("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]
    return m


# ADM ResBlock sub-module -> diffusers ResnetBlock2D sub-module
_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def split_qkv(weight: Tensor, heads: int, *, legacy: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Split an ADM ``qkv`` weight ``[3C, C(, 1)]`` or bias ``[3C]`` into q, k, v.

    ``legacy=True`` (QKVAttentionLegacy, the released checkpoints): rows are per head
    ``[q_h, k_h, v_h]``, so reshape to ``[heads, 3, C/heads, ...]`` and take the middle index.
    ``legacy=False`` (QKVAttention, ``use_new_attention_order``): rows are ``[q, k, v]``.
    """
    three_c = weight.shape[0]
    c = three_c // 3
    rest = weight.shape[1:]
    if legacy:
        w = weight.reshape(heads, 3, c // heads, *rest)
        return tuple(w[:, j].reshape(c, *rest) for j in range(3))  # type: ignore[return-value]
    return tuple(weight.reshape(3, c, *rest)[j] for j in range(3))  # type: ignore[return-value]


def convert_guided_diffusion(state_dict: dict[str, Tensor], cfg: GuidedConfig = GUIDED_256_UNCOND,
                             *, legacy_attention: bool = True,
                             dtype: torch.dtype | None = torch.float32) -> dict[str, Tensor]:
    """Map a guided-diffusion (ADM) state dict onto ``build_unet(cfg)``'s state dict.

    Every source key must be used and every target key filled, with the target's shape
    (1x1 conv1d attention weights become Linear weights); otherwise a ``ValueError`` lists
    the unmapped / missing / mis-shaped keys. ``dtype`` (float32 by default) casts the
    tensors (the released file may hold fp16 copies when saved after ``convert_to_fp16``).
    """
    target = build_unet(cfg, device="meta").state_dict()
    src = dict(state_dict)
    if any(k.startswith("module.") for k in src):
        src = {k.removeprefix("module."): v for k, v in src.items()}
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []

    def take(key: str) -> Tensor | None:
        if key not in src:
            return None
        used.add(key)
        return src[key]

    def put(key: str, value: Tensor) -> None:
        if key not in target:
            problems.append(f"target has no key {key!r}")
            return
        shape = target[key].shape
        if value.numel() == shape.numel() and value.shape != shape and value.dim() == len(shape) + 1:
            value = value.reshape(shape)  # conv1d [C, C, 1] -> Linear [C, C]
        if value.shape != shape:
            problems.append(f"{key}: source shape {tuple(value.shape)} != target {tuple(shape)}")
            return
        out[key] = value.to(dtype) if dtype is not None else value

    for a, d, kind in _module_map(cfg):
        if kind == "plain":
            pairs = [("", "")]
        elif kind == "resnet":
            pairs = [(f".{s}", f".{t}") for s, t in _RESNET.items()]
        else:
            pairs = [(".norm", ".group_norm"), (".proj_out", ".to_out.0")]
        for s, t in pairs:
            for p in ("weight", "bias"):
                v = take(f"{a}{s}.{p}")
                if v is not None:
                    put(f"{d}{t}.{p}", v)
        if kind == "attention":
            channels = target[f"{d}.to_q.weight"].shape[0]
            heads = channels // cfg.num_head_channels
            for p in ("weight", "bias"):
                v = take(f"{a}.qkv.{p}")
                if v is None:
                    continue
                for name, part in zip(("to_q", "to_k", "to_v"), split_qkv(v, heads, legacy=legacy_attention)):
                    put(f"{d}.{name}.{p}", part)

    unmapped = sorted(set(src) - used)
    missing = sorted(set(target) - set(out))
    if unmapped:
        problems.append(f"{len(unmapped)} source keys unmapped: {unmapped[:8]}")
    if missing:
        problems.append(f"{len(missing)} target keys not filled: {missing[:8]}")
    if problems:
        raise ValueError("guided-diffusion checkpoint does not fit the expected ADM layout "
                         f"({cfg}): " + "; ".join(problems))
    return out


def load_guided_unet(path=None, *, cfg: GuidedConfig = GUIDED_256_UNCOND, device=None,
                     dtype: torch.dtype = torch.float32):
    """The pretrained guided-diffusion UNet as a frozen, eval-mode ``UNet2DModel``.

    ``path`` defaults to the catalogue file ``guided-diffusion-256-uncond`` from
    :mod:`iqalib.weights`, which raises :class:`MissingWeightsError` naming
    ``make weights WEIGHTS=guided-diffusion-256-uncond`` when absent. The network is built on
    the meta device and the converted tensors are assigned to it (no second 2 GB copy).
    """
    if path is None:
        path = guided_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    converted = convert_guided_diffusion(state, cfg, dtype=dtype)
    del state
    unet = build_unet(cfg, device="meta")
    unet.load_state_dict(converted, strict=True, assign=True)
    unet.eval().requires_grad_(False)
    return unet.to(device) if device is not None else unet


def guided_weights_path():
    """The local path of the guided-diffusion checkpoint (no download)."""
    try:
        from .. import weights
    except ImportError as e:
        raise MissingWeightsError(
            f"iqalib.weights is unavailable ({e}); fetch the checkpoint with "
            f"`make weights WEIGHTS={WEIGHTS_NAME}`") from e
    return weights.path(WEIGHTS_NAME)


def guided_weights_available() -> bool:
    """True when the guided-diffusion checkpoint is on disk (used by ``prior="auto"``)."""
    try:
        guided_weights_path()
    except (MissingWeightsError, FileNotFoundError, KeyError, ImportError):
        return False
    return True


__all__ = [
    "GUIDED_256_UNCOND",
    "WEIGHTS_NAME",
    "GuidedConfig",
    "build_unet",
    "convert_guided_diffusion",
    "guided_weights_available",
    "guided_weights_path",
    "load_guided_unet",
    "split_qkv",
    "unet_kwargs",
]
