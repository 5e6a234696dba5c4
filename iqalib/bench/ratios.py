"""The speed goals of the study's performance issue, each measured as a ratio in one run.

Ratios, not absolute times, are what carry across machines, so every comparison is timed in
one process, on the same inputs, the two sides alternating; a ratio is the median of the
per-repeat ratios, and the detail column gives their range (:func:`~.timing.time_pair`):

- **attack step**: one I-FGSM step vs the bare forward+backward of the metric it attacks
  (goal <= 1.05);
- **ours vs torchattacks**: our I-FGSM vs torchattacks' ``BIM`` through the two-logit adapter,
  same settings (goal <= 1.0);
- **DiffPure**: the purifier at t vs the bare prior calls its sampler makes (goal <= 1.10: the
  sampler, the resize to 256 and back and the noise may add 10 %);
- **Dask**: the same grid on 2 worker processes vs 1, one thread each and torch limited to one
  intra-op thread per worker (goal: a speed-up >= 1.8);
- **no repeated work**: on a grid with two attacks, every purifier call is counted with a hash
  of its input (:func:`~.counting.count_purifier_calls`); calls / distinct (purifier, input)
  pairs is 1.0 when the clean side is purified once per metric x purifier x image and
  DiffPure+Unsharp reuses DiffPure's output (goal 1.0).

Two quality / throughput lines follow for reference: FFDNet's PSNR on a noisy photo (the
offline prior must denoise) and the images per second of every purifier that runs offline.
"""
from __future__ import annotations

import tempfile
import time

import torch

from .counting import count_purifier_calls
from .timing import time_pair, timeit

#: the fewest alternating repeats a ratio rests on, whatever its time budget
MIN_REPEATS = 3


def _row(goal: str, measured: float, target: str, ok: bool | None, detail: str,
         ours_s: float | None = None, reference_s: float | None = None) -> dict:
    status = "" if ok is None else ("PASS" if ok else "MISS")
    return {"goal": goal, "measured": measured, "target": target, "status": status,
            "ours_s": ours_s, "reference_s": reference_s, "detail": detail}


def photos(n: int, size: int, device: torch.device) -> torch.Tensor:
    """``n`` photos of the offline sample set, centre-cropped to ``size`` px."""
    from ..datasets import load_dataset

    images = load_dataset("samples", n=n, size=size)
    return images.batch(images.ids).to(device)


# -- attacks -------------------------------------------------------------------------------
def attack_goals(metric_name: str, x: torch.Tensor, device, repeats: int,
                 steps: int = 10, budget_s: float | None = None) -> list[dict]:
    """I-FGSM step vs the bare forward+backward; our I-FGSM vs torchattacks' BIM."""
    from ..api import load_attack, load_metric

    metric = load_metric(metric_name, device=str(device))
    attack = load_attack("ifgsm", metric, steps=steps)

    def bare_loop():
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(metric(xi).sum(), xi)

    timing = {"repeats": repeats, "budget_s": budget_s, "min_repeats": MIN_REPEATS}
    step = time_pair(lambda: attack(x), bare_loop, device, **timing)
    shape = f"batch {x.shape[0]} x {x.shape[-1]} px"
    rows = [_row("attack step / bare forward+backward", step.ratio, "<= 1.05", step.ratio <= 1.05,
                 f"I-FGSM {steps} steps on {metric_name} vs {steps} bare passes, {shape}; "
                 f"{step.spread()}", step.ours / steps, step.reference / steps)]
    try:
        from ..attacks.torchattacks_adapter import ScoreAsLogits, torchattacks_attack

        bim = torchattacks_attack("BIM", metric, eps=10 / 255, alpha=1 / 255, steps=steps)
        labels = ScoreAsLogits.labels_for(x)
        vs = time_pair(lambda: attack(x), lambda: bim(x, labels), device, **timing)
        rows.append(_row("our I-FGSM / torchattacks BIM", vs.ratio, "<= 1.0", vs.ratio <= 1.0,
                         f"eps 10/255, alpha 1/255, {steps} steps on {metric_name}, {shape}; "
                         f"{vs.spread()}", vs.ours / steps, vs.reference / steps))
    except ImportError as exc:  # torchattacks is a dev extra
        rows.append(_row("our I-FGSM / torchattacks BIM", float("nan"), "<= 1.0", None,
                         f"torchattacks unavailable: {exc}"))
    return rows


