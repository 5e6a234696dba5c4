"""Stand-in checkpoints: every file of the catalogue in its official on-disk layout, with seeded
random weights built from iqalib's own architectures.

The numbers such a file gives mean nothing; what it proves is that the real file, laid out the
same way, goes through iqalib's download, verification and loaders. The layouts are those the
upstream code writes (read from the upstream repositories; see WEIGHTS.md):

- ``p1q2.pth`` (LinearityIQA ``main.py``): ``{"model", "optimizer", "amp", "k", "b"}``, the
  optimizer an Adam state over the six parameter groups upstream trains, ``amp`` apex's loss
  scaler state, ``k`` / ``b`` lists of three Python floats.
- ``BL_release.pt`` (SPAQ): ``{"state_dict": {"backbone.*": ...}}``.
- ``Metaiqa_livec.pth``: a plain state dict in MetaIQA's own names (``resnet_layer.*``,
  ``net.*``), which pyiqa's loader renames.
- ``DISTS_weights-*.pth``: ``{"alpha", "beta"}``; ``LPIPS_v0.1_*.pth``: the ``lin*`` heads.
- ``vgg16-*.pth`` / ``alexnet-owt-*.pth``: torchvision state dicts.
- ``256x256_diffusion_uncond.pt``: guided-diffusion's plain state dict in its original key names
  (``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, legacy per-head ``qkv``), the
  released configuration (552.8 M float32 parameters, 2.2 GB); built key by key so that only
  one copy is in memory.
- ``realesr-general-*x4v3.pth``: ``{"params": ...}``, the key upstream ``RealESRGANer.dni`` reads.
- MPRNet ``model_*.pth`` (``train.py``): ``{"epoch", "state_dict": {"module.*"}, "optimizer"}``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn


def _with_adam_state(model: nn.Module, groups: list[list[nn.Parameter]] | None = None,
                     lr: float = 1e-4, seed: int = 0) -> dict:
    """A real ``torch.optim.Adam`` state after one step on random gradients (as a checkpoint
    saved during training holds it)."""
    groups = groups or [list(model.parameters())]
    opt = torch.optim.Adam([{"params": g} for g in groups], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for g in groups:
        for p in g:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt.step()
    for g in groups:
        for p in g:
            p.grad = None
    return opt.state_dict()


@contextlib.contextmanager
def _torchvision_without_downloads() -> Iterator[None]:
    """pyiqa's DISTS / LPIPS ask torchvision for ImageNet weights in their constructors; build
    the same modules with random backbones instead (only their own heads are kept)."""
    import torchvision.models as tvm

    saved = {n: getattr(tvm, n) for n in ("vgg16", "alexnet")}
    for n, fn in saved.items():
        setattr(tvm, n, lambda *a, _fn=fn, **k: _fn(weights=None))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(tvm, n, fn)


# --- one writer per catalogue entry --------------------------------------------------------------
def _linearity(seed: int) -> dict:
    from ..metrics.linearity import LinearityNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LinearityNet()
    # upstream's six parameter groups (main.py): regression, dr6, dr7, regr6, regr7, features
    groups = [list(m.parameters()) for m in (net.regression, net.dr6, net.dr7, net.regr6,
                                            net.regr7, net.features)]
    optimizer = _with_adam_state(net, groups, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    k = [float(10 + torch.rand((), generator=gen)) for _ in range(3)]
    b = [float(50 + torch.rand((), generator=gen)) for _ in range(3)]
    return {"model": net.state_dict(), "optimizer": optimizer,
            "amp": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}}, "k": k, "b": b}


def _spaq(seed: int) -> dict:
    from ..metrics.spaq import SPAQNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SPAQNet()
    return {"state_dict": net.state_dict()}


def _metaiqa(seed: int) -> dict:
    from ..metrics.metaiqa import MetaIQA

    m = MetaIQA(pretrained=False, seed=seed)
    out = {}
    for k, v in m.inner.net.state_dict().items():
        if k in ("mean", "std"):  # pyiqa's own buffers, not part of MetaIQA's file
            continue
        out["net." + k[len("head."):] if k.startswith("head.") else k] = v
    return out


def _dists(seed: int) -> dict:
    from pyiqa.archs.dists_arch import DISTS

    with torch.random.fork_rng(devices=[]), _torchvision_without_downloads():
        torch.manual_seed(seed)
        net = DISTS(pretrained=False)
    return {"alpha": net.alpha.detach().clone(), "beta": net.beta.detach().clone()}


def _lpips(kind: str) -> Callable[[int], dict]:
    def write(seed: int) -> dict:
        from pyiqa.archs.lpips_arch import LPIPS

        with torch.random.fork_rng(devices=[]), _torchvision_without_downloads():
            torch.manual_seed(seed)
            net = LPIPS(net=kind, version="0.1", pretrained=False)
        return {k: v for k, v in net.state_dict().items() if k.startswith("lin")}
    return write


def _torchvision(arch: str) -> Callable[[int], dict]:
    def write(seed: int) -> dict:
        import torchvision.models as tvm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return getattr(tvm, arch)(weights=None).state_dict()
    return write


def _realesrgan(seed: int) -> dict:
    from ..defenses.realesrgan_arch import SRVGGNetCompact

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SRVGGNetCompact(num_feat=64, num_conv=32, upscale=4)
    return {"params": net.state_dict()}


def _mprnet(task: str) -> Callable[[int], dict]:
    def write(seed: int) -> dict:
        from ..defenses.mprnet_arch import build_mprnet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_mprnet(task)
        optimizer = _with_adam_state(net, seed=seed)
        return {"epoch": 250, "state_dict": {f"module.{k}": v for k, v in
                                             net.state_dict().items()},
                "optimizer": optimizer}
    return write


# --- guided diffusion: the ADM layout, from the shapes of iqalib's converted network ------------
def adm_from_diffusers(get: Callable[[str], Tensor], cfg) -> dict[str, Tensor]:
    """The inverse of :func:`iqalib.defenses.guided_unet.convert_guided_diffusion`: the
    guided-diffusion (ADM) state dict, original key names and shapes, whose conversion gives
    back the diffusers tensors ``get(key)`` (called once per key, so they may be drawn lazily).

    Attention ``to_q / to_k / to_v`` are interleaved per head into the legacy ``qkv`` 1x1
    convolution (rows ``[q_h, k_h, v_h]``); Linear weights become conv1d weights ``[C, C, 1]``.
    """
    from ..defenses import guided_unet as gu

    target = gu.build_unet(cfg, device="meta").state_dict()
    inv_resnet = {v: k for k, v in gu._RESNET.items()}
    out: dict[str, Tensor] = {}
    for adm, diff, kind in gu._module_map(cfg):
        for p in ("weight", "bias"):
            if kind == "plain":
                if f"{diff}.{p}" in target:
                    out[f"{adm}.{p}"] = get(f"{diff}.{p}")
            elif kind == "resnet":
                for t_sub, a_sub in inv_resnet.items():
                    if f"{diff}.{t_sub}.{p}" in target:
                        out[f"{adm}.{a_sub}.{p}"] = get(f"{diff}.{t_sub}.{p}")
            else:
                out[f"{adm}.norm.{p}"] = get(f"{diff}.group_norm.{p}")
                proj = get(f"{diff}.to_out.0.{p}")
                out[f"{adm}.proj_out.{p}"] = proj[..., None] if p == "weight" else proj
                q, k, v = (get(f"{diff}.{n}.{p}") for n in ("to_q", "to_k", "to_v"))
                heads = q.shape[0] // cfg.num_head_channels
                qkv = torch.stack([t.reshape(heads, -1, *t.shape[1:]) for t in (q, k, v)], 1)
                qkv = qkv.reshape(3 * q.shape[0], *q.shape[1:])
                out[f"{adm}.qkv.{p}"] = qkv[..., None] if p == "weight" else qkv
    return out


def guided_diffusion_state(cfg=None, seed: int = 0, *, dtype: torch.dtype = torch.float32
                           ) -> dict[str, Tensor]:
    """A random guided-diffusion (ADM) state dict in the original key names and shapes
    (:func:`adm_from_diffusers`); ``cfg`` defaults to the released 256x256 unconditional model.

    Each tensor is drawn once, directly in its final place (weights ``N(0, 1/fan_in)``, norms
    1, biases 0; the output convolution scaled by 0.1 so that the random model's output stays
    in the range a trained one gives), so only one copy of the 2.2 GB is ever in memory.
    """
    from ..defenses import guided_unet as gu

    cfg = cfg or gu.GUIDED_256_UNCOND
    shapes = {k: v.shape for k, v in gu.build_unet(cfg, device="meta").state_dict().items()}
    gen = torch.Generator().manual_seed(seed)

    def draw(key: str) -> Tensor:
        shape = shapes[key]
        if key.endswith("bias"):
            return torch.zeros(shape, dtype=dtype)
        if len(shape) == 1:  # GroupNorm weights
            return torch.ones(shape, dtype=dtype)
        scale = (0.1 if key.startswith("conv_out") else 1.0) / math.sqrt(math.prod(shape[1:]))
        return (torch.randn(shape, generator=gen) * scale).to(dtype)

    return adm_from_diffusers(draw, cfg)


def _guided(seed: int) -> dict:
    return guided_diffusion_state(seed=seed)


#: catalogue name -> writer(seed) returning the object ``torch.save`` writes
WRITERS: dict[str, Callable[[int], object]] = {
    "linearity-p1q2": _linearity,
    "spaq-baseline": _spaq,
    "metaiqa": _metaiqa,
    "dists": _dists,
    "lpips-alex": _lpips("alex"),
    "lpips-vgg": _lpips("vgg"),
    "torchvision-vgg16": _torchvision("vgg16"),
    "torchvision-alexnet": _torchvision("alexnet"),
    "guided-diffusion-256-uncond": _guided,
    "realesr-general-x4v3": _realesrgan,
    "realesr-general-wdn-x4v3": _realesrgan,
    "mprnet-denoise": _mprnet("denoise"),
    "mprnet-deblur": _mprnet("deblur"),
    "mprnet-derain": _mprnet("derain"),
}


def write_checkpoint(name: str, folder: str | Path, *, seed: int = 0,
                     filename: str | None = None) -> Path:
    """Write the stand-in for catalogue entry ``name`` as ``folder/<filename>`` (default: the
    catalogue's file name) and return its path. Each entry gets its own seed (``seed`` plus its
    position in :data:`WRITERS`), so files never repeat one another."""
    from .. import weights
    from ..atomic import atomic_write_with

    if name not in WRITERS:
        raise KeyError(f"no stand-in writer for {name!r}; known: {', '.join(WRITERS)}")
    holder = [WRITERS[name](seed + list(WRITERS).index(name))]
    dest = Path(folder) / (filename or weights.CATALOGUE[name].filename)
    atomic_write_with(dest, lambda tmp: torch.save(holder[0], tmp))
    holder.clear()  # the 2 GB state goes before the next one is built
    return dest


def write_all(folder: str | Path, names: list[str] | None = None, *, seed: int = 0,
              filenames: dict[str, str] | None = None, log=print) -> dict[str, Path]:
    """Write the stand-ins of ``names`` (default: every catalogue entry) into ``folder``."""
    import time

    out = {}
    for name in names or list(WRITERS):
        t0 = time.perf_counter()
        out[name] = write_checkpoint(name, folder, seed=seed,
                                     filename=(filenames or {}).get(name))
        log(f"  {out[name].name:<32} {out[name].stat().st_size / 1e6:9.1f} MB "
            f"{time.perf_counter() - t0:6.1f} s")
    return out


__all__ = ["WRITERS", "adm_from_diffusers", "guided_diffusion_state", "write_all", "write_checkpoint"]
