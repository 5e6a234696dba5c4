"""Where iqalib keeps data, weights, caches, results and figures.

Inside a checkout the project's own ``data/`` and ``figures/`` folders are used; an installed
package falls back to the user's cache directory, ``$XDG_CACHE_HOME/iqalib`` (default
``~/.cache/iqalib``). Environment variables override each location:
``IQALIB_DATA``, ``IQALIB_WEIGHTS``, ``IQALIB_CACHE``, ``IQALIB_RESULTS``, ``IQALIB_FIGURES``.
"""
from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_CHECKOUT = _PKG.parent if (_PKG.parent / "pyproject.toml").exists() else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/iqalib`` (``~/.cache/iqalib`` when unset): an installed package's home."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "iqalib"


def _base() -> Path:
    return _CHECKOUT if _CHECKOUT is not None else user_cache_dir()


def data_dir() -> Path:
    return Path(os.environ.get("IQALIB_DATA", _base() / "data"))


def weights_dir() -> Path:
    return Path(os.environ.get("IQALIB_WEIGHTS", data_dir() / "weights"))


def cache_dir() -> Path:
    """Files converted or trained on first use (BRISQUE/NIQE parameters, learned heads)."""
    return Path(os.environ.get("IQALIB_CACHE", data_dir() / "cache"))


def results_dir() -> Path:
    return Path(os.environ.get("IQALIB_RESULTS", data_dir() / "results"))


def figures_dir() -> Path:
    return Path(os.environ.get("IQALIB_FIGURES", _base() / "figures"))


def assets_dir() -> Path:
    """Small files shipped inside the package (trained FCN filter, learned-metric head)."""
    return _PKG / "assets"