# -- DiffPure ------------------------------------------------------------------------------
def diffpure_goal(x: torch.Tensor, device, repeats: int, t: int = 10,
                  budget_s: float | None = None) -> list[dict]:
    """DiffPure (FFDNet prior) vs the bare prior evaluations its sampler makes."""
    from ..api import load_defense

    defense = load_defense("diffpure", t=t, prior="ffdnet", device=str(device))
    prior = defense.get_prior()
    side = defense.size or x.shape[-1]
    g = torch.Generator().manual_seed(0)
    x_t = (torch.rand(x.shape[0], 3, side, side, generator=g) * 2 - 1).to(device)
    sched = defense.scheduler(prior)
    levels = [(int(s), sched.alphas_cumprod[int(s)].to(device)) for s in sched.timesteps]

    def bare():
        with torch.no_grad():
            for step, abar in levels:
                prior(x_t, step, abar)

    pair = time_pair(lambda: defense(x), bare, device, repeats=repeats, budget_s=budget_s,
                     min_repeats=MIN_REPEATS)
    return [_row(f"DiffPure t={t} / its bare prior calls", pair.ratio, "<= 1.10",
                 pair.ratio <= 1.10,
                 f"FFDNet prior, {defense.nfe} calls at {side} px, batch {x.shape[0]} "
                 f"(incl. resize {x.shape[-1]}->{side}->{x.shape[-1]} and the noise); "
                 f"{pair.spread()}", pair.ours, pair.reference)]


# -- Dask ----------------------------------------------------------------------------------
def limit_torch_threads(n: int) -> int:
    """Set torch's intra-op threads in this process (run on every Dask worker); returns the
    setting read back."""
    torch.set_num_threads(int(n))
    return torch.get_num_threads()


def _warm_worker() -> str:
    # the modules a unit needs, imported before the clock starts (process start-up, not work)
    import iqalib.api
    import iqalib.evaluate.grid

    iqalib.api._ensure_registered()
    return "ok"


#: Dask settings of both sides' workers: the statistical profiler off and the event loop's
#: watchdog, memory and system monitors ticking less often. They are diagnostics, not the
#: grid's work: with Dask's defaults a worker's event loop used about 2 CPU-s per 20 s of
#: tasks (half of it the profiler, which also takes the GIL from the task every 10 ms); with
#: these, 0.2-0.3 s (thread CPU times from /proc). Measured on a 2-core VM, 2026-12-02, 3
#: alternating pairs of this section: both sides about 10 % faster (1 worker 18.6-20.7 s
#: against 21.8-24.8 s, 2 workers 10.6-11.7 s against 12.2-13.5 s), the speed-up unchanged
#: (1.76-1.84 with either). A CPU cluster running the grid should gain the same 10 %.
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}

#: images of the Dask bench grid: the whole offline sample set (23), 12 chunks of 2, so that
#: two workers are not left with one long unit at the end
DASK_IMAGES = 23


def dask_goal(n_images: int = DASK_IMAGES, size: int = 160, chunk_size: int = 2,
              metric: str = "effnet-iqa", attack: str = "ifgsm",
              defenses=("flip", "jpeg", "median"), repeats: int = 2) -> list[dict]:
    """The same grid on a LocalCluster of 1 and of 2 worker processes (one thread each, torch
    limited to one intra-op thread per worker). The clock starts once the workers are up and
    warm: iqalib imported and the components built by a small grid of one chunk per worker
    (start-up that a real grid pays once per worker, not per unit), so the ratio is the
    grid's own scaling; both sides' workers run with :data:`QUIET_WORKERS`. The two sides
    alternate ``repeats`` times (1, 2, 1, 2, ...) and the fastest run of each counts: on a
    shared machine a single pair of runs drifts by 20 %."""
    import dask
    from distributed import Client, LocalCluster

    from ..evaluate.grid import run_grid

    times: dict[int, float] = {}
    threads, rows = {}, 0
    for workers in (1, 2) * max(1, int(repeats)):
        with dask.config.set(QUIET_WORKERS), tempfile.TemporaryDirectory() as tmp, \
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                             dashboard_address=None) as cluster, Client(cluster) as client:
            threads[workers] = sorted(set(client.run(limit_torch_threads, 1).values()))
            client.run(_warm_worker)
            grid = {"size": size, "chunk_size": chunk_size, "batch_size": chunk_size,
                    "scheduler": client, "progress": False, "device": "cpu"}
            run_grid([metric], [attack], list(defenses), "samples", n=workers * chunk_size,
                     out=f"{tmp}/warm", cache=f"{tmp}/warm-adv", **grid)
            t0 = time.perf_counter()
            df = run_grid([metric], [attack], list(defenses), "samples", n=n_images,
                          out=f"{tmp}/grid", cache=f"{tmp}/adv", **grid)
            took = time.perf_counter() - t0
            times[workers] = min(times.get(workers, took), took)
            rows = len(df)
    speedup = times[1] / times[2]
    return [_row("Dask speed-up, 2 workers vs 1", speedup, ">= 1.8", speedup >= 1.8,
                 f"{metric} x {attack} x {len(defenses)} purifiers on {n_images} images at "
                 f"{size} px, {-(-n_images // chunk_size)} image chunks, {rows} rows; "
                 f"torch threads per worker {threads[1]} / {threads[2]}; Dask's profiler "
                 f"off, slower monitors (QUIET_WORKERS) on both sides; fastest of "
                 f"{max(1, int(repeats))} alternating runs each",
                 times[2], times[1])]


