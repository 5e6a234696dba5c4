"""Wall-clock timing that the benchmark's ratios can trust: synchronised, warmed up, repeated.

Every ratio of ``make bench`` compares two things timed in the same process on the same inputs.
On a shared machine the load drifts, so :func:`time_pair` alternates the two sides repeat by
repeat (a slow spell hits both), and the ratio it reports is the median of the per-repeat
ratios (each side against its neighbour in time), not the ratio of the two medians, which a
spell that hits the repeats unevenly can move by several percent.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work, so a timer reads the time the work took, not its launch."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device) -> float:
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def repeats_within(budget_s: float | None, per_repeat_s: float, repeats: int,
                   min_repeats: int = 1) -> int:
    """How many of ``repeats`` fit in ``budget_s`` when one repeat takes ``per_repeat_s``
    (read off the warm-up): at least ``min_repeats`` (and one), at most ``repeats``; all of
    them without a budget or without a warm-up to go by (``per_repeat_s`` 0)."""
    repeats = max(1, int(repeats))
    floor = max(1, min(int(min_repeats), repeats))
    if budget_s is None or per_repeat_s <= 0:
        return repeats
    return max(floor, min(repeats, int(budget_s // per_repeat_s)))


def timeit(fn: Callable[[], object], device=None, *, repeats: int = 3, warmup: int = 1,
           budget_s: float | None = None, min_repeats: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls
    that do not count.

    ``budget_s`` bounds the timed calls: when the last warm-up call took a large share of the
    budget, fewer repeats are planned (:func:`repeats_within`: one, when a call takes half the
    budget or more), and repeating stops early once the timed calls have used the budget. At
    least ``min_repeats`` timed calls (default one) are always made: the CPU projection times
    550M-parameter networks where one call takes minutes."""
    warm = 0.0
    for _ in range(warmup):
        warm = _timed(fn, device)
    sync(device)
    times: list[float] = []
    for i in range(repeats_within(budget_s, warm, repeats, min_repeats)):
        times.append(_timed(fn, device))
        if budget_s is not None and i + 1 >= min_repeats and sum(times) >= budget_s:
            break
    return statistics.median(times)


class PairedTimes(NamedTuple):
    """What :func:`time_pair` measured: the median seconds of each side, and the median,
    lowest and highest of the per-repeat ratios ``ours_i / reference_i``."""

    ours: float
    reference: float
    ratio: float
    low: float
    high: float
    repeats: int

    def spread(self) -> str:
        """``"repeats 0.97-1.03, n=5"``: how far single repeats strayed from the ratio."""
        return f"repeats {self.low:.3g}-{self.high:.3g}, n={self.repeats}"


def time_pair(ours: Callable[[], object], reference: Callable[[], object], device=None, *,
              repeats: int = 5, warmup: int = 1, budget_s: float | None = None,
              min_repeats: int = 1) -> PairedTimes:
    """``ours()`` and ``reference()`` timed alternately (ours, reference, ours, ...) after
    ``warmup`` untimed calls of each: the median seconds of each side and the median of the
    per-repeat ratios (:class:`PairedTimes`). ``budget_s`` bounds both sides together as in
    :func:`timeit`: fewer repeats are planned when the last warm-up pair took a large share of
    it (never fewer than ``min_repeats``), and repeating stops after the repeat in which they
    passed it."""
    warm = 0.0
    for _ in range(warmup):
        warm = _timed(ours, device) + _timed(reference, device)
    sync(device)
    a: list[float] = []
    b: list[float] = []
    for i in range(repeats_within(budget_s, warm, repeats, min_repeats)):
        a.append(_timed(ours, device))
        b.append(_timed(reference, device))
        if budget_s is not None and i + 1 >= min_repeats and sum(a) + sum(b) >= budget_s:
            break
    ratios = [x / y if y > 0 else float("nan") for x, y in zip(a, b)]
    return PairedTimes(statistics.median(a), statistics.median(b), statistics.median(ratios),
                       min(ratios), max(ratios), len(ratios))


def device_name(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"CPU: 2 cores (AMD EPYC), 2 torch threads"``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {os.cpu_count()} cores ({cpu}), {torch.get_num_threads()} torch threads"


def load_average() -> str:
    """The 1-minute load average (``"n/a"`` where the OS has none): a ratio measured while
    other programs fight for the cores is noisier, and the printout says so."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        return "n/a"


__all__ = ["PairedTimes", "device_name", "load_average", "repeats_within", "sync", "time_pair",
           "timeit"]
