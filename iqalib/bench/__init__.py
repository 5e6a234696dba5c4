"""``make bench``: the speed goals measured as ratios in one run, and a projection of a whole
profile run from timed components.

- ``python -m iqalib bench`` (``make bench``): one table, every goal with its measured ratio,
  its target and PASS / MISS (:mod:`.ratios`): the median ratio of ``--repeats`` alternating
  repeats (fewer, never under three, where they would overrun ``--budget`` seconds per ratio),
  the range of the single repeats' ratios in the detail column.
- ``python -m iqalib bench --project paper`` (``make bench PROFILE=paper``): the goals, then
  the paper run counted (:mod:`.plan`), its components timed on this device with random
  weights of the real architectures (:mod:`.projection`), and the hours it would take here,
  per stage and in total, next to its FLOP floor on one H200.

Modules: :mod:`.timing` (synchronised, alternating timers), :mod:`.counting` (purifier calls
per input, metric passes per attack), :mod:`.components` (random-weight builds of the paper's
networks), :mod:`.plan` (a profile's work, counted), :mod:`.projection`, :mod:`.ratios`.
"""
from __future__ import annotations

import argparse

from .ratios import DASK_IMAGES, SECTIONS


def _print_goals(df, header: str) -> None:
    import pandas as pd

    cols = ["goal", "measured", "target", "status", "ours_s", "reference_s", "detail"]
    with pd.option_context("display.max_rows", 100, "display.width", 250,
                           "display.max_colwidth", 140, "display.float_format", "{:.3g}".format):
        print(header)
        print(df[cols].fillna("").to_string(index=False))


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m iqalib bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=224, help="image side of the goals (default 224)")
    p.add_argument("--batch", type=int, default=4, help="images per batch of the goals (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="alternating repeats per ratio (default 5)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds per ratio: fewer repeats (never under 3) when the warm-up shows "
                        "that --repeats would take longer (default 60; 0: no budget)")
    p.add_argument("--metric", default="effnet-iqa", help="metric the attack goals attack")
    p.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS),
                   help="goal sections to run (default all)")
    p.add_argument("--dask-images", type=int, default=DASK_IMAGES,
                   help=f"images of the Dask bench grid (default {DASK_IMAGES}, the whole sample "
                        "set: chunks of 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads of this process (default 1: ratios need no more, "
                        "and on a shared machine other jobs slow multi-threaded timing down "
                        "erratically; 0: torch's default)")
    p.add_argument("--project", default=None, metavar="PROFILE",
                   help="also project a whole run of PROFILE (e.g. paper) from timed components")
    p.add_argument("--project-only", action="store_true", help="skip the goals")
    p.add_argument("--project-batch", type=int, default=None,
                   help="images per call when timing components (default: 1 on a CPU, the "
                        "profile's batch size on a GPU)")
    p.add_argument("--out", default=None, help="write the goals table (CSV) to this path")
    a = p.parse_args(argv)

    import torch

    from ..device import resolve_device
    from .timing import device_name, load_average

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = resolve_device(a.device)
    if not a.project_only:
        from . import ratios

        df = ratios.run(dev, size=a.size, batch=a.batch, repeats=a.repeats, metric=a.metric,
                        sections=tuple(a.sections), dask_images=a.dask_images,
                        budget_s=a.budget or None)
        within = (f" (at least {ratios.MIN_REPEATS} within {a.budget:g} s per ratio)"
                  if a.budget else "")
        _print_goals(df, f"Goals of `make bench` on {device_name(dev)}; median ratio of "
                         f"{a.repeats} alternating repeats{within}; load average {load_average()}")
        if a.out:
            df.to_csv(a.out, index=False)
    if a.project:
        from . import projection

        if not a.project_only:
            print()
        print(f"Projecting the {a.project} profile: counting its work, timing each component ...",
              flush=True)
        proj = projection.project(a.project, device=dev, batch=a.project_batch)
        print(projection.report(proj, on_gpu=dev.type == "cuda"))
    return 0


__all__ = ["cli"]