# -- no repeated work ----------------------------------------------------------------------
def repeated_work_goal(n_images: int = 2, size: int = 64, metric: str = "effnet-iqa",
                       attacks=("ifgsm", "mifgsm"),
                       defenses=("jpeg", "diffpure:t5", "diffpure-unsharp:t5")) -> list[dict]:
    """Purifier calls on a local grid with two attacks, against the distinct (purifier,
    input) pairs: 1.0 means the clean side is purified once per metric x purifier x image and
    DiffPure+Unsharp reuses DiffPure's output."""
    from ..evaluate.grid import run_grid

    with tempfile.TemporaryDirectory() as tmp, count_purifier_calls() as calls:
        run_grid([metric], list(attacks), list(defenses), "samples", n=n_images, size=size,
                 out=f"{tmp}/grid", cache=f"{tmp}/adv", progress=False, device="cpu")
    per = ", ".join(f"{r['purifier']} {r['images']}/{r['distinct']}" for r in calls.table())
    return [_row("no repeated work: purifier calls / distinct inputs", calls.ratio, "1.0",
                 abs(calls.ratio - 1.0) < 1e-9,
                 f"{metric}, attacks {'+'.join(attacks)}, {n_images} images: {per}")]


# -- reference lines -----------------------------------------------------------------------
def ffdnet_psnr(device) -> list[dict]:
    """FFDNet on a noisy astronaut crop (sigma 25/255): PSNR before and after (skimage)."""
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from ..defenses.ffdnet import load_ffdnet

    img = torch.from_numpy(data.astronaut()[:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    gen = torch.Generator().manual_seed(0)
    noisy = (img + 25 / 255 * torch.randn(img.shape, generator=gen)).clamp(0, 1)
    net = load_ffdnet().to(device).eval()
    with torch.no_grad():
        out = net(noisy.to(device), 25 / 255).clamp(0, 1).cpu()
    ref = img[0].permute(1, 2, 0).numpy()
    before = psnr(ref, noisy[0].permute(1, 2, 0).numpy(), data_range=1)
    after = psnr(ref, out[0].permute(1, 2, 0).numpy(), data_range=1)
    return [_row("FFDNet denoises (PSNR dB after)", after, f"> {before:.1f}", after > before,
                 f"astronaut 256 px + noise 25/255: {before:.1f} dB -> {after:.1f} dB")]


def throughput(x: torch.Tensor, device, repeats: int, budget_s: float | None = None) -> list[dict]:
    """Images per second of every registered purifier that runs here (default settings)."""
    from ..api import list_defenses, load_defense
    from ..errors import MissingWeightsError

    rates = []
    for name in list_defenses():
        try:
            defense = load_defense(name, device=str(device))
        except MissingWeightsError:
            continue
        with torch.no_grad():
            t = timeit(lambda d=defense: d(x), device, repeats=repeats, budget_s=budget_s)
        rates.append(f"{name} {x.shape[0] / t:.3g}")
    return [_row("purifier throughput (images/s)", float("nan"), "", None,
                 f"{x.shape[-1]} px, batch {x.shape[0]}: " + ", ".join(rates))]


SECTIONS = ("attack", "diffpure", "dask", "repeated", "ffdnet", "throughput")


def run(device="auto", *, size: int = 224, batch: int = 4, repeats: int = 5,
        metric: str = "effnet-iqa", sections=SECTIONS, dask_images: int = DASK_IMAGES,
        budget_s: float | None = 60.0, progress: bool = True):
    """Every section; a DataFrame with one row per goal (``goal``, ``measured``, ``target``,
    ``status``, ``ours_s``, ``reference_s``, ``detail``).

    ``repeats`` alternating repeats per ratio, fewer (never under :data:`MIN_REPEATS`) when
    the warm-up shows they would take more than ``budget_s`` seconds (a loaded machine, a slow
    CPU); ``None``: always ``repeats``."""
    import pandas as pd

    from ..device import resolve_device

    dev = resolve_device(device)
    x = photos(batch, size, dev)
    jobs = {
        "attack": lambda: attack_goals(metric, x, dev, repeats, budget_s=budget_s),
        "diffpure": lambda: diffpure_goal(x, dev, repeats, budget_s=budget_s),
        "dask": lambda: dask_goal(dask_images),
        "repeated": lambda: repeated_work_goal(),
        "ffdnet": lambda: ffdnet_psnr(dev),
        "throughput": lambda: throughput(x, dev, max(1, repeats // 2), budget_s=budget_s),
    }
    rows: list[dict] = []
    for name in sections:
        t0 = time.perf_counter()
        try:
            rows += jobs[name]()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the rest
            rows.append(_row(name, float("nan"), "", False,
                             f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
        if progress:
            print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return pd.DataFrame(rows)


__all__ = ["DASK_IMAGES", "MIN_REPEATS", "QUIET_WORKERS", "SECTIONS", "attack_goals",
           "dask_goal", "diffpure_goal", "ffdnet_psnr", "limit_torch_threads", "photos",
           "repeated_work_goal", "run", "throughput"]
