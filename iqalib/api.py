"""The public API: load / list metrics, attacks and defenses by name."""
from __future__ import annotations

from typing import Any

from .device import resolve_device
from .registry import ATTACKS, DEFENSES, METRICS


def _ensure_registered() -> None:
    """Register the built-in components, then the user's plugins (entry-point group
    ``iqalib.plugins`` and ``$IQALIB_PLUGINS``; each loads once per process)."""
    # importing the packages runs their @register decorators
    from . import attacks, defenses, metrics  # noqa: F401

    try:
        from .plugins import load_plugins
    except ImportError:  # a checkout without the plugin hook
        return
    load_plugins()


def load_metric(name: str, *, device: str = "auto", **kwargs: Any):
    """A metric by name (``list_metrics()``), in eval mode on ``device``.

    Names pyiqa knows but we do not register are wrapped by the pyiqa adapter.
    """
    _ensure_registered()
    from .metrics import create_metric

    return create_metric(name, **kwargs).to(resolve_device(device)).eval()


def load_attack(name: str, metric, **kwargs: Any):
    """An attack by name against ``metric`` (an :class:`IQAMetric` or a metric name).
    Unknown names and keywords raise with the closest matches and the valid ones."""
    _ensure_registered()
    if isinstance(metric, str):
        metric = load_metric(metric)
    return ATTACKS.create(name, metric=metric, **kwargs)


def load_defense(name: str, *, device: str = "auto", **kwargs: Any):
    """A purifier by name or ``name:preset`` (``list_defenses()``); ``a+b`` composes."""
    _ensure_registered()
    from .defenses import create_defense

    return create_defense(name, **kwargs).to(resolve_device(device))


def list_metrics(pattern: str = "*", *, tag: str | None = None) -> list[str]:
    _ensure_registered()
    return METRICS.names(pattern, tag=tag)


def list_attacks(pattern: str = "*", *, tag: str | None = None) -> list[str]:
    _ensure_registered()
    return ATTACKS.names(pattern, tag=tag)


def list_defenses(pattern: str = "*", *, tag: str | None = None, presets: bool = False) -> list[str]:
    """Purifier names; with ``presets=True`` also every ``name:preset`` of the study's sweeps."""
    _ensure_registered()
    return DEFENSES.specs(pattern) if presets else DEFENSES.names(pattern, tag=tag)

