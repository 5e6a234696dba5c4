"""What notebook 11 runs: certified widths, the attack check, and the empirical purifiers beside
the certified ones, each returning a tidy DataFrame.

- :func:`width_sweep` certified interval vs L2 radius and sigma, per metric and smoothing kind
  (mean and median smoothing share one set of draws; so do their denoised forms);
- :func:`fidelity` what smoothing costs on clean images: SROCC of ``f_s(clean)`` vs ``f(clean)``;
- :func:`attack_check` L2 PGD with EOT against the smoothed metric in both directions, and
  whether the attacked smoothed score stays inside the certified interval (how tight it is);
- :func:`purifier_comparison` the same L2 budget against the bare metric behind each empirical
  purifier (adaptive: BPDA / EOT through the purifier), for the side-by-side table.

Scores are reported raw and divided by the metric's range (``/range`` columns).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..evaluate import measures
from ..metrics.base import IQAMetric
from .attack import PGDL2
from .smoothing import GROUP_ALPHA, SmoothedMetric, certify_samples

#: smoothing kinds by their certified-iqa-defenses names: (smoothing, denoiser)
KINDS = {"rs": ("mean", None), "ms": ("median", None), "drs": ("mean", "ffdnet"),
         "dms": ("median", "ffdnet"), "ddrs": ("mean", "diffusion"),
         "ddms": ("median", "diffusion")}
#: the bound each smoothing reports by default, and the alternatives shown beside it
METHODS = {"mean": ("hoeffding", "cdf"), "median": ("binomial",)}


def _metric(metric, device: str = "cpu") -> IQAMetric:
    if isinstance(metric, IQAMetric):
        return metric
    from ..api import load_metric

    return load_metric(metric, device=device)


def _batch(images):
    """``(x [B,3,H,W], ids)`` from an ImageSet or a tensor."""
    if torch.is_tensor(images):
        return images, [f"img{i:04d}" for i in range(images.shape[0])]
    return images.batch(images.ids), list(images.ids)


def _attack(attack: PGDL2, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """``attack(x)`` a few images at a time (an EOT graph holds n_grad copies of each image);
    returns the attacked images on ``x``'s device and the seconds per image."""
    from ..evaluate import run

    out = run.attack(attack, x, batch_size=batch_size)
    return out.images.to(x.device), float(np.mean(out.seconds_per_image))


def _kinds(kinds: Sequence[str]) -> list[str]:
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown smoothing kinds {bad}; choose from {', '.join(KINDS)}")
    return list(kinds)


def width_sweep(metric, images, *, sigmas: Sequence[float] = (0.12, 0.25),
                eps: Sequence[float] = (0.0, 0.05, 0.1, 0.25, 0.5),
                kinds: Sequence[str] = ("rs", "ms", "drs", "dms"), n: int = 100,
                alpha: float = GROUP_ALPHA, tolerance: float = 0.05, seed: int = 0,
                batch_size: int = 32, device: str = "cpu") -> pd.DataFrame:
    """Certified intervals of ``metric`` smoothed every way in ``kinds`` at every ``sigma``, for
    every image and radius: one row per metric x kind x method x sigma x image x eps with
    ``base`` (f(clean)), ``estimate``, ``lower``, ``upper``, ``width``, ``width/range``, the
    sampling time per image and ``radius``: the certified radius within which the smoothed
    score moves by at most ``tolerance`` x range (valid for all radii at once: the mean's
    bound, or DKW for the median). Kinds with the same denoiser share their ``n`` draws."""
    from ..evaluate import run

    m = _metric(metric, device)
    x, ids = _batch(images)
    width = m.range_width
    base = None
    rows = []
    by_denoiser: dict[str | None, list[str]] = {}
    for k in _kinds(kinds):
        by_denoiser.setdefault(KINDS[k][1], []).append(k)
    for sigma in sigmas:
        for denoiser, ks in by_denoiser.items():
            sm = SmoothedMetric(m, sigma=sigma, denoiser=denoiser, n=n, batch_size=batch_size,
                                seed=seed)
            t0 = time.perf_counter()
            with torch.no_grad():
                draws = sm.sample(x.to(m.device), n, seed=seed + 1)
            t_img = (time.perf_counter() - t0) / x.shape[0]
            if base is None:
                base = run.score(m, x, batch_size=batch_size)
            for k in ks:
                smoothing = KINDS[k][0]
                for method in METHODS[smoothing]:
                    cert = certify_samples(draws, eps, sigma=sigma, smoothing=smoothing,
                                           bounds=sm.bounds, alpha=alpha, method=method,
                                           base=base, time_per_image_s=t_img)
                    f = cert.to_frame(ids)
                    f.insert(0, "kind", k)
                    f.insert(0, "metric", m.name)
                    f["denoiser"] = denoiser or "none"
                    f["width/range"] = f["width"] / width
                    simultaneous = method if method != "binomial" else "dkw"
                    f["radius"] = np.repeat(cert.radius(tolerance * width, method=simultaneous),
                                            len(cert.eps))
                    f["tolerance/range"] = tolerance
                    rows.append(f)
    return pd.concat(rows, ignore_index=True)


