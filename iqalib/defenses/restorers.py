"""Pretrained image-restoration networks used as purifiers: MPRNet and Real-ESRGAN.

- MPRNet (Zamir et al., CVPR 2021): the denoising checkpoint by default, as the MSU group
  uses it; ``task="deblur"`` / ``"derain"`` load the other official checkpoints.
- Real-ESRGAN (Wang et al., ICCVW 2021) ``realesr-general-x4v3`` with denoise strength 0.2
  (deep network interpolation with ``realesr-general-wdn-x4v3``), in fp32. As in the MSU
  group's code the purifier returns the network's x4 output: the metric scores the 4x larger
  image (their ``outscale=1`` never reaches the output), and the evaluation resizes it back
  only for PSNR / SSIM (:func:`iqalib.evaluate.measures.match_size`).

Checkpoints come from :mod:`iqalib.weights` (``make weights WEIGHTS=<name>``) and load with
strict key checks; without them construction fails with a message naming the target.
``pretrained=False`` builds randomly initialised networks (tests, shape checks).
Both networks are frozen (no parameter gradients) but differentiable in their input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MissingWeightsError
from ..registry import DEFENSES
from .base import NetworkDefense, frozen
from .mprnet_arch import MPRNET_WIDTHS, build_mprnet
from .realesrgan_arch import SRVGGNetCompact, interpolate_states


def load_weights(name: str) -> dict[str, Tensor]:
    """The state dict of catalogue checkpoint ``name`` through :mod:`iqalib.weights`.

    Unwraps the container the official MPRNet files use (``state_dict``; also ``params_ema`` /
    ``params`` / ``model``) and strips a DataParallel ``module.`` prefix. Real-ESRGAN's files
    are read by :func:`realesrgan_state`, which follows upstream's key rules.
    """
    state = _raw_checkpoint(name)
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    return {(k.removeprefix("module.")): v for k, v in state.items()}


def _strict_load(net: nn.Module, state: dict, name: str) -> None:
    """``load_state_dict(strict=True)`` with a message that says which checkpoint is wrong."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise MissingWeightsError(
            f"checkpoint {name!r} does not fit {type(net).__name__}: {str(e)[:400]} ... "
            f"Re-fetch it with `make weights WEIGHTS={name}`.") from e


