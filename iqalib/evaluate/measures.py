"""The study's measures: per image, then averaged (arXiv 2404.06957, "Measures").

Score measures take arrays of scores (torch tensors, numpy arrays or lists; ``[N]``):

- :func:`gain` ``|f(clean) - f(purified attacked)| / |f(clean)|`` (lower is better). It divides by
  the clean score, so it explodes for metrics whose scores sit near or cross zero (BRISQUE);
  always report :func:`abs_gain_norm` beside it.
- :func:`abs_gain_norm` ``|f(clean) - f(purified attacked)| / (hi - lo)`` with the metric's
  normalisation range ``score_range = (lo, hi)``.
- :func:`srocc` / :func:`plcc` across images (scipy.stats.spearmanr / pearsonr); NaN, not an
  error and not a warning, when fewer than two finite pairs remain or either side is constant.
- :func:`robustness_score` the MSU metrics-robustness benchmark's
  ``R = log10(max(1 - s, s) / (|s - s'| + eps))`` on min-max scaled scores, ``eps = 1e-6`` as in
  the benchmark's ``score_methods.py`` (Antsiferova et al., 2024); the scaler is fitted on the
  clean scores unless a fixed ``score_range`` is given.
- :func:`clean_cost` what a purifier does to clean inputs: ``f(clean)`` vs ``f(purify(clean))``.

Image measures take batches ``[B,3,H,W]`` in [0,1] and return ``[B]`` (float64, CPU):

- :func:`psnr` ``10 log10(1 / MSE)``, capped at :data:`PSNR_CAP` = 150 dB, which is also the
  value where the images are identical (MSE = 0), so Q stays finite (the study's convention).
- :func:`ssim` Wang et al. (2004) SSIM computed with ``kornia.metrics.ssim`` on the RGB channels:
  11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, 'valid' padding
  (border pixels whose window leaves the image are not averaged), mean over channels and pixels.
  This is what ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)`` computes; the tests check it.
- :func:`q_score` ``Q = (SSIM + PSNR / 80) / 2``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: PSNR cap in dB: the value reported for identical images (MSE = 0) and the ceiling otherwise
PSNR_CAP = 150.0
#: the MSU benchmark's epsilon in the robustness score's denominator
ROBUSTNESS_EPS = 1e-6
#: SSIM window (Wang et al. 2004)
SSIM_WINDOW = 11


def _np(x) -> np.ndarray:
    """Scores as a float64 numpy vector."""
    if torch.is_tensor(x):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _np(a), _np(b)
    if a.shape != b.shape:
        raise ValueError(f"score arrays differ in length: {a.shape[0]} vs {b.shape[0]}")
    return a, b


def _width(score_range: Sequence[float]) -> float:
    lo, hi = float(score_range[0]), float(score_range[1])
    if not hi > lo:
        raise ValueError(f"score_range must be (lo, hi) with hi > lo, got {score_range}")
    return hi - lo


# -- score measures ------------------------------------------------------------
def gain(clean, purified) -> np.ndarray:
    """Per-image gain ``|f(clean) - f(purified)| / |f(clean)|`` (the paper's Gain; lower is better).

    Where ``f(clean) == 0`` the gain is ``inf`` (``0`` if the purified score is also 0): it is
    undefined there, which is why :func:`abs_gain_norm` is reported beside it.
    """
    c, p = _pair(clean, purified)
    diff = np.abs(c - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / np.abs(c)
    out[(c == 0) & (diff == 0)] = 0.0
    return out


def abs_gain_norm(clean, purified, score_range: Sequence[float]) -> np.ndarray:
    """Per-image ``|f(clean) - f(purified)| / (hi - lo)``; ``score_range`` is the metric's
    normalisation range (``IQAMetric.score_range``)."""
    c, p = _pair(clean, purified)
    return np.abs(c - p) / _width(score_range)


def _finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _pair(a, b)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _correlation(fn, a, b) -> float:
    a, b = _finite_pairs(a, b)
    # a correlation is undefined for < 2 points or a constant side: say so with NaN
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(a, b)[0])


def srocc(a, b) -> float:
    """Spearman rank-order correlation between two score arrays (scipy.stats.spearmanr).

    Non-finite pairs are dropped; NaN when fewer than 2 pairs remain or either side is constant.
    """
    from scipy.stats import spearmanr

    return _correlation(spearmanr, a, b)


def plcc(a, b) -> float:
    """Pearson linear correlation (scipy.stats.pearsonr); same NaN rules as :func:`srocc`."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, a, b)


def minmax_scale(clean, other, score_range: Sequence[float] | None = None):
    """Scale both arrays by ``score_range`` or, if None, by the clean scores' min and max
    (sklearn's MinMaxScaler fitted on the clean scores, as the MSU benchmark does)."""
    c, o = _pair(clean, other)
    if score_range is None:
        lo, hi = (float(c.min()), float(c.max())) if c.size else (0.0, 1.0)
        width = hi - lo if hi > lo else 1.0  # sklearn maps a constant feature with scale 1
    else:
        lo, width = float(score_range[0]), _width(score_range)
    return (c - lo) / width, (o - lo) / width


def robustness_score(clean, attacked, *, score_range: Sequence[float] | None = None,
                     eps: float = ROBUSTNESS_EPS) -> np.ndarray:
    """Per-image robustness score of the MSU metrics-robustness benchmark (Antsiferova et al.,
    "Comparing the robustness of modern no-reference image- and video-quality metrics to
    adversarial attacks", AAAI 2024): ``R = log10(max(1 - s, s) / (|s - s'| + eps))`` with ``s``,
    ``s'`` the min-max scaled clean and attacked (or purified attacked) scores; higher = more
    robust. Defaults: ``eps = 1e-6``, scaler fitted on the clean scores.
    """
    s, s2 = minmax_scale(clean, attacked, score_range)
    return np.log10(np.maximum(1.0 - s, s) / (np.abs(s - s2) + eps))


def clean_cost(clean, purified_clean, score_range: Sequence[float]) -> dict[str, float]:
    """What a purifier does to clean images: mean gain, mean normalised absolute change and
    SROCC / PLCC between ``f(clean)`` and ``f(purify(clean))`` (a purifier must not hurt them)."""
    return {
        "gain": float(np.mean(gain(clean, purified_clean))),
        "abs_gain_norm": float(np.mean(abs_gain_norm(clean, purified_clean, score_range))),
        "srocc": srocc(clean, purified_clean),
        "plcc": plcc(clean, purified_clean),
    }


# -- image measures --------------------------------------------------------------
def _images(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}; "
                         "resize the purified batch to the clean one first (see match_size)")
    if x.ndim != 4:
        raise ValueError(f"expected [B,C,H,W] batches, got {tuple(x.shape)}")
    y = y.to(x.device)
    return x.double(), y.double()


