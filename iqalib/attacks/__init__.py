"""Attacks that raise a metric's score. Importing this package registers every attack."""
from ..registry import ATTACKS
from .base import Attack, eval_mode, project_linf, quantise

from . import gradient, korhonen, madc, ssah, zhang, advcf, uap, adaptive  # noqa: F401

__all__ = ["Attack", "ATTACKS", "eval_mode", "project_linf", "quantise"]
