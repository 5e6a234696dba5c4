"""Count the work a run does instead of guessing it: purifier calls per input, metric calls
per attack.

- :func:`count_purifier_calls` records every call of every purifier (the leaves of a
  composition, so DiffPure inside DiffPure+Unsharp counts as DiffPure) with a hash of each
  input image. A call whose purifier settings and input image were seen before is repeated
  work: ``calls / distinct`` is 1.0 for a run that purifies each input once.
- :class:`CountingMetric` is a cheap differentiable metric that counts its forward passes
  with and without an input gradient, so :func:`attack_network_calls` reads how many metric
  forward(+backward) passes an attack makes per image.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.base import IQAMetric


def _image_digests(x: Tensor) -> list[str]:
    arr = x.detach().float().cpu().contiguous()
    return [hashlib.sha1(arr[i].numpy().tobytes()).hexdigest()[:16] for i in range(arr.shape[0])]


@dataclass
class PurifierCalls:
    """What :func:`count_purifier_calls` saw: per purifier (name + settings), how many images
    it purified and how many of them were distinct."""

    images: collections.Counter = field(default_factory=collections.Counter)
    inputs: dict[tuple[str, str], set] = field(default_factory=lambda: collections.defaultdict(set))

    def record(self, name: str, params: str, x: Tensor) -> None:
        self.images[(name, params)] += int(x.shape[0])
        self.inputs[(name, params)].update(_image_digests(x))

    def table(self) -> list[dict]:
        """One row per purifier: ``purifier``, ``images`` purified, ``distinct`` inputs,
        ``ratio`` = images / distinct (1.0: nothing recomputed)."""
        rows = []
        for (name, params), n in sorted(self.images.items()):
            d = len(self.inputs[(name, params)])
            rows.append({"purifier": name, "params": params, "images": n, "distinct": d,
                         "ratio": n / d if d else float("nan")})
        return rows

    @property
    def ratio(self) -> float:
        """All purifier calls over the distinct (purifier, input) pairs."""
        total = sum(self.images.values())
        distinct = sum(len(v) for v in self.inputs.values())
        return total / distinct if distinct else float("nan")


@contextlib.contextmanager
def count_purifier_calls() -> Iterator[PurifierCalls]:
    """Count every purifier call made in this process while the block runs (a local grid run;
    Dask workers are other processes). Compositions are counted through their parts."""
    from ..defenses.base import Compose, Defense

    calls = PurifierCalls()
    original = Defense.__call__

    def counted(self, x, *args, **kwargs):
        if not isinstance(self, Compose):
            calls.record(self.name, self.params_json() if hasattr(self, "params_json") else "",
                         x)
        return original(self, x, *args, **kwargs)

    Defense.__call__ = counted
    try:
        yield calls
    finally:
        Defense.__call__ = original


class CountingMetric(IQAMetric):
    """A cheap differentiable metric (mean absolute Laplacian, squashed) that counts its
    forward passes: ``grad_calls`` (the input needs a gradient: a forward+backward of an
    attack step) and ``plain_calls`` (scoring only), both in images."""

    name = "counting"
    lower_better = False
    score_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("kernel", k.expand(3, 1, 3, 3).clone())
        self.grad_calls = 0
        self.plain_calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += x.shape[0]
        else:
            self.plain_calls += x.shape[0]
        lap = F.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=3)
        return torch.tanh(8 * lap.abs().mean(dim=(1, 2, 3)))


def attack_network_calls(build_attack, *, size: int = 32, images: int = 1,
                         seed: int = 0) -> dict[str, float]:
    """Metric passes per image of the attack ``build_attack(metric)`` on random images:
    ``{"grad": forward+backward passes, "plain": forward-only passes}``.

    Exact for fixed-length loops (I-FGSM, Adam attacks, AdvCF); MAD-competition's pull-back
    loop depends on the image, so its count is that of these images."""
    metric = CountingMetric()
    attack = build_attack(metric)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, size, size, generator=g)
    attack(x)
    return {"grad": metric.grad_calls / images, "plain": metric.plain_calls / images}


__all__ = ["CountingMetric", "PurifierCalls", "attack_network_calls", "count_purifier_calls"]
