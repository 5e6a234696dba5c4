"""Certified score intervals and radii from Monte-Carlo samples of a smoothed metric.

A smoothed metric looks at ``f(x + delta)``, ``delta ~ N(0, sigma^2 I)``. From ``n`` samples of
``f`` at the clean image ``x`` these functions bound what the smoothed score can become at any
``x'`` with ``||x' - x||_2 <= eps``; every bound holds with probability at least ``1 - alpha``
over the draw of the samples (the confidence level ``1 - alpha``; ``alpha`` covers both ends).

Mean smoothing, ``g(x) = E f(x + delta)`` with ``f`` clamped to ``[lo, hi]``:

- the expectation bound (Salman et al., "Provably robust deep learning via adversarially trained
  smoothed classifiers", NeurIPS 2019, Lemma 2; Kumar, Levine, Goldstein & Feizi, "Certifying
  confidence via randomized smoothing", NeurIPS 2020, Theorem 1): ``Phi^-1((g - lo)/(hi - lo))``
  is ``1/sigma``-Lipschitz, so
  ``g(x') in [lo + w Phi(Phi^-1((g_lo - lo)/w) - eps/sigma), lo + w Phi(Phi^-1((g_hi - lo)/w) + eps/sigma)]``
  with ``w = hi - lo`` and ``[g_lo, g_hi]`` a confidence interval of ``g(x)``:
  :func:`hoeffding_interval` (``method="hoeffding"``, distribution-free for bounded ``f``);
- the CDF bound (Kumar et al. 2020, Theorem 2): the same Lipschitz argument applied to every
  level set ``P(f > t)``, with a simultaneous Dvoretzky-Kiefer-Wolfowitz band on the empirical
  CDF (Massart's constant), integrated over ``t`` (``method="cdf"``). Tighter when the samples
  are concentrated.

Median (percentile) smoothing, ``h_p(x)`` = the p-th percentile of ``f(x + delta)`` (Chiang,
Curry, Abdelkader, Kumar, Dickerson & Goldstein, "Detection as regression: certified object
detection by median smoothing", NeurIPS 2020, Theorem 1): for ``||x' - x|| <= eps``,
``h_{p-}(x) <= h_{1/2}(x') <= h_{p+}(x)`` with ``p+- = Phi(+-eps/sigma)``. The percentiles are
bounded by order statistics, either per radius with binomial tail bounds (``method="binomial"``,
as Chiang et al. and the certified-iqa-defenses code do; valid for one ``eps`` chosen in
advance) or simultaneously for every percentile from the DKW band (``method="dkw"``; valid for
all radii at once, which is what a data-dependent radius needs). No boundedness is needed, but a
bound that runs out of samples falls back to ``lo`` / ``hi``.

The certified-iqa-defenses code (Shumitskaya et al., MSU) instead bins the score into 12 classes
and certifies the bin with Cohen et al.'s classifier bound (:func:`bin_certificate`,
Clopper-Pearson).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

#: the failure probability of the certified-iqa-defenses code (alpha = 0.001: 99.9 % confidence)
DEFAULT_ALPHA = 1e-3
MEAN_METHODS = ("hoeffding", "cdf")
MEDIAN_METHODS = ("binomial", "dkw")


def _samples(samples) -> np.ndarray:
    """Samples as a float64 array ``[B, n]`` (a single vector becomes one row)."""
    try:
        import torch

        if torch.is_tensor(samples):
            samples = samples.detach().double().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"samples must be [n] or [B, n] with n >= 1, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("samples contain NaN or Inf: the base metric failed on a noisy image")
    return s


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a failure probability in (0, 1), got {alpha}")
    return float(alpha)


def _eps_array(eps) -> np.ndarray:
    e = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if (e < 0).any() or not np.isfinite(e).all():
        raise ValueError(f"radii eps must be finite and >= 0, got {eps}")
    return e


def _width(lo: float, hi: float) -> float:
    if not hi > lo:
        raise ValueError(f"score bounds must satisfy hi > lo, got ({lo}, {hi})")
    return float(hi - lo)


# -- confidence intervals of the unperturbed quantities ---------------------------------------
def hoeffding_radius(n: int, alpha: float, width: float = 1.0) -> float:
    """Half-width of the two-sided Hoeffding interval of a mean of ``n`` draws in a range of
    ``width``: ``width * sqrt(ln(2/alpha) / (2n))`` (Hoeffding 1963)."""
    return float(width) * math.sqrt(math.log(2 / _check_alpha(alpha)) / (2 * n))


def dkw_epsilon(n: int, alpha: float) -> float:
    """``sup_t |F_n(t) - F(t)| <= sqrt(ln(2/alpha) / (2n))`` with probability ``>= 1 - alpha``
    (Dvoretzky-Kiefer-Wolfowitz inequality with Massart's 1990 tight constant)."""
    return math.sqrt(math.log(2 / _check_alpha(alpha)) / (2 * n))


def hoeffding_interval(samples, lo: float, hi: float, alpha: float = DEFAULT_ALPHA):
    """A ``1 - alpha`` confidence interval ``(lower [B], upper [B])`` of ``E f`` from samples
    of ``f`` in ``[lo, hi]``, clipped to ``[lo, hi]``."""
    s = _samples(samples)
    if (s < lo).any() or (s > hi).any():
        raise ValueError(f"samples leave the declared bounds [{lo}, {hi}]: clamp the metric")
    r = hoeffding_radius(s.shape[1], alpha, _width(lo, hi))
    m = s.mean(axis=1)
    return np.clip(m - r, lo, hi), np.clip(m + r, lo, hi)


def clopper_pearson(k, n: int, alpha: float = DEFAULT_ALPHA, *, side: str = "two-sided"):
    """Exact (Clopper & Pearson 1934) confidence bounds of a binomial proportion from ``k``
    successes in ``n`` trials. ``side="two-sided"`` gives ``(lower, upper)`` at level
    ``1 - alpha``; ``"lower"`` / ``"upper"`` a one-sided ``1 - alpha`` bound (Cohen et al.'s
    ``pA`` lower bound is ``side="lower"``)."""
    alpha = _check_alpha(alpha)
    k = np.asarray(k, dtype=np.float64)
    a = alpha / 2 if side == "two-sided" else alpha
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, stats.beta.ppf(a, k, n - k + 1), 0.0)
        upper = np.where(k < n, stats.beta.ppf(1 - a, k + 1, n - k), 1.0)
    if side == "two-sided":
        return lower, upper
    if side == "lower":
        return lower
    if side == "upper":
        return upper
    raise ValueError(f"side must be 'two-sided', 'lower' or 'upper', got {side!r}")


