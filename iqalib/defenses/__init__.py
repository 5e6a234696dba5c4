"""Purifiers applied before the metric. Importing this package registers every purifier."""
from ..registry import DEFENSES
from .base import Compose, Defense

from . import transforms, restorers, diffpure, fcn  # noqa: E402,F401

__all__ = ["Defense", "Compose", "DEFENSES"]
