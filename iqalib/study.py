"""The study's definition: what each profile runs and what every notebook does under it.

Gushchin et al., "Adversarial purification for no-reference image-quality metrics: applicability
study and new methods" (arXiv 2404.06957). A *profile* says how big a run is; papermill passes
its name to every notebook as ``PROFILE`` (``notebooks/params/<profile>.yaml`` carries only
``PROFILE``, ``SEED``, ``DEVICE``, ``INTERACTIVE`` and any override):

- ``smoke``: CI. Every notebook end to end in seconds on a 2-core CPU: 2 sample images at
  128 px, the offline learned metric, two attacks, five cheap purifiers.
- ``quick``: the CPU default of ``make reproduce``: 6 sample images at 192 px (the 299 px
  samples resized: every network call costs about 0.4x as much), the offline metrics
  ``effnet-iqa`` (every attack) and ``brisque`` (I-FGSM and AdvCF only: its gradient is slow on
  a CPU), every purifier, DiffPure with the offline FFDNet prior.
- ``paper``: the study: the NIPS 2017 development set (1000 images, ``make data``), Linearity,
  MetaIQA and SPAQ (``make weights``), the ten attacks, the sixteen purifiers, DiffPure at the
  MSU group's t = 5. Meant for one GPU.
- ``rehearsal``: the paper profile's metrics, attacks, purifiers and notebooks on one NIPS'17
  image (two in notebook 06, whose 80/20 split needs a held-out image) with CPU-sized settings:
  each of the ten attacks once, on one of the three metrics; DiffPure at t = 5 with the prior
  that is present (the guided UNet when its weights are) on one metric x attack; a one-image
  t sweep. It checks that the paper path runs end to end (with stand-in checkpoints, say)
  before a GPU is spent on it. Its numbers mean nothing.

This module is plain data plus small accessors and imports nothing heavy (registry look-ups
and the results store are imported inside the functions that need them):

- :data:`PROFILE_SETTINGS`: profile -> what every notebook shares (images, metrics, the
  attacks run on each metric, purifiers, DiffPure's t in the grid, batch size).
- :data:`NOTEBOOK_SETTINGS`: notebook -> profile -> that notebook's own knobs. A notebook adds
  its knobs with one entry holding a mapping for every profile in :data:`PROFILES`.
- :func:`settings` merges the two (a fresh copy, the notebook's knobs on top).
- :func:`images`, :func:`run_folder`, :func:`results_root`, :func:`tables_dir`,
  :func:`save_table`, :func:`collect`, :func:`results_table`, :func:`skipped`: where a
  notebook's results go and how they come back.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

from . import paths

PROFILES = ("smoke", "quick", "paper", "rehearsal")

# --- the study's lists (PAPER.md; the paper's order) -------------------------------------------
#: the study's three metrics
PAPER_METRICS = ["linearity", "metaiqa", "spaq"]
#: the study's ten attacks
PAPER_ATTACKS = ["ifgsm", "mifgsm", "amifgsm", "korhonen", "madc", "ssah", "zhang-dists",
                 "zhang-lpips", "zhang-ssim", "advcf"]
#: the universal attacks of the same group's robustness benchmark (trained perturbations)
UNIVERSAL_ATTACKS = ["uap", "cumulative-uap", "generative-uap"]
#: the study's non-diffusion purifiers with their default settings (notebook 04)
BASELINE_PURIFIERS = ["resize", "upscale-nearest", "upscale-bilinear", "upscale-bicubic", "flip",
                      "rotate", "random-crop", "gaussian-blur", "median", "jpeg", "unsharp",
                      "fcn-filter", "mprnet", "realesrgan"]
#: notebook 04's purifiers where notebook 06 trains the FCN filter as the authors did and puts
#: that filter in the grid (paper, rehearsal): one "fcn-filter" row, the trained one
_BASELINES_WITHOUT_FCN = [p for p in BASELINE_PURIFIERS if p != "fcn-filter"]
#: the diffusion purifiers (notebook 05: their grid at the profile's t, and the t sweep)
DIFFUSION_PURIFIERS = ["diffpure", "diffpure-unsharp"]
#: all sixteen purifiers of the study
PAPER_PURIFIERS = BASELINE_PURIFIERS + DIFFUSION_PURIFIERS
#: DiffPure's t in the study's table: the MSU group's default (``Defence(t=5)`` in
#: msu-video-group/adversarial-defenses-for-iqa, ``metrics/defences/diffpure/run.py``)
PAPER_DIFFPURE_T = 5
#: the paper's Flip row (PAPER.md; its last column is unknown)
PAPER_FLIP_ROW = {"Q": 0.158, "Gain": 0.077, "PSNR": 12.402, "SSIM": 0.162, "SROCC": 0.728}

#: the run folders (first path part below :func:`results_root`) whose rows make the results
#: tables: the same metrics and attacks for every purifier, on the profile's images (the FCN
#: filter of notebook 06 on those it did not train on). Runs on a subset (the quickstart,
#: DiffPure's t sweep) stay out, so a row of a table always means the same grid.
RESULT_RUNS = ["03_attacks", "04_baseline_purifiers", "05_diffpure", "06_fcn_filter"]

#: which notebooks' results each notebook reads (direct inputs only): 04 and 05 purify the
#: attacked images 03 cached; 07, 08 and 12 read the grid runs of :data:`RESULT_RUNS`; 09
#: attacks the best purifiers of 07's table. A notebook not named here reads no other one.
#: The Makefile's dependency lines say the same (a test checks that they agree), and the
#: notebook tests run a notebook's inputs first.
NOTEBOOK_INPUTS: dict[str, tuple[str, ...]] = {
    "04_baseline_purifiers": ("03_attacks",),
    "05_diffpure": ("03_attacks",),
    "07_results_tables": tuple(RESULT_RUNS),
    "08_clean_images": tuple(RESULT_RUNS),
    "09_adaptive_attacks": ("07_results_tables",),
    "12_attack_unknown": tuple(RESULT_RUNS),
}


def notebook_inputs(notebook: str) -> list[str]:
    """Every notebook whose results ``notebook`` needs, directly or through another one, in
    the order to run them (number order), e.g. ``notebook_inputs("09_adaptive_attacks")``
    gives 03-07."""
    seen: set[str] = set()
    todo = list(NOTEBOOK_INPUTS.get(notebook, ()))
    while todo:
        nb = todo.pop()
        if nb not in seen:
            seen.add(nb)
            todo.extend(NOTEBOOK_INPUTS.get(nb, ()))
    return sorted(seen)


def diffusion_specs(t: int) -> list[str]:
    """DiffPure and DiffPure + Unsharp at ``t`` as registry specs (``["diffpure:t5", ...]``)."""
    return [f"{name}:t{int(t)}" for name in DIFFUSION_PURIFIERS]


#: the rehearsal's attacks: the ten split over the three metrics, the iterative ones that make
#: many gradient calls on the cheapest network (MetaIQA's ResNet-18), AdvCF on Linearity (the
#: pair notebook 06 trains the FCN filter on, as the authors did)
_REHEARSAL_ATTACKS = {
    "linearity": ["ifgsm", "advcf"],
    "metaiqa": ["korhonen", "madc", "ssah", "zhang-dists", "zhang-lpips"],
    "spaq": ["mifgsm", "amifgsm", "zhang-ssim"],
}


# --- what every notebook of a profile shares ---------------------------------------------------
#: profile -> shared settings. ``attacks`` maps each metric to the attacks run on it;
#: ``purifiers`` are notebook 04's (the FCN filter is notebook 06's where it trains it),
#: ``diffusion_t`` is DiffPure's t in notebook 05's grid;
#: ``size`` (None: the images' own) resizes and centre-crops every image; ``batch_size`` is
#: images per forward pass, or "auto" (from the free GPU memory; the CPU default elsewhere).
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {
        # 128 px crops: a gradient step of the learned metric costs ~5x less than at 299 px
        "dataset": "samples", "n_images": 2, "size": 128,
        "metrics": ["effnet-iqa"],
        "attacks": {"effnet-iqa": ["ifgsm", "advcf"]},
        "purifiers": ["flip", "jpeg", "gaussian-blur", "resize", "median"],
        "diffusion_t": 5,
        "batch_size": 2,
    },
    "quick": {
        # 6 images at 192 px: the whole workbook in under 10 minutes on 2 cores (8 min 35 s
        # measured, README; 192 px keeps two of NIQE's 96 px patches per side); the paper
        # profile runs the NIPS'17 images at their 299 px
        "dataset": "samples", "n_images": 6, "size": 192,
        "metrics": ["effnet-iqa", "brisque"],
        # BRISQUE's gradient is slow on a CPU (about 0.2-1.2 s per 299 px image per step): two
        # cheap, very different attacks (additive I-FGSM and the AdvCF colour filter). The Zhang et al. DISTS / LPIPS attacks need
        # checkpoints: the grid records them as skipped with the command that fetches them.
        "attacks": {"effnet-iqa": list(PAPER_ATTACKS), "brisque": ["ifgsm", "advcf"]},
        "purifiers": list(BASELINE_PURIFIERS),
        "diffusion_t": PAPER_DIFFPURE_T,
        "batch_size": 4,
    },
    "paper": {
        "dataset": "nips17", "n_images": 1000, "size": None,
        "metrics": list(PAPER_METRICS),
        "attacks": {m: list(PAPER_ATTACKS) for m in PAPER_METRICS},
        "purifiers": list(_BASELINES_WITHOUT_FCN),
        "diffusion_t": PAPER_DIFFPURE_T,
        # chunks sized from the free GPU memory (iqalib.evaluate.run.auto_batch_size)
        "batch_size": "auto",
    },
    "rehearsal": {
        "dataset": "nips17", "n_images": 1, "size": None,
        "metrics": list(PAPER_METRICS),
        # each of the ten attacks once, on one of the paper's metrics: every attack's code path
        # meets a paper architecture, at a tenth of ten attacks x three metrics (hours on a CPU)
        "attacks": dict(_REHEARSAL_ATTACKS),
        "purifiers": list(_BASELINES_WITHOUT_FCN),
        # the smallest t with a registry preset; each step is one call of the guided UNet per
        # image, about ten seconds on a CPU
        "diffusion_t": 5,
        "batch_size": 2,
    },
}

_DISTORTIONS = ["noise", "blur", "jpeg", "contrast", "saturation", "pixelate"]

# --- what each notebook does under each profile ---------------------------------------------------
#: notebook -> profile -> its own knobs (on top of :data:`PROFILE_SETTINGS` in :func:`settings`)
NOTEBOOK_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    # the whole path on the offline sample set in every profile: BRISQUE needs no download
    "00_quickstart": {
        p: {"dataset": "samples", "size": None, "n_images": n, "metric": "brisque",
            "attack": "ifgsm", "defenses": ["flip", "jpeg", "gaussian-blur"]}
        for p, n in (("smoke", 2), ("quick", 8), ("paper", 8), ("rehearsal", 2))
    },
    "01_data_and_metrics": {
        # NIQE on 512x384 calibration images takes seconds each: BRISQUE only in smoke
        "smoke": {"score_metrics": ["effnet-iqa", "brisque"], "calibration": ["brisque"],
                  "distortions": ["noise", "blur", "jpeg"], "distortion_levels": [0, 1, 3, 5]},
        "quick": {"score_metrics": ["effnet-iqa", "brisque", "niqe", "piqe"],
                  "calibration": ["brisque", "niqe"], "distortions": list(_DISTORTIONS),
                  "distortion_levels": [0, 1, 2, 3, 4, 5]},
        "paper": {"score_metrics": [*PAPER_METRICS, "effnet-iqa", "brisque", "niqe", "piqe"],
                  "calibration": ["brisque", "niqe"], "distortions": list(_DISTORTIONS),
                  "distortion_levels": [0, 1, 2, 3, 4, 5]},
        "rehearsal": {"score_metrics": [*PAPER_METRICS, "effnet-iqa", "brisque", "niqe", "piqe"],
                      "calibration": ["brisque"], "distortions": list(_DISTORTIONS),
                      "distortion_levels": [0, 5]},
    },
    # --- 02: effnet-iqa's head (iqalib.training.learned_metric). ``train``: None loads the shipped
    # head, else train_learned_metric's settings (paper: the shipped head's own recipe);
    # ``eval_photos`` / ``test_crops``: the held-out set when nothing is trained; I-FGSM on
    # ``attack_photos`` held-out crops of ``attack_size`` px
    "02_learned_metric": {
        "smoke": {"train": None, "eval_photos": 2, "test_crops": 1, "attack_photos": 1,
                  "attack_size": 128},
        "quick": {"train": {"n_crops": 1, "n_extra_crops": 1, "n_test_crops": 1, "epochs": 200},
                  "eval_photos": 4, "test_crops": 1, "attack_photos": 2, "attack_size": 224},
        "paper": {"train": {"n_crops": 6, "n_extra_crops": 3, "n_test_crops": 2, "epochs": 400},
                  "eval_photos": 4, "test_crops": 2, "attack_photos": 4, "attack_size": 224},
        "rehearsal": {"train": {"n_crops": 1, "n_extra_crops": 0, "n_test_crops": 1,
                                "epochs": 50},
                      "eval_photos": 4, "test_crops": 1, "attack_photos": 1, "attack_size": 128},
    },
    # --- end 02
    # how many images the attack-examples figure shows
    "03_attacks": {p: {"examples": 2} for p in PROFILES},
    "04_baseline_purifiers": {p: {} for p in PROFILES},
    # DiffPure's t sweep on one metric x attack (its grid at ``diffusion_t`` uses the shared
    # metrics, attacks and images)
    "05_diffpure": {
        "smoke": {"sweep": {"metric": "effnet-iqa", "attack": "ifgsm", "n_images": 2,
                            "t": [5]}},
        # each image costs sum(t) = 85 FFDNet calls per side (clean, attacked)
        "quick": {"sweep": {"metric": "brisque", "attack": "ifgsm", "n_images": 2,
                            "t": [5, 10, 20, 50]}},
        # the paper's t values (arXiv 2404.06957: t in {5, 10, 20, 30, 50}); the classifier
        # papers' t* = 0.1-0.15 (t = 100, 150) is an option: notebook 05's T_SWEEP parameter.
        # Each t costs 2 x 1000 x t guided-UNet calls: this sweep is 230 000 of them, with
        # 100 and 150 it would be 730 000, three quarters of the paper run's UNet work.
        "paper": {"sweep": {"metric": "linearity", "attack": "ifgsm", "n_images": 1000,
                            "t": [5, 10, 20, 30, 50]}},
        # the guided UNet costs about half a minute per image and step on 2 CPU cores: the
        # rehearsal's DiffPure grid runs on one metric x attack (the same code path as thirty)
        "rehearsal": {"metrics": ["metaiqa"], "attacks": {"metaiqa": ["korhonen"]},
                      "sweep": {"metric": "metaiqa", "attack": "korhonen", "n_images": 1,
                                "t": [5]}},
    },
    # --- 06: the FCN filter (iqalib.training.fcn_filter.train_like_authors). ``train``: the metric
    # AdvCF attacks and the epochs (the authors: Linearity, 200); ``grid_filter``: which filter the
    # results grid runs, "trained" (here, on the held-out 20 %) or "shipped" (the offline asset,
    # which never saw the sample set, on every image)
    "06_fcn_filter": {
        "smoke": {"train": {"metric": "effnet-iqa", "attack": "advcf", "epochs": 2},
                  "grid_filter": "shipped"},
        "quick": {"train": {"metric": "effnet-iqa", "attack": "advcf", "epochs": 8},
                  "grid_filter": "shipped"},
        "paper": {"train": {"metric": "linearity", "attack": "advcf", "epochs": 200},
                  "grid_filter": "trained"},
        # the authors' 80/20 split needs two images: one to train on, one held out
        "rehearsal": {"train": {"metric": "linearity", "attack": "advcf", "epochs": 2},
                      "grid_filter": "trained", "n_images": 2},
    },
    # --- end 06
    "07_results_tables": {p: {} for p in PROFILES},
    # purify(clean) vs clean: every purifier of the results tables (DiffPure at the grid's t)
    # except those in ``fidelity_exclude``
    "08_clean_images": {
        **{p: {"fidelity_exclude": []} for p in ("smoke", "quick", "paper")},
        # the guided UNet on a CPU: minutes per image
        "rehearsal": {"fidelity_exclude": list(DIFFUSION_PURIFIERS)},
    },
    # BPDA / EOT through the best purifiers of notebook 07 (``top_k`` by SROCC), or ``fallback``
    "09_adaptive_attacks": {
        "smoke": {"adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "from_results": False,
                               "purifiers": ["flip", "jpeg"], "top_k": 2, "eot": 1,
                               "n_images": 1, "exclude": []}},
        "quick": {"adaptive": {"metric": "effnet-iqa", "attack": "ifgsm", "from_results": True,
                               "fallback": ["flip", "jpeg", "random-crop"], "top_k": 3,
                               "eot": 4, "n_images": 4,
                               # DiffPure through EOT x 10 attack steps takes too long on a CPU
                               "exclude": list(DIFFUSION_PURIFIERS)}},
        "paper": {"adaptive": {"metric": "metaiqa", "attack": "ifgsm", "from_results": True,
                               "fallback": ["flip", "diffpure-unsharp", "fcn-filter", "jpeg"],
                               "top_k": 4, "eot": 8, "n_images": 100, "exclude": []}},
        "rehearsal": {"adaptive": {"metric": "metaiqa", "attack": "ifgsm", "from_results": True,
                                   "fallback": ["flip", "jpeg"], "top_k": 2, "eot": 2,
                                   "n_images": 1,
                                   "exclude": list(DIFFUSION_PURIFIERS)}},
    },
    # the interactive comparison app's choices
    "10_interactive": {
        "smoke": {"compare": {"metric": "effnet-iqa", "attacks": ["ifgsm"],
                              "defenses": ["identity", "flip", "jpeg"]}},
        "quick": {"compare": {"metric": "effnet-iqa",
                              "attacks": ["ifgsm", "mifgsm", "advcf", "korhonen"],
                              "defenses": ["identity", "flip", "jpeg", "gaussian-blur", "median",
                                           "random-crop", "fcn-filter"]}},
        "paper": {"compare": {"metric": "metaiqa", "attacks": list(PAPER_ATTACKS),
                              "defenses": ["identity", *PAPER_PURIFIERS]}},
        "rehearsal": {"compare": {"metric": "metaiqa", "attacks": ["ifgsm", "advcf"],
                                  "defenses": ["identity", "flip", "jpeg"]}},
    },
    # --- beyond the paper: certified bounds (11) and the attack-unknown setting (12) -----------
    # 11: images at ``size`` (Monte-Carlo draws cost n metric calls per image); ``sweep`` is the
    # certified width vs radius and sigma, ``check`` the L2 PGD + EOT attack against the
    # smoothed metric, ``compare_purifiers`` the empirical side at the same L2 budget,
    # ``tolerance`` the score change (x range) the certified radius is given for (the radius is
    # chosen from the data, so it uses the DKW band, loose at small n). The group's settings
    # (katiashh/certified-iqa-defenses): sigma 0.12, n 1000, alpha 0.001.
    "11_certified_bounds": {
        "smoke": {"n_images": 2, "size": 64, "sweep": {
            "metrics": ["effnet-iqa"], "sigmas": [0.12, 0.25], "n": 16,
            "eps": [0.0, 0.05, 0.1, 0.25, 0.5], "kinds": ["rs", "ms", "drs", "dms"]},
            "check": {"metric": "effnet-iqa", "kinds": ["rs", "ms"], "sigma": 0.25, "eps": 0.25,
                      "n_cert": 32, "n_eval": 32, "n_grad": 2, "steps": 3},
            "compare_purifiers": ["none", "flip", "jpeg"], "alpha": 0.001, "tolerance": 0.2},
        "quick": {"n_images": 6, "size": 64, "sweep": {
            "metrics": ["effnet-iqa", "brisque"], "sigmas": [0.12, 0.25], "n": 32,
            "eps": [0.0, 0.05, 0.1, 0.25, 0.5, 1.0], "kinds": ["rs", "ms", "drs", "dms"]},
            "check": {"metric": "effnet-iqa", "kinds": ["rs", "ms"], "sigma": 0.25, "eps": 0.25,
                      "n_cert": 32, "n_eval": 32, "n_grad": 4, "steps": 6},
            "compare_purifiers": ["none", "flip", "jpeg", "gaussian-blur", "median"],
            "alpha": 0.001, "tolerance": 0.2},
        # 20 images x 1000 draws x 2 sigmas x 3 denoisers (none, FFDNet, the guided UNet once
        # per draw) per metric: about an hour on one GPU
        "paper": {"n_images": 20, "size": None, "sweep": {
            "metrics": list(PAPER_METRICS), "sigmas": [0.12, 0.25], "n": 1000,
            "eps": [0.0, 0.05, 0.1, 0.25, 0.5, 1.0],
            "kinds": ["rs", "ms", "drs", "dms", "ddrs", "ddms"]},
            "check": {"metric": "metaiqa", "kinds": ["rs", "ms", "drs"], "sigma": 0.12,
                      "eps": 0.1, "n_cert": 1000, "n_eval": 1000, "n_grad": 16, "steps": 20},
            "compare_purifiers": ["none", "flip", "jpeg", "gaussian-blur", "median", "fcn-filter",
                                  "diffpure-unsharp:t5"], "alpha": 0.001, "tolerance": 0.1},
        # the sweep's code is the same for every metric, and ddrs calls the guided UNet on
        # every draw: on a CPU one metric (the cheapest of the three) proves the path
        "rehearsal": {"n_images": 2, "size": None, "sweep": {
            "metrics": ["metaiqa"], "sigmas": [0.12], "n": 8,
            "eps": [0.0, 0.1, 0.5], "kinds": ["rs", "ms", "drs", "dms", "ddrs"]},
            "check": {"metric": "metaiqa", "kinds": ["rs", "ms"], "sigma": 0.12, "eps": 0.1,
                      "n_cert": 8, "n_eval": 8, "n_grad": 2, "steps": 2},
            "compare_purifiers": ["none", "flip", "jpeg"], "alpha": 0.001, "tolerance": 0.1},
    },
    # 12: the mixed stream and the detector read the results tables' rows (03-05); ``live`` is
    # the adaptive attack that also evades the detector, run on its own small image set
    "12_attack_unknown": {
        p: {"fractions": [0.0, 0.25, 0.5, 0.75, 1.0], "n_draws": n_draws, "fpr": 0.05,
            "transforms": ["flip", "jpeg", "gaussian-blur"], "combine": "mean",
            "pipeline_purifiers": pipeline, "live": live}
        for p, n_draws, pipeline, live in (
            ("smoke", 50, ["median"],
             {"metric": "effnet-iqa", "attack": "ifgsm", "n_images": 2, "size": 64}),
            ("quick", 200, ["median", "jpeg", "random-crop"],
             {"metric": "effnet-iqa", "attack": "ifgsm", "n_images": 6, "size": 128}),
            ("paper", 200, ["median", "jpeg", "diffpure-unsharp:t5"],
             {"metric": "metaiqa", "attack": "ifgsm", "n_images": 100, "size": None}),
            ("rehearsal", 20, ["median"],
             {"metric": "metaiqa", "attack": "ifgsm", "n_images": 2, "size": None}))
    },
    # --- end of the beyond-the-paper entries ---------------------------------------------------
}


def check_profile(profile: str) -> str:
    """``profile`` if it is one of :data:`PROFILES`, else a ValueError with a did-you-mean."""
    if profile not in PROFILE_SETTINGS:
        close = difflib.get_close_matches(str(profile), PROFILES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown profile {profile!r}.{hint} Choose one of {', '.join(PROFILES)}.")
    return profile


def _check_notebook(notebook: str) -> str:
    if notebook not in NOTEBOOK_SETTINGS:
        close = difflib.get_close_matches(str(notebook), list(NOTEBOOK_SETTINGS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no settings for notebook {notebook!r}.{hint} Add an entry to "
                         "iqalib.study.NOTEBOOK_SETTINGS.")
    return notebook


def settings(profile: str, notebook: str | None = None) -> dict[str, Any]:
    """What ``profile`` runs, with ``notebook``'s own knobs on top (a fresh copy: change it
    freely in a notebook).

    Shared keys: ``profile``, ``dataset`` ("samples" or "nips17"), ``n_images``, ``size``,
    ``metrics``, ``attacks`` (metric -> its attacks), ``all_attacks`` (their union in the
    paper's order), ``purifiers`` (notebook 04's), ``diffusion_t`` and ``diffusion`` (the
    DiffPure specs of notebook 05's grid), ``batch_size``. A notebook's knobs may override a
    shared key (the quickstart's ``dataset``, for example).
    """
    s = copy.deepcopy(PROFILE_SETTINGS[check_profile(profile)])
    if notebook is not None:
        s.update(copy.deepcopy(NOTEBOOK_SETTINGS[_check_notebook(notebook)][profile]))
    s["profile"] = profile
    seen = [a for m in s["metrics"] for a in s["attacks"][m]]
    s["all_attacks"] = [a for a in PAPER_ATTACKS + UNIVERSAL_ATTACKS if a in seen]
    s["diffusion"] = diffusion_specs(s["diffusion_t"])
    return s


def images(profile: str, notebook: str | None = None, n: int | None = None):
    """The :class:`~iqalib.datasets.ImageSet` a notebook runs on: the profile's data set
    (``samples`` offline; ``nips17`` after ``make data``), resized to the profile's ``size``
    when it has one, first ``n`` images (default: the settings' ``n_images``)."""
    from .datasets import load_dataset

    s = settings(profile, notebook)
    return load_dataset(s["dataset"], n=int(n if n is not None else s["n_images"]),
                        size=s["size"])


def results_root(profile: str) -> Path:
    """``results_dir()/<profile>``: every notebook's run folder of this profile is below it."""
    return paths.results_dir() / check_profile(profile)


def run_folder(profile: str, notebook: str) -> Path:
    """The run folder of one notebook, e.g. ``run_folder("quick", "04_baseline_purifiers")``."""
    return results_root(profile) / notebook


def tables_dir(profile: str) -> Path:
    """Where notebooks save their CSV tables (``results_dir()/<profile>/tables``)."""
    d = results_root(profile) / "tables"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_table(table, profile: str, name: str, *, index: bool = True) -> Path:
    """Write a DataFrame as ``<tables_dir>/<name>.csv`` and return the path."""
    path = tables_dir(profile) / f"{name}.csv"
    table.to_csv(path, index=index)
    return path


def collect(profile: str, runs: list[str] | None = None):
    """Every run folder of ``profile`` as one tidy table with a ``run`` column
    (:func:`iqalib.evaluate.store.collect`); ``runs`` keeps only those whose first path part
    is in it."""
    from .evaluate import store

    return store.collect(results_root(profile), runs)


def results_table(profile: str):
    """The rows the results tables are made of: the runs of :data:`RESULT_RUNS`."""
    return collect(profile, RESULT_RUNS)


def skipped(profile: str, run: str | None = None):
    """What the grid recorded as not done under ``profile`` (columns ``run``, ``what``,
    ``why``: e.g. a purifier whose weights are missing, with its ``make weights`` command);
    ``run`` keeps the rows of run folders whose path starts with it."""
    from .evaluate import store

    sk = store.skipped(results_root(profile))
    if run is not None:
        sk = sk[sk["run"].str.startswith(run)].reset_index(drop=True)
    return sk


__all__ = [
    "BASELINE_PURIFIERS",
    "DIFFUSION_PURIFIERS",
    "NOTEBOOK_INPUTS",
    "NOTEBOOK_SETTINGS",
    "PAPER_ATTACKS",
    "PAPER_DIFFPURE_T",
    "PAPER_FLIP_ROW",
    "PAPER_METRICS",
    "PAPER_PURIFIERS",
    "PROFILES",
    "PROFILE_SETTINGS",
    "RESULT_RUNS",
    "UNIVERSAL_ATTACKS",
    "check_profile",
    "collect",
    "diffusion_specs",
    "images",
    "notebook_inputs",
    "results_root",
    "results_table",
    "run_folder",
    "save_table",
    "settings",
    "skipped",
    "tables_dir",
]
