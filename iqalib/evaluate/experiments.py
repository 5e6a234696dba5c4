"""The workbook's small experiments beside the grid, each one a table (arXiv 2404.06957 and
what the notebooks add to it). All of them run components through :mod:`iqalib.evaluate.run`
(the one chunked score / purify / attack loop) and measure with :mod:`iqalib.evaluate.measures`.

- :func:`calibration` our BRISQUE / NIQE against pyiqa's published scores (notebook 01).
- :func:`metric_scores` image x metric scores of clean images (notebook 01).
- :func:`distortion_response` scores of synthetically distorted images (notebook 01).
- :func:`attacked_images` the attacked images the grid scored, from its attack cache (03).
- :func:`clean_fidelity` PSNR / SSIM of ``purify(clean)`` against the clean image (08).
- :func:`adaptive_comparison` non-adaptive vs BPDA / EOT attacks through a purifier (09).

Metrics, attacks and purifiers are given by name (or, for metrics, as objects); ``device``
defaults to ``"auto"``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from . import measures, run


def _metric(metric, device: str):
    """``(name, metric)`` from a registry name or a metric object."""
    if isinstance(metric, str):
        from ..device import resolve_device
        from ..metrics import create_metric

        return metric, create_metric(metric).to(resolve_device(device)).eval()
    return metric.name, metric


def _load_defense(spec: str, device: str):
    from ..defenses import create_defense
    from ..device import resolve_device

    return create_defense(spec).to(resolve_device(device))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- notebook 01 ------------------------------------------------------------------------------
def calibration_images() -> dict[str, torch.Tensor]:
    """pyiqa's five distorted calibration images (``ResultsCalibra/dist_dir``, 512x384 BMPs
    that the pyiqa wheel installs), by name, each ``[1,3,H,W]``."""
    from ..images import load_image
    from ..metrics.classical import PYIQA_CALIBRATION_IMAGES
    from ..package_data import package_file

    out = {}
    for name in PYIQA_CALIBRATION_IMAGES:
        path = package_file("pyiqa", f"ResultsCalibra/dist_dir/{name}.bmp")
        if path is None:
            raise FileNotFoundError(f"pyiqa's calibration image ResultsCalibra/dist_dir/{name}.bmp "
                                    "is not installed (it ships in the pyiqa wheel: reinstall "
                                    "pyiqa)")
        out[name] = load_image(path)
    return out


def calibration(metrics: Iterable[str] = ("brisque", "niqe"), *,
                device: str = "auto") -> pd.DataFrame:
    """Our BRISQUE / NIQE (offline parameters) against pyiqa's published scores
    (:data:`iqalib.metrics.classical.PYIQA_PUBLISHED`) on pyiqa's calibration images, one
    image at a time as pyiqa scores them. One row per metric x image: ``ours``,
    ``pyiqa published``, ``abs diff``."""
    from ..metrics.classical import PYIQA_PUBLISHED

    imgs = calibration_images()
    rows = []
    for name in metrics:
        _, m = _metric(name, device)
        for (img, x), ref in zip(imgs.items(), PYIQA_PUBLISHED[name]):
            ours = float(run.score(m, x, batch_size=1, ids=[img])[0])
            rows.append({"metric": name, "image": img, "ours": ours, "pyiqa published": ref,
                         "abs diff": abs(ours - ref)})
    return pd.DataFrame(rows, columns=["metric", "image", "ours", "pyiqa published", "abs diff"])


def metric_scores(metrics, imgs, *, device: str = "auto", batch_size: int | str = 4) -> pd.DataFrame:
    """Image x metric scores of the clean images; ``metrics`` are names or metric objects.

    A metric that cannot load (missing weights or files) is left out and named in
    ``attrs["skipped"]``; the lower-is-better ones are listed in ``attrs["lower_better"]``
    (what :func:`iqalib.evaluate.tables.rank_agreement` orients by)."""
    from ..errors import MissingWeightsError

    ids = list(imgs.ids)
    x = imgs.batch(ids)
    cols, skipped, lower = {}, [], []
    for metric in metrics:
        try:
            name, m = _metric(metric, device)
        except (MissingWeightsError, FileNotFoundError) as exc:
            skipped.append(f"{metric}: {_first_line(exc)}")
            continue
        cols[name] = run.score(m, x, batch_size=batch_size, ids=ids)
        if m.lower_better:
            lower.append(name)
    out = pd.DataFrame(cols, index=pd.Index(ids, name="image_id"))
    out.attrs["skipped"] = skipped
    out.attrs["lower_better"] = lower
    return out


def distortion_response(metrics, imgs, *, distortions: Sequence[str] = ("noise", "blur", "jpeg"),
                        levels: Sequence[int] = (0, 1, 3, 5), device: str = "auto",
                        seed: int = 0, batch_size: int | str = 4) -> pd.DataFrame:
    """Metric scores of the images distorted by :func:`iqalib.distortions.distort` at each
    level (0 = clean): one row per image x metric x distortion x level, with ``quality`` = the
    score placed on the metric's range with 1 at its best end and 0 at its worst (the oriented
    change from the worst end, :func:`~iqalib.evaluate.measures.score_change`), so higher is
    better for every metric. ``metrics`` are names or metric objects."""
    from ..distortions import distort

    ids = list(imgs.ids)
    x = imgs.batch(ids)
    rows = []
    for metric in metrics:
        name, m = _metric(metric, device)
        lo, hi = m.score_range
        for kind in distortions:
            for lv in levels:
                s = run.score(m, distort(x, kind, int(lv), seed=seed), batch_size=batch_size,
                              ids=ids)
                worst = np.full_like(s, hi if m.lower_better else lo)
                q = measures.score_change(worst, s, score_range=m.score_range,
                                          lower_better=m.lower_better)
                rows += [{"metric": name, "distortion": kind, "level": int(lv), "image_id": i,
                          "score": float(v), "quality": float(qq)}
                         for i, v, qq in zip(ids, s, q)]
    return pd.DataFrame(rows, columns=["metric", "distortion", "level", "image_id", "score",
                                       "quality"])


# --- notebooks 03 / 08 -----------------------------------------------------------------------
def attacked_images(metric, attack: str, imgs, ids=None, *, seed: int = 0,
                    device: str = "auto", batch_size: int | str = 4, cache=None) -> torch.Tensor:
    """The attacked images the grid scored for ``metric`` x ``attack`` (``metric`` a name or
    the metric object given to the grid), read from the grid's lossless attack cache (default
    ``results_dir()/adv``) under the grid's own key; attacked now and cached if missing."""
    label, m = _metric(metric, device)
    ids = list(imgs.ids) if ids is None else list(ids)
    return _cached_attack(metric, m, label, attack, imgs, ids, seed, batch_size, cache)


