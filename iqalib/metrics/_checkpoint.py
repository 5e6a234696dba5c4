"""Checkpoint loading shared by the metrics that carry their own weights.

Every pretrained metric reads its checkpoint either from the catalogue
(:func:`iqalib.weights.load_state`, which names the ``make weights WEIGHTS=<name>`` target when
the file is absent) or from an explicit ``checkpoint=`` path / dict, and loads it with strict
key checks: a checkpoint with missing or renamed keys is an error that lists them, never a
half-initialised network that silently scores nonsense.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import IqalibError


class CheckpointMismatchError(IqalibError, RuntimeError):
    """A checkpoint's keys or shapes do not fit the network it is loaded into."""


def read_checkpoint(name: str, checkpoint: str | os.PathLike | Mapping | None) -> Any:
    """The checkpoint object: ``checkpoint`` if given (a path or an already loaded dict),
    else the catalogue entry ``name`` (raises MissingWeightsError naming its make target)."""
    if checkpoint is None:
        from .. import weights  # lazy: the catalogue module is optional at import time

        return weights.load_state(name)
    if isinstance(checkpoint, Mapping):
        return checkpoint
    path = os.fspath(checkpoint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # old checkpoints pickle numpy scalars (LinearityIQA's k and b): allow numpy only
        from .. import weights

        if "Weights only load failed" not in str(exc):
            raise
        with torch.serialization.safe_globals(weights._numpy_safe_globals(path)):
            return torch.load(path, map_location="cpu", weights_only=True)


def describe(label: str, name: str, source: Any) -> str:
    """How error messages name a checkpoint: ``"SPAQ checkpoint 'spaq-baseline'"`` for the
    catalogue's file, else the path given, or ``(dict)`` for an already-loaded checkpoint."""
    where = (f"'{name}'" if source is None else
             "(dict)" if isinstance(source, Mapping) else str(source))
    return f"{label} checkpoint {where}"


def _fmt(keys: list[str], limit: int = 8) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the problem."""
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{what}: expected a state dict, got {type(state).__name__}")
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                    if k in state and torch.is_tensor(state[k]) and state[k].shape != v.shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_fmt(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_fmt(shapes)}")
        raise CheckpointMismatchError(
            f"{what} does not fit the network ({'; '.join(parts)}). Is it the right file? "
            "Re-fetch it with `make weights` or check the layout in WEIGHTS.md.")
    module.load_state_dict(state, strict=True)


def require(ckpt: Any, key: str, what: str) -> Any:
    """``ckpt[key]`` with a clear error when the checkpoint is not laid out as expected."""
    if not isinstance(ckpt, Mapping) or key not in ckpt:
        have = list(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointMismatchError(f"{what}: expected a dict with key {key!r}, found {have}")
    return ckpt[key]
