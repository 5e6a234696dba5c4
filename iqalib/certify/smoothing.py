"""Smoothed metrics: a metric made provably stable by averaging it over Gaussian noise.

``f_s(x)`` is the mean (randomized smoothing: Cohen, Rosenfeld & Kolter, ICML 2019; for bounded
regression outputs Salman et al. 2019 and Kumar et al., NeurIPS 2020) or the median (median
smoothing: Chiang et al., "Detection as regression: certified object detection by median
smoothing", NeurIPS 2020) of ``f(D(clip(x + delta)))``, ``delta ~ N(0, sigma^2 I)`` in [0,1]
image units, where

- ``f`` is any :class:`~iqalib.metrics.base.IQAMetric`, its output clamped to ``bounds``
  (default: the metric's ``score_range``): mean smoothing is certifiable only for a bounded
  ``f``, so the clamp is part of the defended metric;
- ``clip`` (default True, as the certified-iqa-defenses code does for RS / MS / DRS / DMS)
  puts the noisy image back into [0,1] before anything else sees it;
- ``D`` is an optional denoiser (Salman, Sun, Yang, Kapoor & Kolter, "Denoised smoothing: a
  provable defense for pretrained classifiers", NeurIPS 2020): ``"ffdnet"`` (the registered
  FFDNet purifier told the noise level ``sigma``; offline), ``"diffusion"`` (one-shot denoising
  with DiffPure's prior at the timestep whose noise level matches ``sigma``: Carlini, Tramer,
  Dvijotham, Rice, Sun & Kolter, "(Certified!!) adversarial robustness for free!", ICLR 2023;
  the guided-diffusion UNet when its weights are present, else the FFDNet prior, with which it is
  FFDNet at the matching level), or any :class:`~iqalib.defenses.base.Defense`.

As a metric (``forward``) the smoothed score is a Monte-Carlo estimate from ``n`` draws seeded by
``seed`` per image (the same image always gives the same score, in any batch). When the input requires a gradient (an
attack), each call instead draws ``n_grad`` fresh samples from the global generator, so a
gradient attack follows the expectation over the noise (EOT). :meth:`SmoothedMetric.certify`
draws its own ``n`` samples and returns certified intervals from :mod:`iqalib.certify.bounds`.

Registered as the metric ``"smoothed"`` with presets named as the certified-iqa-defenses
repository names its methods: ``rs`` (mean), ``ms`` (median), ``drs`` / ``dms`` (FFDNet
denoised), ``ddrs`` / ``ddms`` (diffusion denoised), each at ``-s12`` / ``-s25`` / ``-s50``
(sigma 0.12 / 0.25 / 0.50; the group uses 0.12), e.g. ``load_metric("smoothed:dms-s25",
metric="brisque")``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.base import IQAMetric, check_batch
from ..registry import METRICS
from . import bounds as _bounds

#: the certified-iqa-defenses settings: sigma 0.12, n0 = 100 selection and n = 1000 estimation
#: samples, alpha = 0.001
GROUP_SIGMA, GROUP_N0, GROUP_N, GROUP_ALPHA = 0.12, 100, 1000, 1e-3
SMOOTHING = ("mean", "median")


# -- denoisers ------------------------------------------------------------------------------
class OneShotDiffusionDenoiser:
    """One reverse step of a diffusion prior from the timestep matching the noise level
    (Carlini et al., ICLR 2023): a noisy image ``y = x + sigma * eps`` in [0,1] is
    ``x_t / sqrt(abar_t)`` in [-1,1] units when ``sqrt((1 - abar_t) / abar_t) = 2 sigma``; the
    prior's x0 estimate at that ``t`` is the denoised image.

    ``t`` is the first timestep whose noise level reaches ``2 sigma`` (the certified-iqa-defenses
    DDRS rule). ``prior``: ``"auto"`` / ``"guided"`` / ``"ffdnet"`` or a
    :class:`~iqalib.defenses.diffpure.Prior`. The guided UNet works at 256x256: inputs are
    resized there and back (``size``; None keeps the input size, right for FFDNet).
    """

    name = "diffusion-denoiser"
    stochastic = False
    differentiable = True

    def __init__(self, sigma: float, *, prior="auto", size: int | None | str = "auto"):
        from ..defenses import diffpure

        self.sigma = float(sigma)
        if isinstance(prior, diffpure.Prior):
            self._prior, self.prior = prior, prior.name
        else:
            self._prior, self.prior = None, diffpure.resolve_prior(prior)
        sched = diffpure.make_scheduler("ddpm", "epsilon", "fixed_small")
        abar = sched.alphas_cumprod.double()
        level = ((1 - abar) / abar).sqrt()
        hits = torch.nonzero(level >= 2 * self.sigma)
        if hits.numel() == 0:
            raise ValueError(f"sigma {sigma} is beyond the diffusion schedule's noise levels")
        self.t = int(hits[0])
        self.abar = float(abar[self.t])
        self.size = (256 if self.prior == "guided" else None) if size == "auto" else size
        self.device = None
        self.hparams = {"sigma": self.sigma, "prior": self.prior, "t": self.t}

    def get_prior(self):
        from ..defenses import diffpure

        if self._prior is None:
            self._prior = diffpure.PRIORS[self.prior]()
            if self.device is not None:
                self._prior.to(self.device)
        return self._prior

    def to(self, device) -> OneShotDiffusionDenoiser:
        self.device = torch.device(device)
        if self._prior is not None:
            self._prior.to(self.device)
        return self

    def __call__(self, y: Tensor) -> Tensor:
        h, w = y.shape[-2:]
        resize = self.size is not None and (h, w) != (self.size, self.size)
        if resize:
            y = F.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        abar = torch.tensor(self.abar, dtype=y.dtype, device=y.device)
        x_t = abar.sqrt() * (y * 2 - 1)
        prior = self.get_prior()
        out = prior(x_t, self.t, abar)
        if prior.prediction_type == "epsilon":
            out = (x_t - (1 - abar).sqrt() * out[:, :3]) / abar.sqrt()
        x0 = ((out.clamp(-1, 1) + 1) / 2)
        if resize:
            x0 = F.interpolate(x0, size=(h, w), mode="bilinear", align_corners=False)
        return x0.clamp(0, 1)

    def __repr__(self) -> str:
        return f"OneShotDiffusionDenoiser(sigma={self.sigma}, prior={self.prior!r}, t={self.t})"


def make_denoiser(denoiser, sigma: float):
    """``None``, ``"ffdnet"``, ``"diffusion"`` (prior auto), ``"diffusion:guided"`` /
    ``"diffusion:ffdnet"``, or a ready :class:`~iqalib.defenses.base.Defense` / callable."""
    if denoiser is None or callable(denoiser):
        return denoiser
    name, _, option = str(denoiser).partition(":")
    if name == "ffdnet":
        from ..defenses import create_defense

        return create_defense("ffdnet", sigma=float(sigma))
    if name == "diffusion":
        return OneShotDiffusionDenoiser(sigma, prior=option or "auto")
    raise ValueError(f"unknown denoiser {denoiser!r}: use None, 'ffdnet', 'diffusion', "
                     "'diffusion:guided' or a Defense object")


# -- the smoothed metric --------------------------------------------------------------------
@dataclass
class Certificate:
    """Certified intervals of a smoothed metric for a batch: ``estimate [B]`` (the Monte-Carlo
    smoothed score), ``lower`` / ``upper`` ``[B, E]`` (one column per radius in ``eps``), valid
    with probability ``>= 1 - alpha`` (``simultaneous``: for all radii at once, else per radius).
    ``base [B]`` is the unsmoothed clean score, ``samples [B, n]`` the draws."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    eps: np.ndarray
    base: np.ndarray
    samples: np.ndarray
    sigma: float
    alpha: float
    smoothing: str
    method: str
    bounds: tuple[float, float]
    time_per_image_s: float
    simultaneous: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def width(self) -> np.ndarray:
        return self.upper - self.lower

    def radius(self, tolerance: float, *, method: str | None = None) -> np.ndarray:
        """Per image, the largest L2 radius within which the smoothed score moves by at most
        ``tolerance`` (:func:`~iqalib.certify.bounds.certified_radius`)."""
        return _bounds.certified_radius(self.samples, tolerance, self.sigma,
                                       smoothing=self.smoothing, lo=self.bounds[0],
                                       hi=self.bounds[1], alpha=self.alpha, method=method)

    def contains(self, scores, eps_index: int = -1) -> np.ndarray:
        """Whether each score ``[B]`` lies inside the certified interval of radius
        ``eps[eps_index]``."""
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        return (s >= self.lower[:, eps_index]) & (s <= self.upper[:, eps_index])

    def to_frame(self, ids=None) -> pd.DataFrame:
        """Long form: one row per image x radius."""
        b, e = self.lower.shape
        ids = list(ids) if ids is not None else [f"img{i:04d}" for i in range(b)]
        return pd.DataFrame({
            "image_id": np.repeat(ids, e), "eps": np.tile(self.eps, b),
            "base": np.repeat(self.base, e), "estimate": np.repeat(self.estimate, e),
            "lower": self.lower.ravel(), "upper": self.upper.ravel(),
            "width": self.width.ravel(), "sigma": self.sigma, "alpha": self.alpha,
            "smoothing": self.smoothing, "method": self.method, "n": self.samples.shape[1],
            "simultaneous": self.simultaneous, "time_per_image_s": self.time_per_image_s,
        })


