"""Wall-clock timing that the benchmark's ratios can trust: synchronised, warmed up, repeated.

Every ratio of ``make bench`` compares two things timed in the same process on the same inputs.
On a shared machine the load drifts, so :func:`time_pair` alternates the two sides repeat by
repeat (a slow spell hits both) and reports the median of each side.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device | str | None) -> None:
    """Wait for queued CUDA work, so a timer reads the time the work took, not its launch."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device=None, *, repeats: int = 3, warmup: int = 1,
           budget_s: float | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` untimed
    ones. ``budget_s`` stops repeating early once the timed calls have used that many seconds
    (at least one timed call is always made): the CPU projection times 550M-parameter
    networks where one call takes minutes."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) >= budget_s:
            break
    return statistics.median(times)


def time_pair(ours: Callable[[], object], reference: Callable[[], object], device=None, *,
              repeats: int = 5, warmup: int = 1,
              budget_s: float | None = None) -> tuple[float, float]:
    """Median seconds of ``ours()`` and of ``reference()``, timed alternately (ours, reference,
    ours, ...) after ``warmup`` untimed calls of each; ``budget_s`` stops after the repeat in
    which both sides together passed that many seconds."""
    for _ in range(warmup):
        ours()
        reference()
    sync(device)
    a: list[float] = []
    b: list[float] = []
    for _ in range(max(1, repeats)):
        for fn, out in ((ours, a), (reference, b)):
            t0 = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t0)
        if budget_s is not None and sum(a) + sum(b) >= budget_s:
            break
    return statistics.median(a), statistics.median(b)


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


__all__ = ["device_name", "load_average", "sync", "time_pair", "timeit"]