# -- order statistics as percentile bounds ---------------------------------------------------
def order_statistic_indices(n: int, p, alpha: float, *, method: str = "binomial"):
    """1-based order-statistic indices ``(k_lo, k_hi)`` with ``X_(k_lo) <= q_p <= X_(k_hi)``,
    each side failing with probability ``<= alpha / 2`` (``q_p`` the p-th percentile of the
    sampled distribution). ``k_lo = 0`` means "no lower bound" and ``k_hi = n + 1`` "no upper
    bound" (too few samples for the confidence asked).

    ``method="binomial"``: exact binomial tails for this one ``p`` (the number of samples below
    ``q_p`` is binomial). ``method="dkw"``: from the DKW band, valid for every ``p`` at once.
    """
    alpha = _check_alpha(alpha)
    p = np.atleast_1d(np.asarray(p, dtype=np.float64))
    if ((p <= 0) | (p >= 1)).any():
        raise ValueError(f"percentiles must be in (0, 1), got {p}")
    if method == "dkw":
        e = dkw_epsilon(n, alpha)
        k_lo = np.ceil(n * (p - e) - 1e-9).astype(int)
        k_hi = np.ceil(n * (p + e) - 1e-9).astype(int)
        k_lo = np.where(k_lo < 1, 0, k_lo)
        k_hi = np.where(k_hi > n, n + 1, k_hi)
        return k_lo, k_hi
    if method != "binomial":
        raise ValueError(f"method must be one of {MEDIAN_METHODS}, got {method!r}")
    ks = np.arange(1, n + 1)
    k_lo = np.zeros(p.shape, dtype=int)
    k_hi = np.full(p.shape, n + 1, dtype=int)
    for i, pi in enumerate(p):
        # X_(k) <= q_p  <=>  at least k samples <= q_p: P >= P(Bin(n, p) >= k)
        ok_lo = stats.binom.sf(ks - 1, n, pi) >= 1 - alpha / 2
        if ok_lo.any():
            k_lo[i] = ks[ok_lo].max()
        # X_(k) >= q_p  <=>  fewer than k samples < q_p: P >= P(Bin(n, p) <= k - 1)
        ok_hi = stats.binom.cdf(ks - 1, n, pi) >= 1 - alpha / 2
        if ok_hi.any():
            k_hi[i] = ks[ok_hi].min()
    return k_lo, k_hi