class SmoothedMetric(IQAMetric):
    """A metric smoothed over Gaussian noise (mean or median), optionally denoised.

    Args:
        metric: the base metric (an :class:`IQAMetric` or a registered name).
        sigma: noise std in [0,1] image units (default 0.12, the certified-iqa-defenses value).
        smoothing: ``"mean"`` (randomized smoothing) or ``"median"`` (median smoothing).
        denoiser: None, ``"ffdnet"``, ``"diffusion"`` or a Defense (see the module docstring).
        n: draws per score when the metric is evaluated without gradients (default 100).
        n_grad: draws per call with gradients, i.e. per attack step (EOT; default 8).
        clip: clip noisy images to [0,1] (default True).
        bounds: the clamp ``(lo, hi)`` of the base score (default: its ``score_range``).
        batch_size: noisy images per base-metric call (default 32).
        seed: seeds the evaluation draws.

    Keeps the base metric's direction and range, so attacks and tables treat it as any metric.
    """

    def __init__(self, metric="effnet-iqa", *, sigma: float = GROUP_SIGMA,
                 smoothing: str = "mean", denoiser=None, n: int = 100, n_grad: int = 8,
                 clip: bool = True, bounds: tuple[float, float] | None = None,
                 batch_size: int = 32, seed: int = 0):
        super().__init__()
        if isinstance(metric, str):
            from ..metrics import create_metric

            metric = create_metric(metric)
        if smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
        if not sigma > 0:
            raise ValueError(f"sigma is the noise std in [0,1] image units (> 0), got {sigma}")
        if n < 1 or n_grad < 1:
            raise ValueError(f"n and n_grad must be >= 1, got n={n}, n_grad={n_grad}")
        self.metric = metric
        self.sigma = float(sigma)
        self.smoothing = smoothing
        self.denoiser_spec = denoiser if denoiser is None or isinstance(denoiser, str) \
            else getattr(denoiser, "name", type(denoiser).__name__)
        self.denoiser = make_denoiser(denoiser, self.sigma)
        self.n, self.n_grad = int(n), int(n_grad)
        self.clip = bool(clip)
        self.bounds = tuple(float(b) for b in (bounds or metric.score_range))
        if not self.bounds[1] > self.bounds[0]:
            raise ValueError(f"bounds must be (lo, hi) with hi > lo, got {self.bounds}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        kind = {"mean": "rs", "median": "ms"}[smoothing]
        if self.denoiser is not None:
            kind = ("dd" if self.denoiser_spec and str(self.denoiser_spec).startswith("diffusion")
                    else "d") + kind
        self.kind = kind
        self.name = f"{kind}-s{round(self.sigma * 100)}-{metric.name}"
        self.lower_better = metric.lower_better
        self.score_range = metric.score_range
        self.weights = tuple(getattr(metric, "weights", ()))

    # -- devices ------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if self.denoiser is not None and hasattr(self.denoiser, "to"):
            self.denoiser.to(self.metric.device)
        return out

    # -- sampling -----------------------------------------------------------------------
    def base_scores(self, z: Tensor) -> Tensor:
        """``clamp(f(D(clip(z))))`` for a batch of noisy images ``z``: the smoothed function."""
        if self.clip:
            z = z.clamp(0, 1)
        if self.denoiser is not None:
            z = self.denoiser(z)
        return self.metric(z).clamp(*self.bounds)

    def sample(self, x: Tensor, n: int | None = None, *, seed: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``[B, n]`` draws of the clamped base score at ``x + delta``; differentiable when
        gradients are enabled.

        ``seed``: every image draws its noise from its own generator seeded ``seed``, so an
        image's draws do not depend on the batch it comes in (the smoothed score is a function
        of the image). Otherwise ``generator`` (else the global one) draws the batch's noise.
        """
        n = self.n if n is None else int(n)
        if seed is not None:
            if generator is not None:
                raise ValueError("give a seed or a generator, not both")
            return torch.cat([self._draws(x[i:i + 1], n, torch.Generator(
                device=x.device).manual_seed(int(seed))) for i in range(x.shape[0])])
        return self._draws(x, n, generator)

    def _draws(self, x: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        b = x.shape[0]
        total = b * n
        # image i's draws are rows i*n .. i*n + n - 1
        flat_index = torch.arange(total, device=x.device) // n
        out = []
        for start in range(0, total, self.batch_size):
            idx = flat_index[start:start + self.batch_size]
            xi = x[idx]
            noise = torch.randn(xi.shape, generator=generator, device=x.device, dtype=x.dtype)
            out.append(self.base_scores(xi + self.sigma * noise))
        return torch.cat(out).reshape(b, n)

    def reduce(self, samples: Tensor) -> Tensor:
        """The smoothed score from draws ``[B, n]``: their mean or median (``torch.quantile``
        interpolates, so an attack gets a gradient through the two middle draws)."""
        if self.smoothing == "mean":
            return samples.mean(dim=1)
        return torch.quantile(samples, 0.5, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return self.reduce(self.sample(x, self.n_grad))
        return self.reduce(self.sample(x, self.n, seed=self.seed))

    # -- certification ------------------------------------------------------------------
    @torch.no_grad()
    def certify(self, x: Tensor, eps, *, n: int | None = None, alpha: float = GROUP_ALPHA,
                method: str | None = None, seed: int | None = None) -> Certificate:
        """Certified intervals for a batch at the radii ``eps`` (L2, [0,1] image units).

        Draws ``n`` (default: the metric's ``n``) fresh samples per image, seeded ``seed``
        (default: the metric's seed + 1, so they are independent of the scoring draws), then :func:`~iqalib.certify.bounds.certified_interval` with ``method``
        (mean: ``"hoeffding"`` default or ``"cdf"``; median: ``"binomial"`` default or ``"dkw"``).
        """
        check_batch(x)
        x = x.to(self.metric.device)
        n = self.n if n is None else int(n)
        t0 = time.perf_counter()
        draws = self.sample(x, n, seed=self.seed + 1 if seed is None else seed)
        elapsed = time.perf_counter() - t0
        base = torch.cat([self.metric(x[i:i + self.batch_size])
                          for i in range(0, x.shape[0], self.batch_size)])
        return certify_samples(draws, eps, sigma=self.sigma, smoothing=self.smoothing,
                               bounds=self.bounds, alpha=alpha, method=method,
                               base=base, time_per_image_s=elapsed / x.shape[0])

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, sigma={self.sigma}, smoothing={self.smoothing!r}, "
                f"denoiser={self.denoiser!r}, n={self.n}, n_grad={self.n_grad}, clip={self.clip}, "
                f"bounds={self.bounds}, seed={self.seed}")


def certify_samples(samples, eps, *, sigma: float, smoothing: str, bounds: tuple[float, float],
                    alpha: float = GROUP_ALPHA, method: str | None = None, base=None,
                    time_per_image_s: float = float("nan")) -> Certificate:
    """A :class:`Certificate` from draws ``[B, n]`` of the clamped base score (what
    :meth:`SmoothedMetric.sample` returns), so that mean and median smoothing, or several
    methods, can share one set of draws."""
    if method is None:
        method = "hoeffding" if smoothing == "mean" else "binomial"
    s = torch.as_tensor(samples).detach().double().cpu()
    e = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    lower, upper = _bounds.certified_interval(s.numpy(), e, sigma, smoothing=smoothing,
                                              lo=bounds[0], hi=bounds[1], alpha=alpha,
                                              method=method)
    est = (s.mean(dim=1) if smoothing == "mean" else torch.quantile(s, 0.5, dim=1)).numpy()
    base = (np.full(s.shape[0], np.nan) if base is None
            else torch.as_tensor(base).detach().double().cpu().numpy().reshape(-1))
    return Certificate(estimate=est, lower=lower, upper=upper, eps=e, base=base,
                       samples=s.numpy(), sigma=float(sigma), alpha=float(alpha),
                       smoothing=smoothing, method=method, bounds=tuple(bounds),
                       time_per_image_s=float(time_per_image_s),
                       simultaneous=method != "binomial")


_KINDS = {"rs": ("mean", None), "ms": ("median", None), "drs": ("mean", "ffdnet"),
          "dms": ("median", "ffdnet"), "ddrs": ("mean", "diffusion"),
          "ddms": ("median", "diffusion")}
PRESETS = {f"{kind}-s{s}": {"smoothing": sm, "denoiser": dn, "sigma": s / 100}
           for kind, (sm, dn) in _KINDS.items() for s in (12, 25, 50)}
PRESETS.update({kind: {"smoothing": sm, "denoiser": dn} for kind, (sm, dn) in _KINDS.items()})
# the group's estimation budget (their selection draws n0 = 100 only serve the binned variant)
PRESETS.update({f"group-{kind}": {"smoothing": sm, "denoiser": dn, "sigma": GROUP_SIGMA,
                                  "n": GROUP_N} for kind, (sm, dn) in _KINDS.items()})


@METRICS.register("smoothed", aliases=["smoothing"], presets=PRESETS, tags=("certified", "stochastic"))
def smoothed(metric="effnet-iqa", **kwargs) -> SmoothedMetric:
    """A smoothed metric with certified score intervals (randomized / median smoothing, optionally
    denoised); ``metric`` is the base metric's name or object, default ``effnet-iqa``."""
    return SmoothedMetric(metric, **kwargs)


def noise_level_t(sigma: float) -> int:
    """The DDPM timestep the one-shot diffusion denoiser uses for ``sigma`` (see
    :class:`OneShotDiffusionDenoiser`)."""
    return OneShotDiffusionDenoiser(sigma, prior="ffdnet").t


def gaussian_noise_norm(shape, sigma: float) -> float:
    """The typical L2 norm ``sigma * sqrt(d)`` of the smoothing noise on an image of ``shape``
    ``(3, H, W)``: certified radii are a small fraction of it."""
    return float(sigma) * math.sqrt(float(np.prod(shape)))


__all__ = [
    "GROUP_ALPHA",
    "GROUP_N",
    "GROUP_N0",
    "GROUP_SIGMA",
    "PRESETS",
    "Certificate",
    "OneShotDiffusionDenoiser",
    "SmoothedMetric",
    "certify_samples",
    "gaussian_noise_norm",
    "make_denoiser",
    "noise_level_t",
    "smoothed",
]