def match_size(purified: Tensor, like: Tensor) -> Tensor:
    """Bilinear (antialiased) resize of ``purified`` to ``like``'s size, for purifiers that
    change the size (random crop, resize): PSNR/SSIM need equal shapes."""
    if purified.shape[-2:] == like.shape[-2:]:
        return purified
    return F.interpolate(purified, size=like.shape[-2:], mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def psnr(x: Tensor, y: Tensor, *, data_range: float = 1.0, cap: float = PSNR_CAP) -> Tensor:
    """Per-image PSNR in dB (``[B]`` float64, CPU), capped at ``cap`` = 150, also where MSE = 0."""
    x, y = _images(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        val = 10 * torch.log10(data_range ** 2 / mse)  # inf where mse == 0
    return val.clamp(max=cap).nan_to_num(nan=cap).cpu()


def ssim(x: Tensor, y: Tensor, *, window_size: int = SSIM_WINDOW, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (``[B]`` float64, CPU): kornia's Gaussian-window SSIM (sigma 1.5), 'valid'
    padding, averaged over RGB channels and pixels. Images smaller than the window use the
    largest odd window that fits."""
    import kornia

    x, y = _images(x, y)
    win = min(window_size, x.shape[-1], x.shape[-2])
    win = win if win % 2 else win - 1
    if win < 1:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for SSIM")
    with torch.no_grad():
        # kornia's sigma is fixed at 1.5 for its Gaussian window, as in Wang et al.
        m = kornia.metrics.ssim(x, y, win, max_val=data_range, padding="valid")
    return m.flatten(1).mean(1).cpu()


def q_score(ssim_value, psnr_value):
    """``Q = (SSIM + PSNR / 80) / 2`` (the paper's combined fidelity score; PSNR capped at 150)."""
    if torch.is_tensor(ssim_value) or torch.is_tensor(psnr_value):
        return (torch.as_tensor(ssim_value) + torch.as_tensor(psnr_value) / 80.0) / 2.0
    return (np.asarray(ssim_value, dtype=np.float64)
            + np.asarray(psnr_value, dtype=np.float64) / 80.0) / 2.0


__all__ = [
    "PSNR_CAP",
    "ROBUSTNESS_EPS",
    "abs_gain_norm",
    "clean_cost",
    "gain",
    "match_size",
    "minmax_scale",
    "plcc",
    "psnr",
    "q_score",
    "robustness_score",
    "srocc",
    "ssim",
]



def score_change(clean, other, *, score_range: Sequence[float], lower_better: bool) -> np.ndarray:
    """The oriented, normalised score change ``sign * (other - clean) / (hi - lo)``: positive
    when ``other`` scores better than ``clean`` (``sign = -1`` for lower-is-better metrics),
    in units of the metric's range ``score_range = (lo, hi)``. For an attack it is what the
    attack gained; for a purifier on clean images, what it cost (negative = worse)."""
    a, b = _pair(clean, other)
    sign = -1.0 if lower_better else 1.0
    return sign * (b - a) / _width(score_range)


__all__.append("score_change")
