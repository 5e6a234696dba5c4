"""Certified score bounds for IQA metrics (beyond the study: its open question 3).

- :mod:`.bounds` certified intervals and radii from Monte-Carlo samples (Hoeffding, DKW,
  binomial order statistics, Clopper-Pearson), each with its confidence level;
- :mod:`.smoothing` :class:`SmoothedMetric` (mean / median smoothing, optionally denoised by
  FFDNet or a diffusion prior), registered as the metric ``"smoothed"`` with presets;
- :mod:`.attack` the L2 PGD attack with EOT (:class:`PGDL2`) that checks the intervals;
- :mod:`.experiments` what notebook 11 runs: width vs radius and sigma, the attack check, the
  comparison with the empirical purifiers.

The metrics package imports this one (to register ``"smoothed"``) while the attacks package may
still be loading, so :mod:`.attack` and :mod:`.experiments` load on first use.
"""
import importlib

from . import bounds
from .smoothing import Certificate, OneShotDiffusionDenoiser, SmoothedMetric, smoothed

_LAZY = {"PGDL2": "attack", "project_l2": "attack", "attack": None, "experiments": None}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
        return module if _LAZY[name] is None else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PGDL2", "Certificate", "OneShotDiffusionDenoiser", "SmoothedMetric", "bounds",
           "project_l2", "smoothed"]