def fidelity(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per metric x kind x method x sigma: SROCC and PLCC of the smoothed clean score against
    ``f(clean)`` (what smoothing costs when nobody attacks), the mean shift
    ``|f_s(clean) - f(clean)| / range`` is in ``shift/range`` when the sweep carries ranges."""
    one = sweep[sweep["eps"] == sweep["eps"].min()]
    keys = ["metric", "kind", "method", "sigma"]
    out = []
    for k, g in one.groupby(keys, sort=True):
        out.append(dict(zip(keys, k)) | {
            "n_images": len(g), "srocc": measures.srocc(g["base"], g["estimate"]),
            "plcc": measures.plcc(g["base"], g["estimate"]),
            "mean_abs_shift": float(np.mean(np.abs(g["estimate"] - g["base"]))),
            "time_per_image_s": float(g["time_per_image_s"].mean())})
    return pd.DataFrame(out)


def attack_check(metric, images, *, kinds: Sequence[str] = ("rs", "ms"), sigma: float = 0.12,
                 eps: float = 0.25, n_cert: int = 100, n_eval: int = 100, n_grad: int = 8,
                 steps: int = 10, alpha: float = GROUP_ALPHA, seed: int = 0,
                 batch_size: int = 32, attack_batch: int = 4,
                 device: str = "cpu") -> pd.DataFrame:
    """Attack each smoothed metric with L2 PGD + EOT (``n_grad`` noise draws per step) at
    radius ``eps`` in both directions and check the certificate.

    One row per kind x image x direction: the certified interval at ``eps`` and the smoothed
    clean score (both from ``n_cert`` draws at the clean image), the smoothed score at the
    attacked image (``n_eval`` fresh draws), ``inside`` (the attacked estimate lies in the interval),
    ``inside_ci`` (its own ``1 - alpha`` confidence interval reaches the certified one: a
    violation beyond Monte-Carlo doubt is ``not inside_ci``), the attack's change toward the
    bound, the certified room in that direction and their ratio ``tightness`` (1 = the attack
    reached the bound), and the perturbation's L2 norm. ``attack_batch`` images are attacked
    at a time (the EOT graph holds ``n_grad`` noisy copies of each).
    """
    from . import bounds as B

    m = _metric(metric, device)
    x, ids = _batch(images)
    x = x.to(m.device)
    rows = []
    for k in _kinds(kinds):
        smoothing, denoiser = KINDS[k]
        sm = SmoothedMetric(m, sigma=sigma, smoothing=smoothing, denoiser=denoiser, n=n_eval,
                            n_grad=n_grad, batch_size=batch_size, seed=seed)
        cert = sm.certify(x, [eps], n=n_cert, alpha=alpha, seed=seed + 1)
        clean = cert.estimate
        for direction in ("raise", "lower"):
            x_adv, t_att = _attack(PGDL2(sm, eps=eps, steps=steps, direction=direction,
                                         seed=seed), x, attack_batch)
            with torch.no_grad():
                draws = sm.sample(x_adv, n_eval, seed=seed + 3).double().cpu()
            adv = sm.reduce(draws).numpy()
            if smoothing == "mean":
                ci_lo, ci_hi = B.hoeffding_interval(draws.numpy(), *sm.bounds, alpha=alpha)
            else:
                ci_lo, ci_hi = B.percentile_interval(draws.numpy(), 0.5, alpha, lo=sm.bounds[0],
                                                     hi=sm.bounds[1])
                ci_lo, ci_hi = ci_lo[:, 0], ci_hi[:, 0]
            lower, upper = cert.lower[:, 0], cert.upper[:, 0]
            # "up" = the raw score goes up: raising quality of a lower-is-better metric lowers it
            up = (direction == "raise") != m.lower_better
            change = (adv - clean) if up else (clean - adv)
            room = (upper - clean) if up else (clean - lower)
            l2 = (x_adv - x).flatten(1).norm(dim=1).cpu().numpy()
            rows.append(pd.DataFrame({
                "metric": m.name, "kind": k, "sigma": sigma, "eps": eps, "image_id": ids,
                "direction": direction, "lower": lower, "upper": upper, "clean": clean,
                "attacked": adv, "inside": (adv >= lower) & (adv <= upper),
                "inside_ci": (ci_hi >= lower) & (ci_lo <= upper),
                "change": change, "certified_room": room,
                "tightness": np.where(room > 0, change / np.where(room > 0, room, 1), np.nan),
                "l2": l2, "n_cert": n_cert, "n_eval": n_eval, "n_grad": n_grad, "steps": steps,
                "alpha": alpha, "time_attack_s": t_att}))
    out = pd.concat(rows, ignore_index=True)
    out["change/range"] = out["change"] / m.range_width
    out["certified_room/range"] = out["certified_room"] / m.range_width
    return out


def purifier_comparison(metric, images, purifiers: Sequence[str], *, eps: float = 0.25,
                        steps: int = 10, eot: int = 4, seed: int = 0, batch_size: int = 4,
                        device: str = "cpu") -> pd.DataFrame:
    """The empirical side at the same L2 budget: for each purifier ``P`` (``"none"`` for the
    bare metric), L2 PGD on ``f`` (non-adaptive) and on ``f(P(.))`` (adaptive: BPDA for
    non-differentiable purifiers, EOT over ``eot`` draws for stochastic ones), both raising the
    quality. One row per purifier x image x setting with the clean fidelity
    ``f(P(clean))``, the defended score of the attacked image and the change / range."""
    from ..attacks.adaptive import DefendedMetric
    from ..defenses import create_defense
    from ..evaluate import run

    m = _metric(metric, device)
    x, ids = _batch(images)
    x = x.to(m.device)
    f_clean = run.score(m, x, batch_size=batch_size)
    x_plain, _ = _attack(PGDL2(m, eps=eps, steps=steps, seed=seed), x, batch_size)
    rows = []
    for p in purifiers:
        if p in ("none", "identity"):
            defended = m
            purify = None
        else:
            purify = create_defense(p).to(m.device)
            defended = DefendedMetric(m, purify, eot=eot, seed=seed)
        t0 = time.perf_counter()
        fp_clean = run.score(defended, x, batch_size=batch_size)
        t_def = (time.perf_counter() - t0) / x.shape[0]
        x_adapt = x_plain if purify is None else _attack(
            PGDL2(defended, eps=eps, steps=steps, seed=seed), x, batch_size)[0]
        for setting, xa in (("non-adaptive", x_plain), ("adaptive", x_adapt)):
            fp_adv = run.score(defended, xa, batch_size=batch_size)
            change = m.sign * (fp_adv - fp_clean)
            rows.append(pd.DataFrame({
                "metric": m.name, "purifier": p, "setting": setting, "image_id": ids,
                "eps": eps, "f_clean": f_clean, "f_purified_clean": fp_clean,
                "f_purified_attacked": fp_adv, "change": change,
                "change/range": change / m.range_width, "time_defense_s": t_def}))
    return pd.concat(rows, ignore_index=True)


def side_by_side(check: pd.DataFrame, comparison: pd.DataFrame,
                 sweep: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per defense: the clean fidelity (SROCC of the defended clean score vs
    ``f(clean)``), the mean and worst quality gain an adaptive L2 attack of the same radius
    achieved (``/range``), and for the smoothed metrics the certified worst case at that radius
    (``certified/range``, the mean room toward a higher quality) and whether every attacked
    score stayed inside its interval."""
    rows = []
    adaptive = comparison[comparison["setting"] == "adaptive"]
    for p, g in adaptive.groupby("purifier", sort=False):
        rows.append({"defense": p, "certified": False,
                     "clean_srocc": measures.srocc(g["f_clean"], g["f_purified_clean"]),
                     "attack_gain/range": g["change/range"].mean(),
                     "attack_gain_max/range": g["change/range"].max(),
                     "certified/range": np.nan, "all_inside": np.nan,
                     "time_per_image_s": g["time_defense_s"].mean()})
    up = check[check["direction"] == "raise"]
    for k, g in up.groupby("kind", sort=False):
        fid = np.nan
        t = np.nan
        if sweep is not None:
            s = sweep[(sweep["kind"] == k) & (sweep["sigma"] == g["sigma"].iloc[0])
                      & (sweep["eps"] == sweep["eps"].min())]
            s = s.drop_duplicates("image_id")
            if len(s):
                fid = measures.srocc(s["base"], s["estimate"])
                t = float(s["time_per_image_s"].mean())
        rows.append({"defense": f"{k} (sigma {g['sigma'].iloc[0]:g})", "certified": True,
                     "clean_srocc": fid, "attack_gain/range": g["change/range"].mean(),
                     "attack_gain_max/range": g["change/range"].max(),
                     "certified/range": g["certified_room/range"].mean(),
                     "all_inside": bool(check[check["kind"] == k]["inside"].all()),
                     "time_per_image_s": t})
    return pd.DataFrame(rows)


__all__ = ["KINDS", "METHODS", "attack_check", "fidelity", "purifier_comparison",
           "side_by_side", "width_sweep"]