def _pick(sorted_s: np.ndarray, k: np.ndarray, fallback: float) -> np.ndarray:
    """``sorted_s[:, k-1]`` per column of ``k``, ``fallback`` where ``k`` is out of range."""
    n = sorted_s.shape[1]
    inside = (k >= 1) & (k <= n)
    out = np.full((sorted_s.shape[0], k.size), float(fallback))
    if inside.any():
        out[:, inside] = sorted_s[:, k[inside] - 1]
    return out


def percentile_interval(samples, p, alpha: float = DEFAULT_ALPHA, *, method: str = "binomial",
                        lo: float = -np.inf, hi: float = np.inf):
    """``1 - alpha`` bounds ``(lower [B, P], upper [B, P])`` of the p-th percentiles."""
    s = np.sort(_samples(samples), axis=1)
    k_lo, k_hi = order_statistic_indices(s.shape[1], p, alpha, method=method)
    return _pick(s, k_lo, lo), _pick(s, k_hi, hi)


# -- certified intervals ----------------------------------------------------------------------
def _probit_shift(u: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``Phi(Phi^-1(u) + shift)`` with the limits u = 0 -> 0 and u = 1 -> 1 kept exactly."""
    u = np.clip(u, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        z = stats.norm.ppf(u)
    return stats.norm.cdf(z + shift)


def _shifts(eps, sigma: float, batch: int, paired: bool) -> np.ndarray:
    """``eps / sigma`` as ``[1, E]`` (every radius for every image) or ``[B, 1]`` (``paired``:
    image i at its own radius ``eps[i]``)."""
    e = _eps_array(eps)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if paired:
        if e.size != batch:
            raise ValueError(f"paired radii need one eps per image ({batch}), got {e.size}")
        return (e / float(sigma))[:, None]
    return (e / float(sigma))[None, :]


def mean_interval(samples, eps, sigma: float, lo: float, hi: float,
                  alpha: float = DEFAULT_ALPHA, *, method: str = "hoeffding",
                  paired: bool = False):
    """Certified interval of the mean-smoothed score: ``(lower [B, E], upper [B, E])`` such
    that ``g(x') in [lower, upper]`` for every ``||x' - x||_2 <= eps`` (one column per radius),
    with probability ``>= 1 - alpha`` for all radii at once. Samples are ``f(x + delta)`` in
    ``[lo, hi]``; ``method`` is ``"hoeffding"`` or ``"cdf"`` (see the module docstring).
    ``paired=True``: ``eps`` holds one radius per image and the result is ``[B, 1]``."""
    s = _samples(samples)
    w = _width(lo, hi)
    if (s < lo).any() or (s > hi).any():
        raise ValueError(f"samples leave the declared bounds [{lo}, {hi}]: clamp the metric")
    shift = _shifts(eps, sigma, s.shape[0], paired)
    if method == "hoeffding":
        g_lo, g_hi = hoeffding_interval(s, lo, hi, alpha)
        lower = lo + w * _probit_shift((g_lo[:, None] - lo) / w, -shift)
        upper = lo + w * _probit_shift((g_hi[:, None] - lo) / w, shift)
        return lower, upper
    if method != "cdf":
        raise ValueError(f"method must be one of {MEAN_METHODS}, got {method!r}")
    n = s.shape[1]
    d = dkw_epsilon(n, alpha)
    srt = np.sort(s, axis=1)
    # E f = lo + int_lo^hi P(f > t) dt; on [t_j, t_j+1) the empirical P(f > t) is (n - j) / n
    knots = np.concatenate([np.full((s.shape[0], 1), lo), srt, np.full((s.shape[0], 1), hi)], 1)
    seg = np.diff(knots, axis=1)[:, :, None]                       # [B, n + 1, 1]
    tail = (n - np.arange(n + 1)) / n                              # [n + 1]
    p_lo = np.clip(tail - d, 0.0, 1.0)[None, :, None]
    p_hi = np.clip(tail + d, 0.0, 1.0)[None, :, None]
    sh = shift[:, None, :]                                         # [1 or B, 1, E or 1]
    lower = lo + (seg * _probit_shift(p_lo, -sh)).sum(axis=1)
    upper = lo + (seg * _probit_shift(p_hi, sh)).sum(axis=1)
    return lower, upper


def median_interval(samples, eps, sigma: float, alpha: float = DEFAULT_ALPHA, *,
                    method: str = "binomial", lo: float = -np.inf, hi: float = np.inf,
                    paired: bool = False):
    """Certified interval of the median-smoothed score (Chiang et al. 2020):
    ``(lower [B, E], upper [B, E])`` with ``h_{1/2}(x') in [lower, upper]`` for every
    ``||x' - x||_2 <= eps``. ``method="binomial"`` holds with probability ``1 - alpha`` for each
    radius separately, ``"dkw"`` for all radii at once. ``lo`` / ``hi``: the value reported where
    the samples cannot certify a side (the metric's clamp bounds). ``paired`` as in
    :func:`mean_interval`."""
    s = np.sort(_samples(samples), axis=1)
    b, n = s.shape
    shift = _shifts(eps, sigma, b, paired)
    # a percentile of exactly 0 or 1 (huge eps / sigma) has no bound: keep it inside (0, 1) and
    # let the order-statistic search fail, which reports lo / hi
    p_minus = np.clip(stats.norm.cdf(-shift), 1e-300, 1 - 1e-16)
    p_plus = np.clip(stats.norm.cdf(shift), 1e-300, 1 - 1e-16)
    k_lo, _ = order_statistic_indices(n, p_minus.ravel(), alpha, method=method)
    _, k_hi = order_statistic_indices(n, p_plus.ravel(), alpha, method=method)
    if not paired:
        return _pick(s, k_lo, lo), _pick(s, k_hi, hi)
    rows = np.arange(b)
    lower = np.where((k_lo >= 1) & (k_lo <= n), s[rows, np.clip(k_lo, 1, n) - 1], lo)
    upper = np.where((k_hi >= 1) & (k_hi <= n), s[rows, np.clip(k_hi, 1, n) - 1], hi)
    return lower[:, None], upper[:, None]


def certified_interval(samples, eps, sigma: float, *, smoothing: str = "mean",
                       lo: float, hi: float, alpha: float = DEFAULT_ALPHA,
                       method: str | None = None, paired: bool = False):
    """One entry point: ``smoothing="mean"`` (methods hoeffding / cdf, default hoeffding) or
    ``"median"`` (binomial / dkw, default binomial). Returns ``(lower [B, E], upper [B, E])``."""
    if smoothing == "mean":
        return mean_interval(samples, eps, sigma, lo, hi, alpha, method=method or "hoeffding",
                             paired=paired)
    if smoothing == "median":
        return median_interval(samples, eps, sigma, alpha, method=method or "binomial",
                               lo=lo, hi=hi, paired=paired)
    raise ValueError(f"smoothing must be 'mean' or 'median', got {smoothing!r}")


def certified_radius(samples, tolerance: float, sigma: float, *, smoothing: str = "mean",
                     lo: float, hi: float, alpha: float = DEFAULT_ALPHA,
                     method: str | None = None, max_eps: float | None = None,
                     iters: int = 40) -> np.ndarray:
    """The certified radius for a tolerance: per image (``[B]``) the largest ``eps`` with
    ``upper(eps) - lower(eps) <= tolerance``.

    The certified intervals grow with ``eps`` and contain the clean smoothed score (``eps = 0``
    is inside every ball), so within this radius the smoothed score cannot move by more than
    ``tolerance`` from its clean value. Bisection to ``max_eps * 2**-iters`` (``max_eps``
    defaults to ``4 sigma``: beyond it Phi(eps / sigma) is 1 to 5 digits); 0 where even
    ``eps = 0`` is wider than the tolerance. The radius is chosen from the data, so the
    default methods here are the ones valid for all radii at once: ``hoeffding`` for mean
    smoothing, ``dkw`` for median smoothing.
    """
    s = _samples(samples)
    b = s.shape[0]
    if method is None:
        method = "hoeffding" if smoothing == "mean" else "dkw"
    max_eps = 4.0 * float(sigma) if max_eps is None else float(max_eps)

    def width(e: np.ndarray) -> np.ndarray:
        lower, upper = certified_interval(s, e, sigma, smoothing=smoothing, lo=lo, hi=hi,
                                          alpha=alpha, method=method, paired=True)
        return (upper - lower)[:, 0]

    left, right = np.zeros(b), np.full(b, max_eps)
    for _ in range(iters):
        mid = (left + right) / 2
        good = width(mid) <= tolerance
        left = np.where(good, mid, left)
        right = np.where(good, right, mid)
    out = np.where(width(np.zeros(b)) <= tolerance, left, 0.0)
    return np.where(width(np.full(b, max_eps)) <= tolerance, max_eps, out)


def score_bins(score_range: Sequence[float], n_bins: int = 10) -> np.ndarray:
    """The certified-iqa-defenses binning: ``n_bins`` equal bins over the metric's range plus
    one below and one above (12 classes for ``n_bins = 10``); returns the ``n_bins + 1`` edges."""
    lo, hi = float(score_range[0]), float(score_range[1])
    _width(lo, hi)
    return np.linspace(lo, hi, n_bins + 1)


def bin_certificate(select_samples, samples, edges: np.ndarray, sigma: float,
                    alpha: float = DEFAULT_ALPHA):
    """Cohen, Rosenfeld & Kolter (ICML 2019) CERTIFY on the binned score, as the
    certified-iqa-defenses code does: the top bin of ``select_samples`` (their n0 = 100), its
    count among ``samples`` (n = 1000), a one-sided Clopper-Pearson lower bound ``pA`` at level
    ``1 - alpha`` and the radius ``sigma * Phi^-1(pA)`` within which the smoothed (majority)
    bin cannot change; abstain (bin -1, radius 0) when ``pA < 1/2``.

    Bins: 0 is ``score <= edges[0]``, ``i`` is ``(edges[i-1], edges[i]]``, ``len(edges)`` is
    above ``edges[-1]``. Returns ``(bin [B], radius [B])``.
    """
    sel, s = _samples(select_samples), _samples(samples)
    classes = len(edges) + 1
    bins_sel = np.searchsorted(edges, sel, side="left")
    bins = np.searchsorted(edges, s, side="left")
    top = np.array([np.bincount(r, minlength=classes).argmax() for r in bins_sel])
    count = (bins == top[:, None]).sum(axis=1)
    p_a = clopper_pearson(count, s.shape[1], alpha, side="lower")
    radius = np.where(p_a >= 0.5, sigma * stats.norm.ppf(np.clip(p_a, 0.5, 1 - 1e-16)), 0.0)
    return np.where(p_a >= 0.5, top, -1), radius


__all__ = [
    "DEFAULT_ALPHA",
    "MEAN_METHODS",
    "MEDIAN_METHODS",
    "bin_certificate",
    "certified_interval",
    "certified_radius",
    "clopper_pearson",
    "dkw_epsilon",
    "hoeffding_interval",
    "hoeffding_radius",
    "mean_interval",
    "median_interval",
    "order_statistic_indices",
    "percentile_interval",
    "score_bins",
]
