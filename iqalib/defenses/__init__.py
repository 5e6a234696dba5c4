"""Purifiers applied before the metric. Importing this package registers every purifier."""
from ..registry import DEFENSES
from .base import Compose, Defense

from . import transforms, restorers, diffpure, fcn  # noqa: F401
from .transforms import Identity


def create_defense(spec: str, **kwargs) -> Defense:
    """A purifier from a registry spec: ``"jpeg"``, ``"jpeg:q30"`` or a composition
    ``"diffpure:t10+unsharp"`` (applied left to right, :class:`Compose`).

    Keyword settings go to a single purifier; for a composition they would be ambiguous, so
    use presets there or build ``Compose([create_defense(...), ...])`` yourself.
    """
    parts = [p.strip() for p in str(spec).split("+")]
    if len(parts) > 1 and kwargs:
        raise TypeError(f"keyword settings are ambiguous for the composition {spec!r}: use presets "
                        "('diffpure:t10+jpeg:q30') or Compose([create_defense(...), ...])")
    made = [DEFENSES.create(p, **kwargs) for p in parts]
    return made[0] if len(made) == 1 else Compose(made)


def is_baseline(spec_or_defense) -> bool:
    """True for the undefended baseline: the spec ``"identity"`` or any of its registry aliases
    (``"none"``, ``"no-defense"``, ...), or an :class:`~iqalib.defenses.transforms.Identity`.
    Unknown names are not the baseline (False, no error)."""
    from .transforms import Identity

    if isinstance(spec_or_defense, Identity):
        return True
    spec = getattr(spec_or_defense, "spec", spec_or_defense)  # a grid Component
    if not isinstance(spec, str) or "+" in spec:
        return False
    name, _, preset = spec.strip().partition(":")
    if preset or name not in DEFENSES:
        return False
    return DEFENSES.entry(name).factory is Identity


__all__ = ["Defense", "Compose", "DEFENSES", "Identity", "create_defense", "is_baseline"]
