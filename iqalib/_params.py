"""Keyword hyperparameters shared by attacks and defenses: repr and a JSON-able record."""
from __future__ import annotations

import json
import math
from typing import Any


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 10) if math.isfinite(v) else str(v)
    if isinstance(v, (int, bool, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return repr(v)


class HasParams:
    """Mixin: ``self.hparams`` holds the keyword hyperparameters a run must record."""

    name: str = "?"
    hparams: dict[str, Any]

    def _set_params(self, **params: Any) -> None:
        self.hparams = dict(params)
        for k, v in params.items():
            setattr(self, k, v)

    def params_json(self) -> str:
        """Canonical JSON of the hyperparameters: the results table's ``*_params`` column."""
        return json.dumps(_jsonable(getattr(self, "hparams", {})), sort_keys=True)

    def __repr__(self) -> str:
        def fmt(v):
            return f"{v:.6g}" if isinstance(v, float) else repr(v)
        args = ", ".join(f"{k}={fmt(v)}" for k, v in getattr(self, "hparams", {}).items())
        return f"{type(self).__name__}({args})"
