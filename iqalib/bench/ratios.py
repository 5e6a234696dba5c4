"""``make bench``: speed ratios measured in one run, on whatever device ``--device`` picks.

Ratios, not absolute times, are what carry across machines, so every comparison here is
timed in the same process, on the same inputs, back to back:

- attack step vs the bare forward+backward of the metric it attacks (goal <= 1.10x);
- our I-FGSM vs torchattacks' BIM through the two-logit adapter (same settings);
- DiffPure vs the bare network evaluations its sampler makes (goal <= 1.10x);
- FFDNet's PSNR on a noisy photo (quality, not speed: the offline prior must denoise);
- throughput (images/s) of every purifier that runs without downloads;
- the grid on 2 Dask workers vs 1.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from .device import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, *, repeats: int = 3,
           warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _photos(n: int, size: int, device: torch.device) -> torch.Tensor:
    from .datasets import load_dataset

    images = load_dataset("samples", n=n, size=size)
    return images.batch(images.ids).to(device)


def bench_attack(metric_name: str, x: torch.Tensor, device, repeats: int) -> list[dict]:
    """Seconds per I-FGSM step vs one bare forward+backward, and ours vs torchattacks BIM."""
    from .api import load_attack, load_metric

    metric = load_metric(metric_name, device=str(device))
    steps = 10

    def bare():
        xi = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(metric(xi).sum(), xi)
        return g

    attack = load_attack("ifgsm", metric, steps=steps)
    t_bare = timeit(bare, device, repeats=repeats)
    t_attack = timeit(lambda: attack(x), device, repeats=repeats) / steps
    rows = [dict(section="attack", what=f"I-FGSM step on {metric_name} vs bare fwd+bwd",
                 ours_s=t_attack, reference_s=t_bare, ratio=t_attack / t_bare, goal="<= 1.10")]
    try:
        from .attacks.torchattacks_adapter import ScoreAsLogits, torchattacks_attack

        bim = torchattacks_attack("BIM", metric, eps=10 / 255, alpha=1 / 255, steps=steps)
        labels = ScoreAsLogits.labels_for(x)
        t_bim = timeit(lambda: bim(x, labels), device, repeats=repeats) / steps
        rows.append(dict(section="attack", what=f"our I-FGSM vs torchattacks BIM ({metric_name})",
                         ours_s=t_attack, reference_s=t_bim, ratio=t_attack / t_bim, goal="<= 1.0"))
    except ImportError as exc:  # torchattacks is a dev extra
        rows.append(dict(section="attack", what=f"torchattacks BIM unavailable: {exc}"))
    return rows


def bench_diffpure(x: torch.Tensor, device, repeats: int, t: int = 10) -> list[dict]:
    """DiffPure (FFDNet prior) vs the bare denoiser evaluations its sampler makes."""
    from .api import load_defense
    from .defenses.diffpure import DiffPure

    defense = load_defense("diffpure", t=t, prior="ffdnet", device=str(device))
    assert isinstance(defense, DiffPure)
    prior = defense.get_prior()
    side = defense.size or x.shape[-1]
    x_t = torch.rand(x.shape[0], 3, side, side, device=device) * 2 - 1
    abar = defense.scheduler(prior).alphas_cumprod[defense.timesteps[0]]

    def bare():
        with torch.no_grad():
            return prior(x_t, defense.timesteps[0], abar)

    n_evals = defense.nfe
    t_sampler = timeit(lambda: defense(x), device, repeats=repeats)
    t_net = timeit(bare, device, repeats=repeats) * n_evals
    return [dict(section="diffpure", what=f"DiffPure t={t} (FFDNet prior) vs {n_evals} bare FFDNet calls",
                 ours_s=t_sampler, reference_s=t_net, ratio=t_sampler / t_net, goal="<= 1.10")]


def bench_ffdnet_psnr(device) -> list[dict]:
    """FFDNet on a noisy astronaut crop (sigma 25/255): PSNR before and after, by skimage."""
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from .defenses.ffdnet import load_ffdnet

    img = torch.from_numpy(data.astronaut()[:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    gen = torch.Generator().manual_seed(0)
    noisy = (img + 25 / 255 * torch.randn(img.shape, generator=gen)).clamp(0, 1)
    net = load_ffdnet().to(device).eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        out = net(noisy.to(device), 25 / 255).clamp(0, 1).cpu()
        dt = time.perf_counter() - t0
    ref = img[0].permute(1, 2, 0).numpy()
    before = psnr(ref, noisy[0].permute(1, 2, 0).numpy(), data_range=1)
    after = psnr(ref, out[0].permute(1, 2, 0).numpy(), data_range=1)
    return [dict(section="ffdnet", what="FFDNet sigma 25/255 on astronaut 256x256: PSNR dB",
                 ours_s=dt, before_db=before, after_db=after)]


def bench_purifiers(x: torch.Tensor, device, repeats: int) -> list[dict]:
    """Images per second of every registered purifier that runs here (with default settings)."""
    from .api import list_defenses, load_defense
    from .errors import MissingWeightsError

    rows = []
    for name in list_defenses():
        try:
            defense = load_defense(name, device=str(device))
            t = timeit(lambda: defense(x), device, repeats=repeats)
            rows.append(dict(section="throughput", what=name, ours_s=t / x.shape[0],
                             images_per_s=x.shape[0] / t))
        except MissingWeightsError as exc:
            rows.append(dict(section="throughput", what=name,
                             note=f"skipped: {str(exc).splitlines()[0]}"))
    return rows


def bench_dask(n_images: int) -> list[dict]:
    """The same small grid on a LocalCluster of 1 and of 2 worker processes."""
    import tempfile

    from distributed import Client, LocalCluster

    from .evaluate.grid import run_grid

    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, \
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                             dashboard_address=None) as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            run_grid(["brisque"], ["ifgsm"], ["flip", "jpeg"], "samples", n=n_images,
                     chunk_size=max(1, n_images // 4), out=f"{tmp}/grid", cache=f"{tmp}/adv",
                     scheduler=client, progress=False, device="cpu")
            times[workers] = time.perf_counter() - t0
    return [dict(section="dask", what=f"grid on {n_images} images: 2 workers vs 1",
                 ours_s=times[2], reference_s=times[1], ratio=times[2] / times[1], goal="~0.5-0.6")]


def run(device="auto", *, size=224, batch=4, repeats=5, metric="effnet-iqa", dask=True,
        sections=("attack", "diffpure", "ffdnet", "throughput", "dask")):
    """All sections; returns a DataFrame (one row per measurement)."""
    import pandas as pd

    dev = resolve_device(device)
    x = _photos(batch, size, dev)
    rows: list[dict] = []
    jobs = {
        "attack": lambda: bench_attack(metric, x, dev, repeats),
        "diffpure": lambda: bench_diffpure(x, dev, repeats),
        "ffdnet": lambda: bench_ffdnet_psnr(dev),
        "throughput": lambda: bench_purifiers(x, dev, repeats),
        "dask": lambda: bench_dask(8) if dask else [],
    }
    for name in sections:
        try:
            rows += jobs[name]()
        except Exception as exc:  # one broken section must not hide the others' numbers
            rows.append(dict(section=name, what=f"FAILED: {type(exc).__name__}: {exc}"))
    df = pd.DataFrame(rows)
    df.attrs["device"] = str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    return df


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m iqalib bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--batch", type=int, default=4, help="images per batch (default 4)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--metric", default="effnet-iqa", help="metric the attack benchmark attacks")
    p.add_argument("--no-dask", action="store_true", help="skip the Dask section")
    p.add_argument("--sections", nargs="*", default=["attack", "diffpure", "ffdnet", "throughput", "dask"])
    p.add_argument("--out", default=None, help="also write the table to this CSV")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    df = run(a.device, size=a.size, batch=a.batch, repeats=a.repeats, metric=a.metric,
             dask=not a.no_dask, sections=tuple(a.sections))
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 160,
                           "display.float_format", "{:.4g}".format):
        print(f"device: {df.attrs['device']}, batch {a.batch} x {a.size}px, median of {a.repeats}")
        print(df.fillna("").to_string(index=False))
    if a.out:
        df.to_csv(a.out, index=False)
    return 0