def pad_to_multiple(x: Tensor, multiple: int = 8) -> tuple[Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple of ``multiple``; reflect where the image is large enough
    (the official MPRNet demo), replicate otherwise. Returns the padded batch and (h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def _raw_checkpoint(name: str) -> dict:
    """The loaded object of catalogue checkpoint ``name``, containers and all."""
    try:
        from .. import weights
    except ImportError as e:  # the catalogue module is missing from this installation
        raise MissingWeightsError(
            f"cannot load checkpoint {name!r}: iqalib.weights is unavailable ({e}). "
            f"Fetch it with `make weights WEIGHTS={name}`.") from e
    ckpt = weights.load_state(name)
    if not isinstance(ckpt, dict):
        raise MissingWeightsError(f"checkpoint {name!r} is not a dict of tensors; re-fetch it "
                                  f"with `make weights WEIGHTS={name}`")
    return ckpt


def realesrgan_state(denoise_strength: float) -> dict[str, Tensor]:
    """The state dict Real-ESRGAN's ``RealESRGANer`` loads for ``realesr-general-x4v3`` at
    ``denoise_strength`` s, key for key as upstream does it.

    The release files are dicts with the weights under ``"params"`` (and possibly
    ``"params_ema"``). For s < 1, ``RealESRGANer.dni`` blends the ``"params"`` entries:
    ``s * x4v3["params"] + (1 - s) * wdn["params"]`` into the x4v3 dict; the loader then takes
    ``"params_ema"`` if that dict has one, else ``"params"`` (so a ``params_ema`` entry in
    ``realesr-general-x4v3.pth`` would win over the blend; we keep that quirk). A DataParallel
    ``module.`` prefix is stripped.
    """
    main = dict(_raw_checkpoint("realesr-general-x4v3"))
    if denoise_strength != 1.0:
        wdn = _raw_checkpoint("realesr-general-wdn-x4v3")
        for name, ck in (("realesr-general-x4v3", main), ("realesr-general-wdn-x4v3", wdn)):
            if not isinstance(ck.get("params"), dict):
                raise MissingWeightsError(
                    f"checkpoint {name!r} has no 'params' entry (keys {sorted(ck)[:5]}), which "
                    f"Real-ESRGAN's interpolation blends; re-fetch it with "
                    f"`make weights WEIGHTS={name}`")
        main["params"] = interpolate_states(main["params"], wdn["params"], denoise_strength)
    key = "params_ema" if "params_ema" in main else "params"
    if not isinstance(main.get(key), dict):
        raise MissingWeightsError(
            "checkpoint 'realesr-general-x4v3' has neither 'params_ema' nor 'params'; re-fetch "
            "it with `make weights WEIGHTS=realesr-general-x4v3`")
    return {k.removeprefix("module."): v for k, v in main[key].items()}


@DEFENSES.register("mprnet", presets={t: {"task": t} for t in MPRNET_WIDTHS},
                   tags=("restorer", "network"))
class MPRNetDefense(NetworkDefense):
    """MPRNet restoration (Zamir et al., CVPR 2021) as a purifier.

    Keywords: ``task`` "denoise" (default, the MSU group's choice; checkpoint
    ``mprnet-denoise``), "deblur" or "derain"; ``pretrained`` (False: random weights, for
    tests). The input is reflect-padded to a multiple of 8, restored, cropped back and clamped
    to [0, 1]; the output is the stage-3 image.
    """

    name = "mprnet"
    #: the default task's checkpoint; ``task=`` picks ``mprnet-deblur`` / ``mprnet-derain``
    weights = ("mprnet-denoise",)

    def __init__(self, *, task: str = "denoise", pretrained: bool = True, seed: int = 0):
        if task not in MPRNET_WIDTHS:
            raise ValueError(f"mprnet task must be one of {sorted(MPRNET_WIDTHS)}, got {task!r}")
        super().__init__(seed=seed, task=task, pretrained=bool(pretrained))
        self.weights = (f"mprnet-{task}",)
        self.weights_name = f"mprnet-{task}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init is reproducible too
            net = build_mprnet(task)
        if pretrained:
            _strict_load(net, load_weights(self.weights_name), self.weights_name)
        self.net = frozen(net)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        dtype = x.dtype
        xp, (h, w) = pad_to_multiple(self._run(x), 8)
        out = self.net(xp)[0][..., :h, :w]
        return out.clamp(0, 1).to(dtype)


@DEFENSES.register("realesrgan", aliases=["real-esrgan"], tags=("restorer", "network"),
                   presets={"outscale1": {"outscale": 1.0}})
class RealESRGANDefense(NetworkDefense):
    """Real-ESRGAN ``realesr-general-x4v3`` (Wang et al., ICCVW 2021) as a purifier.

    Keywords: ``denoise_strength`` 0.2 (MSU setting): the network's weights are
    ``s * x4v3 + (1 - s) * wdn-x4v3`` (s = 1 uses x4v3 alone; :func:`realesrgan_state`).
    ``outscale=None`` (default): the x4 network output, clamped to [0, 1], is the purified
    image, 4x the input size, as the MSU group's code hands it to the metric
    (``changes_size`` is True). ``outscale=s`` (preset ``realesrgan:outscale1`` for s = 1)
    resizes that output to s times the input size with antialiased bicubic (Real-ESRGAN's own
    ``enhance`` uses OpenCV's Lanczos; bicubic keeps it differentiable and on the device).
    ``pretrained=False`` builds random weights (tests).

    Checkpoints: ``realesr-general-x4v3`` and, for s < 1, ``realesr-general-wdn-x4v3``
    (``weights``); both official ``.pth`` files hold a dict with ``"params"`` (see
    :func:`realesrgan_state` for the keys read).
    """

    name = "realesrgan"
    weights = ("realesr-general-x4v3", "realesr-general-wdn-x4v3")

    def __init__(self, *, denoise_strength: float = 0.2, outscale: float | None = None,
                 pretrained: bool = True, seed: int = 0):
        denoise_strength = float(denoise_strength)
        if not 0.0 <= denoise_strength <= 1.0:
            raise ValueError(f"realesrgan denoise_strength must be in [0, 1], got {denoise_strength}")
        if outscale is not None:
            outscale = float(outscale)
            if not 0 < outscale <= 16:
                raise ValueError(f"realesrgan outscale must be None (the x4 output) or in (0, 16], "
                                 f"got {outscale}")
        super().__init__(seed=seed, denoise_strength=denoise_strength, outscale=outscale,
                         pretrained=bool(pretrained))
        self.changes_size = outscale != 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SRVGGNetCompact(num_feat=64, num_conv=32, upscale=4)
        if pretrained:
            _strict_load(net, realesrgan_state(self.denoise_strength), "realesr-general-x4v3")
        self.net = frozen(net)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        dtype = x.dtype
        h, w = x.shape[-2:]
        up = self.net(self._run(x)).clamp(0, 1)
        if self.outscale is None:
            return up.to(dtype)
        size = (max(1, round(h * self.outscale)), max(1, round(w * self.outscale)))
        out = F.interpolate(up, size=size, mode="bicubic", align_corners=False, antialias=True)
        return out.clamp(0, 1).to(dtype)