def _cached_attack(given, m, label: str, attack: str, imgs, ids, seed: int, batch_size,
                   cache):
    from ..attacks import ATTACKS
    from ..attacks.cache import AttackCache, default_root
    from .grid import attack_fingerprint_for

    atk = ATTACKS.create(attack, metric=m, seed=seed)
    c = AttackCache(cache if cache is not None else default_root())
    return c.get_or_run(atk, label, imgs, ids, seed, batch_size=batch_size,
                        fingerprint=attack_fingerprint_for(given, attack))


def purified_images(specs: Iterable[str], x: torch.Tensor, *, seed: int = 0, device: str = "auto",
                    batch_size: int | str = 4) -> dict[str, torch.Tensor]:
    """``{spec: purified x}`` for each purifier spec, applied as the grid applies it (seeded
    with ``seed`` per chunk, outputs resized back to ``x``'s size), and a composition reuses its
    prefix's output on the same input and seed: ``["diffpure:t50", "diffpure-unsharp:t50"]``
    runs the sampler once (:class:`~iqalib.evaluate.run.PrefixMemo`)."""
    memo = run.PrefixMemo()
    return {spec: memo.purify(_load_defense(spec, device), x, batch_size=batch_size, seed=seed,
                              like=x).images
            for spec in specs}


