"""The one chunked loop over a batch: score, purify and attack, with timing and size matching.

Every place that runs a component over many images (the grid, the small experiments, the
interactive view, the benchmark) goes through these three functions, so chunking, devices,
timing and the input contract are written once:

- :func:`score` ``metric(x)`` in chunks, without gradients, as float64 numpy ``[N]``. A
  non-finite score (BRISQUE gives NaN on a flat image) raises :class:`NonFiniteScoreError`
  naming the images, unless ``allow_nonfinite=True``.
- :func:`purify` ``defense(x)`` in chunks -> :class:`Purified` (``.images`` resized back to
  ``like``'s size when the purifier changes the size, ``.raw`` as produced, seconds per image).
  A stochastic purifier draws from a generator seeded with ``seed`` at every chunk (the same
  convention as ``Defense.__call__``), or from ``generator`` when one is given.
- :func:`attack` ``attack(x)`` in chunks -> :class:`Attacked` (images, seconds per image).

Timing synchronises CUDA once per chunk (not per step), so it measures the chunk's work and
leaves the kernels queued inside it alone. On a GPU, inputs are copied from pinned memory with
``non_blocking=True``, and ``batch_size="auto"`` picks a chunk from the free memory
(:func:`auto_batch_size`). The CPU path is the same code.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import IqalibError
from ..fingerprint import code_digest, sha, tensor_digest
from ..metrics.base import check_images
from . import measures


class NonFiniteScoreError(IqalibError, ValueError):
    """A metric returned NaN or Inf for some images (``.positions``, ``.ids`` name them).

    BRISQUE's fit, for example, is undefined on a flat image. Such a score is a failure of
    that image, never a stored number."""

    def __init__(self, message: str, positions: Sequence[int] = (), ids: Sequence[str] = (),
                 scores: np.ndarray | None = None):
        super().__init__(message)
        self.positions = list(positions)
        self.ids = list(ids)
        self.scores = scores


# -- devices and chunk sizes -------------------------------------------------------------
def device_of(component: Any) -> torch.device | None:
    """Where a component's tensors live: ``.device`` when it has one (metrics, defenses that
    were moved), else its first parameter's device, else None (it follows its input)."""
    dev = getattr(component, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    params = getattr(component, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return None


def to_device(x: Tensor, device: torch.device | None) -> Tensor:
    """``x`` on ``device``: from pinned memory with a non-blocking copy when it goes to a GPU."""
    if device is None or x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def auto_batch_size(x: Tensor, device: torch.device | None, *, default: int = 4,
                    bytes_per_pixel: float = 12_000.0, limit: int = 256) -> int:
    """A chunk size from the free GPU memory: ``free / (pixels * bytes_per_pixel)``.

    ``bytes_per_pixel`` is a conservative allowance for activations and gradients of one image
    pixel through a large network (about 12 kB for a ResNeXt-101 forward+backward at 299 px,
    measured as peak memory / pixels); a component that knows better sets its own
    ``bytes_per_pixel`` attribute. On the CPU (or with no device) it returns ``default``."""
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return int(default)
    free, _ = torch.cuda.mem_get_info(device)
    pixels = int(x.shape[-1]) * int(x.shape[-2])
    n = int(0.8 * free / max(1.0, pixels * bytes_per_pixel))
    return max(1, min(limit, n, len(x)))


def resolve_batch_size(batch_size: int | str, x: Tensor, component: Any, *, default: int) -> int:
    """``batch_size`` as an int >= 1; ``"auto"`` asks :func:`auto_batch_size`."""
    if batch_size == "auto":
        bpp = float(getattr(component, "bytes_per_pixel", 12_000.0))
        return auto_batch_size(x, device_of(component), default=default, bytes_per_pixel=bpp)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return int(batch_size)


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# -- scoring -----------------------------------------------------------------------------
def check_scores(scores: np.ndarray, *, ids: Sequence[str] | None = None,
                 what: str = "metric") -> np.ndarray:
    """Raise :class:`NonFiniteScoreError` if any score is NaN or Inf, naming the images."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        names = [str(ids[i]) for i in bad] if ids is not None else [f"#{i}" for i in bad]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        raise NonFiniteScoreError(
            f"{what} gave a non-finite score for {shown} (e.g. BRISQUE on a flat image); "
            "these images get no row", bad.tolist(), names, scores)
    return scores


def score(metric: Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int | str = 8,
          ids: Sequence[str] | None = None, allow_nonfinite: bool = False) -> np.ndarray:
    """``metric(x)`` in chunks of ``batch_size``, without gradients: float64 numpy ``[N]``.

    The chunks' outputs stay on the metric's device and come back in one copy, so a GPU is
    synchronised once. Non-finite scores raise :class:`NonFiniteScoreError` (naming ``ids``
    when given) unless ``allow_nonfinite=True``."""
    check_images(x, f"{getattr(metric, 'name', 'metric')} input")
    if len(x) == 0:
        return np.zeros(0, dtype=np.float64)
    device = device_of(metric)
    bs = resolve_batch_size(batch_size, x, metric, default=8)
    outs = []
    with torch.no_grad():
        for sl in _chunks(len(x), bs):
            outs.append(metric(to_device(x[sl], device)).detach().reshape(-1))
    scores = torch.cat(outs).double().cpu().numpy()
    if len(scores) != len(x):
        raise ValueError(f"{getattr(metric, 'name', 'metric')} returned {len(scores)} scores for "
                         f"{len(x)} images; a metric returns one score per image ([B])")
    if not allow_nonfinite:
        check_scores(scores, ids=ids, what=str(getattr(metric, "name", "metric")))
    return scores


# -- purifying ---------------------------------------------------------------------------
@dataclass
class Purified:
    """What :func:`purify` returns.

    ``images``: ``[N,3,H,W]`` float32 on the CPU, resized (``measures.match_size``) to ``like``
    when it was given and the purifier changed the size (else the size of the first chunk's
    output). ``raw``: the purifier's output as produced (a tensor; a list of ``[1,3,h,w]``
    tensors when chunks came out in different sizes). ``seconds_per_image``: purification
    time divided by N."""

    images: Tensor
    raw: Tensor | list[Tensor]
    seconds_per_image: float
    extra: dict = field(default_factory=dict, repr=False)


def _call_defense(defense, x: Tensor, generator: torch.Generator | None) -> Tensor:
    if generator is not None and getattr(defense, "stochastic", False):
        return defense(x, generator=generator)
    return defense(x)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def purify(defense, x: Tensor, *, batch_size: int | str = 4, seed: int = 0,
           generator: torch.Generator | None = None, like: Tensor | None = None,
           step: Callable[[Any, Tensor, torch.Generator | None], Tensor] | None = None
           ) -> Purified:
    """``defense(x)`` in chunks, without gradients, timed -> :class:`Purified`.

    A stochastic purifier gets a generator seeded with ``seed`` at every chunk (so an image's
    noise depends on the seed and its place in the chunk, as with ``Defense.__call__``), or
    ``generator`` itself when one is given (fresh draws, e.g. for EOT). ``step`` replaces the
    call ``(defense, chunk, generator) -> output`` (the grid passes one that reuses a
    composition's cached prefix)."""
    check_images(x, f"{getattr(defense, 'name', 'defense')} input")
    device = device_of(defense)
    bs = resolve_batch_size(batch_size, x, defense, default=4)
    run_step = step or _call_defense
    outs: list[Tensor] = []
    seconds = 0.0
    with torch.no_grad():
        for sl in _chunks(len(x), bs):
            chunk = to_device(x[sl], device)
            gen = generator
            if gen is None and getattr(defense, "stochastic", False):
                gen = _generator(chunk.device, seed)
            t0 = time.perf_counter()
            y = run_step(defense, chunk, gen)
            _sync(y.device)
            seconds += time.perf_counter() - t0
            outs.append(y.detach().float().cpu())
    sizes = {tuple(o.shape[-2:]) for o in outs}
    raw: Tensor | list[Tensor]
    if len(sizes) == 1:
        raw = torch.cat(outs)
        target = like if like is not None else raw
        images = measures.match_size(raw, target)
    else:  # a size-changing purifier may differ per chunk
        raw = [img[None] for o in outs for img in o]
        target = like if like is not None else outs[0]
        images = torch.cat([measures.match_size(o, target) for o in outs])
    return Purified(images, raw, seconds / max(len(x), 1))


class PrefixMemo:
    """Remembers the output of each purifier prefix on a chunk, so ``diffpure+unsharp`` after
    ``diffpure`` (same input, same generator state) reuses the DiffPure output instead of
    rerunning the sampler. Keyed by the prefix's fingerprint (code + settings of each part),
    the input's content and the generator's state; the time the prefix took is credited to
    the composition that reuses it (:meth:`take_saved_seconds`), so times stay honest."""

    def __init__(self, max_items: int = 12):
        self.max_items = max_items
        self._store: collections.OrderedDict = collections.OrderedDict()
        self._fps: dict[int, tuple[Any, str]] = {}
        self._saved = 0.0
        self.hits = 0

    def _fp(self, part) -> str:
        held = self._fps.get(id(part))
        if held is None or held[0] is not part:
            params = part.params_json() if callable(getattr(part, "params_json", None)) else ""
            held = (part, sha("part", code_digest(type(part)), getattr(part, "name", ""), params))
            self._fps[id(part)] = held
        return held[1]

    def take_saved_seconds(self) -> float:
        saved, self._saved = self._saved, 0.0
        return saved

    def purify(self, defense, x: Tensor, **kwargs) -> Purified:
        """:func:`purify` through :meth:`step`: a prefix seen before is reused, and the time it
        took is added to this call's ``seconds_per_image``. ``kwargs`` go to :func:`purify`."""
        try:
            p = purify(defense, x, step=self.step, **kwargs)
        finally:
            saved = self.take_saved_seconds()  # also when the purifier failed: not the next's
        p.seconds_per_image += saved / max(len(x), 1)
        return p

    def step(self, defense, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from ..defenses.base import Compose

        parts = list(defense.defenses) if type(defense) is Compose else [defense]
        state = generator.get_state() if generator is not None else None
        base = (tensor_digest(x), tensor_digest(state) if state is not None else "")
        fps = [self._fp(p) for p in parts]
        start, y = 0, x
        for j in range(len(parts), 0, -1):
            hit = self._store.get((base, tuple(fps[:j])))
            if hit is not None:
                y, gen_state, seconds = hit
                if generator is not None and gen_state is not None:
                    generator.set_state(gen_state)
                self._store.move_to_end((base, tuple(fps[:j])))
                self._saved += seconds
                self.hits += 1
                start = j
                break
        elapsed = 0.0 if start == 0 else self._store[(base, tuple(fps[:start]))][2]
        for j in range(start, len(parts)):
            t0 = time.perf_counter()
            y = _call_defense(parts[j], y, generator)
            _sync(y.device)
            elapsed += time.perf_counter() - t0
            self._store[(base, tuple(fps[:j + 1]))] = (
                y, generator.get_state() if generator is not None else None, elapsed)
            while len(self._store) > self.max_items:
                self._store.popitem(last=False)
        return y


# -- attacking ---------------------------------------------------------------------------
@dataclass
class Attacked:
    """What :func:`attack` returns: ``images`` ``[N,3,H,W]`` float32 on the CPU and
    ``seconds_per_image`` ``[N]`` (float64; each image gets its chunk's time / chunk size)."""

    images: Tensor
    seconds_per_image: np.ndarray


def attack(attack_fn, x: Tensor, *, batch_size: int | str = 4) -> Attacked:
    """``attack_fn(x)`` in chunks, timed -> :class:`Attacked`."""
    check_images(x, f"{getattr(attack_fn, 'name', 'attack')} input")
    metric = getattr(attack_fn, "metric", None)
    bs = resolve_batch_size(batch_size, x, metric if metric is not None else attack_fn,
                            default=4)
    device = device_of(metric) if metric is not None else None
    outs, times = [], np.zeros(len(x), dtype=np.float64)
    for sl in _chunks(len(x), bs):
        chunk = to_device(x[sl], device)
        t0 = time.perf_counter()
        y = attack_fn(chunk)
        _sync(y.device)
        times[sl] = (time.perf_counter() - t0) / (sl.stop - sl.start)
        outs.append(y.detach().float().cpu())
    return Attacked(torch.cat(outs) if outs else x[:0].float().cpu(), times)


__all__ = [
    "Attacked",
    "NonFiniteScoreError",
    "PrefixMemo",
    "Purified",
    "attack",
    "auto_batch_size",
    "check_scores",
    "device_of",
    "purify",
    "resolve_batch_size",
    "score",
    "to_device",
]
