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

Image measures take batches ``[B,3,H,W]`` in [0,1] and return ``[B]`` (float64, CPU). They
follow the authors' evaluation code (``test.py`` of wianluna/adversarial_purification and
``metrics.py`` of msu-video-group/adversarial-defenses-for-iqa, both scikit-image):

- :func:`psnr` ``10 log10(1 / MSE)`` (``skimage.metrics.peak_signal_noise_ratio``,
  ``data_range=1``). Where the images are identical (MSE = 0) skimage gives inf; we give
  :data:`PSNR_CAP` = 150 dB there, the value the authors' ``test.py`` substitutes, so Q stays
  finite. Everywhere else the value is skimage's, uncapped.
- :func:`ssim` ``skimage.metrics.structural_similarity(x, y, channel_axis=2, data_range=1)``
  with skimage's defaults, as the authors call it: a 7x7 uniform window, sample covariance
  (``N / (N - 1)``), K1 = 0.01, K2 = 0.03, the 3-pixel border whose window leaves the image
  dropped, mean over pixels then channels. ``window="gaussian"`` gives Wang et al.'s (2004)
  11x11 Gaussian window (sigma 1.5, population covariance), as kornia and
  ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` compute it.
- :func:`match_size` resizes a purifier's output back to the clean image's size before PSNR /
  SSIM, as the authors' evaluation does with ``torchvision.transforms.Resize((h, w))`` on
  tensors: bilinear, ``align_corners=False``, no antialiasing (the tensor default of the
  torchvision versions they pinned, 0.14 / 0.15).
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
#: the Gaussian SSIM window's size (Wang et al. 2004)
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
    """``purified`` resized to ``like``'s size for PSNR / SSIM (purifiers that change the size:
    random crop, resize, Real-ESRGAN's x4 output): bilinear, ``align_corners=False``, no
    antialiasing, i.e. ``torchvision.transforms.Resize((h, w))`` on tensors in the torchvision
    versions the authors pinned. Same-size batches are returned as they are."""
    if purified.shape[-2:] == like.shape[-2:]:
        return purified
    return F.interpolate(purified, size=like.shape[-2:], mode="bilinear", align_corners=False,
                         antialias=False).clamp(0, 1)


def psnr(x: Tensor, y: Tensor, *, data_range: float = 1.0, cap: float = PSNR_CAP) -> Tensor:
    """Per-image PSNR in dB (``[B]`` float64, CPU): skimage's ``peak_signal_noise_ratio``,
    except that identical images (MSE = 0, where skimage gives inf) get ``cap`` = 150."""
    x, y = _images(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    with torch.no_grad():
        val = 10 * torch.log10(data_range ** 2 / mse.clamp_min(torch.finfo(mse.dtype).tiny))
        val = torch.where(mse == 0, torch.full_like(val, cap), val)
    return val.cpu()


#: the SSIM windows :func:`ssim` offers
SSIM_WINDOWS = ("uniform", "gaussian")


def _ssim_uniform(x: Tensor, y: Tensor, win: int, data_range: float) -> Tensor:
    # skimage's default path: box filter of `win` pixels, sample covariance, 'valid' region
    n = win * win
    cov_norm = n / (n - 1)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    means = F.avg_pool2d(maps, win, stride=1)
    mx, my, mxx, myy, mxy = means.split(x.shape[1], dim=1)
    vx, vy = cov_norm * (mxx - mx * mx), cov_norm * (myy - my * my)
    vxy = cov_norm * (mxy - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


def ssim(x: Tensor, y: Tensor, *, window: str = "uniform", window_size: int | None = None,
         data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (``[B]`` float64, CPU), averaged over pixels and the RGB channels.

    ``window="uniform"`` (default): scikit-image's ``structural_similarity`` with its defaults
    (7x7 box window, sample covariance), what the authors' ``test.py`` reports.
    ``window="gaussian"``: Wang et al.'s 11x11 Gaussian window (sigma 1.5, population
    covariance) through ``kornia.metrics.ssim``. ``window_size`` overrides the size (odd).
    Images smaller than the window use the largest odd window that fits (skimage would raise).
    """
    if window not in SSIM_WINDOWS:
        raise ValueError(f"ssim window must be one of {SSIM_WINDOWS}, got {window!r}")
    x, y = _images(x, y)
    size = window_size or (7 if window == "uniform" else SSIM_WINDOW)
    win = min(int(size), x.shape[-1], x.shape[-2])
    win = win if win % 2 else win - 1
    if win < 1 or (window == "uniform" and win < 2):
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for SSIM")
    with torch.no_grad():
        if window == "uniform":
            return _ssim_uniform(x, y, win, data_range).cpu()
        import kornia

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
    "SSIM_WINDOWS",
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