def clean_fidelity(purifiers: Iterable[str], imgs, *, device: str = "auto", seed: int = 0,
                   batch_size: int | str = 4) -> pd.DataFrame:
    """What each purifier does to clean images: PSNR / SSIM of ``purify(clean)`` against the
    clean image (size-changing purifiers resized back, :func:`~iqalib.evaluate.measures.
    match_size`) and seconds per image; one row per purifier x image. A purifier that cannot
    load (e.g. missing weights) is named in ``attrs["skipped"]``. A composition reuses its
    prefix's output as in the grid (DiffPure + Unsharp after DiffPure runs the sampler once;
    its time still includes the sampler's)."""
    ids = list(imgs.ids)
    x = imgs.batch(ids).float()
    rows, skipped = [], []
    memo = run.PrefixMemo()
    for spec in purifiers:
        try:
            d = _load_defense(spec, device)
        except Exception as exc:  # noqa: BLE001 - reported, as the grid does
            skipped.append(f"{spec}: {_first_line(exc)}")
            continue
        p = memo.purify(d, x, batch_size=batch_size, seed=seed, like=x)
        psnr, ssim = measures.psnr(p.images, x).numpy(), measures.ssim(p.images, x).numpy()
        rows += [{"purifier": spec, "image_id": i, "PSNR": float(a), "SSIM": float(b),
                  "time_s": p.seconds_per_image} for i, a, b in zip(ids, psnr, ssim)]
    out = pd.DataFrame(rows, columns=["purifier", "image_id", "PSNR", "SSIM", "time_s"])
    out.attrs["skipped"] = skipped
    return out


# --- notebook 09 ------------------------------------------------------------------------------
def adaptive_comparison(metric, attack: str, purifiers: Iterable[str], imgs, *, eot: int = 4,
                        seed: int = 0, batch_size: int | str = 4, device: str = "auto",
                        cache=None) -> pd.DataFrame:
    """Non-adaptive vs adaptive attacks through a defended metric ``metric(purify(x))``.

    For each purifier: the non-adaptive attack (on the bare metric, as in the study; its
    attacked images come from the grid's attack cache) and the adaptive one (the same attack
    aimed at the defended metric, with BPDA for non-differentiable purifiers and EOT over
    ``eot`` draws for stochastic ones; Athalye et al., ICML 2018, :mod:`iqalib.attacks.
    adaptive`). One row per image x purifier x setting with the defended scores and
    ``moved`` = the oriented normalised change ``sign * (f(purify(x_adv)) - f(purify(x))) /
    range`` (:func:`~iqalib.evaluate.measures.score_change`; positive: the attack still works
    through the purifier)."""
    from ..attacks.adaptive import DefendedMetric, adaptive
    from ..device import seed_everything

    label, m = _metric(metric, device)
    ids = list(imgs.ids)
    x = imgs.batch(ids).float()
    seed_everything(seed)
    # the non-adaptive images are the grid's own (notebook 03 cached them)
    x_plain = _cached_attack(metric, m, label, attack, imgs, ids, seed, batch_size, cache)
    rows = []
    for spec in purifiers:
        dm = DefendedMetric(m, spec, eot=eot, seed=seed)
        seed_everything(seed)
        atk = adaptive(attack, m, dm.defense, eot=eot, defense_seed=seed, seed=seed)
        ad = run.attack(atk, x, batch_size=batch_size)
        s_clean = run.score(dm, x, batch_size=batch_size, ids=ids)
        for setting, xa, t_attack in (("non-adaptive", x_plain, float("nan")),
                                      ("adaptive (BPDA/EOT)", ad.images,
                                       float(np.mean(ad.seconds_per_image)))):
            s = run.score(dm, xa, batch_size=batch_size, ids=ids)
            moved = measures.score_change(s_clean, s, score_range=m.score_range,
                                          lower_better=m.lower_better)
            psnr = measures.psnr(xa, x).numpy()
            rows += [{"image_id": i, "purifier": spec, "setting": setting,
                      "score_def_clean": float(c), "score_def_attacked": float(a),
                      "moved": float(mv), "psnr_attacked": float(p), "eot": dm.eot,
                      "bpda": dm.use_bpda, "time_attack_s": t_attack}
                     for i, c, a, mv, p in zip(ids, s_clean, s, moved, psnr)]
    return pd.DataFrame(rows)


__all__ = [
    "adaptive_comparison",
    "attacked_images",
    "calibration",
    "calibration_images",
    "clean_fidelity",
    "distortion_response",
    "metric_scores",
    "purified_images",
]
