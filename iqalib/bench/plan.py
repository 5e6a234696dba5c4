"""The work of a whole profile run, counted: how many images pass through each network.

:func:`workload` reads a profile's settings from :mod:`iqalib.study` (the notebooks' own
definition) and lists, notebook by notebook, how many times each *component* runs on one
image. Components are what :mod:`iqalib.bench.projection` times:

- ``metric_grad:<metric>`` one forward+backward of the metric, ``metric_fwd:<metric>`` one
  forward (a score);
- ``attack_extra:<attack>`` an attack's own work per image beyond its metric passes (the
  DISTS / LPIPS network of Zhang et al., SSAH's wavelets, AdvCF's filter, Adam);
- ``purify:<spec>`` one purification, ``purify_grad:<spec>`` one with its backward pass
  (adaptive attacks through a differentiable purifier);
- ``unet`` one call of DiffPure's prior network, ``sampler_step`` the sampler's own work per
  step, ``diffpure_io`` its resize in and out (DiffPure at t = ``unet`` x t + ``sampler_step``
  x t + ``diffpure_io``);
- ``fcn_train`` one training image of the FCN filter (forward, backward, Adam; batch 4).

Attack loops are counted, not assumed: ``attack_calls`` holds each attack's metric passes
per image (:func:`iqalib.bench.counting.attack_network_calls`), and ``purifiers`` each
purifier's DiffPure steps and flags (:func:`purifier_info`). The plan assumes the grid does
no repeated work (the clean side purified and scored once per metric x purifier x image,
DiffPure+Unsharp reusing DiffPure's output of the same t): ``make bench`` measures whether
the grid does. Small things are left out: figures' example images (a few images each),
calibration images, tables and plots; notebook 02 trains the offline metric on its own
fixed data set whatever the profile (minutes on a CPU) and is not projected.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """``count`` runs of ``component`` (per image) in ``stage``."""

    stage: str
    component: str
    count: float


@dataclass(frozen=True)
class PurifierInfo:
    """What the plan needs to know of a purifier spec: DiffPure's network calls per image
    (``nfe``, 0 without DiffPure; the DiffPure part's settings in ``diffpure_key``, so two
    specs sharing it share its output), the purifiers applied after DiffPure (``after``), and
    the flags adaptive attacks look at."""

    nfe: int = 0
    diffpure_key: str = ""
    after: tuple[str, ...] = ()
    stochastic: bool = False
    differentiable: bool = True


def purifier_info(spec: str, build=None) -> PurifierInfo:
    """:class:`PurifierInfo` of a registry spec, read from the purifier ``build(spec)`` makes
    (default :func:`iqalib.defenses.create_defense`; DiffPure loads its prior on first use,
    so building it is cheap)."""
    from ..defenses import create_defense
    from ..defenses.base import Compose
    from ..defenses.diffpure import DiffPure

    d = (build or create_defense)(spec)
    parts = d.defenses if isinstance(d, Compose) else [d]
    flags = {"stochastic": bool(d.stochastic), "differentiable": bool(d.differentiable)}
    if isinstance(parts[0], DiffPure):
        dp = parts[0]
        return PurifierInfo(nfe=dp.nfe, diffpure_key=dp.params_json(),
                            after=tuple(p.name for p in parts[1:]), **flags)
    return PurifierInfo(**flags)


def purify_work(stage: str, specs: list[str], count: float,
                info: dict[str, PurifierInfo]) -> list[Work]:
    """``count`` images through each purifier of ``specs``, run side by side on the same
    inputs: DiffPure runs once per distinct setting, compositions add their later parts."""
    out: list[Work] = []
    diffpure_done: set[str] = set()
    for spec in specs:
        i = info[spec]
        if i.nfe == 0:
            out.append(Work(stage, f"purify:{spec}", count))
            continue
        if i.diffpure_key not in diffpure_done:
            diffpure_done.add(i.diffpure_key)
            out += [Work(stage, "unet", count * i.nfe),
                    Work(stage, "sampler_step", count * i.nfe),
                    Work(stage, "diffpure_io", count)]
        out += [Work(stage, f"purify:{p}", count) for p in i.after]
    return out


def attack_work(stage: str, metric: str, attack: str, count: float,
                calls: dict[str, dict[str, float]]) -> list[Work]:
    """``count`` images attacked by ``attack`` on ``metric``."""
    c = calls[attack]
    return [Work(stage, f"metric_grad:{metric}", count * c["grad"]),
            Work(stage, f"metric_fwd:{metric}", count * c["plain"]),
            Work(stage, f"attack_extra:{attack}", count)]


def _settings(profile: str, notebook: str) -> dict:
    from .. import study

    if notebook in study.NOTEBOOK_SETTINGS:
        return study.settings(profile, notebook)
    return study.settings(profile)


def specs_needed(profile: str) -> dict[str, list[str]]:
    """The attacks and purifier specs a profile's workload refers to (what to count and
    time before :func:`workload` can be called)."""
    s = _settings(profile, "05_diffpure")
    sweep = s.get("sweep", {})
    purifiers = list(s["purifiers"]) + list(s["diffusion"])
    purifiers += [f"{p}:t{t}" for t in sweep.get("t", []) for p in ("diffpure", "diffpure-unsharp")]
    ad = _settings(profile, "09_adaptive_attacks").get("adaptive", {})
    purifiers += list(ad.get("purifiers") or ad.get("fallback") or [])
    purifiers.append("fcn-filter")
    attacks = list(s["all_attacks"]) + [a for a in (sweep.get("attack"), ad.get("attack"), "advcf")
                                        if a]
    return {"attacks": list(dict.fromkeys(attacks)), "purifiers": list(dict.fromkeys(purifiers))}


def workload(profile: str, attack_calls: dict[str, dict[str, float]],
             purifiers: dict[str, PurifierInfo]) -> list[Work]:
    """Every :class:`Work` item of a ``profile`` run (:mod:`iqalib.study`), notebook by
    notebook, with the grid doing no repeated work (see the module docstring)."""
    w: list[Work] = []
    base = _settings(profile, "03_attacks")
    n = base["n_images"]
    metrics, attacks = base["metrics"], base["attacks"]

    # 01: every score metric on the clean images, then on each distortion at each level
    s01 = _settings(profile, "01_data_and_metrics")
    levels = len(s01.get("distortion_levels", []))
    kinds = len(s01.get("distortions", []))
    for m in s01.get("score_metrics", []):
        w.append(Work("01 data and metrics: scores", f"metric_fwd:{m}", n * (1 + kinds * levels)))

    # 03: each metric x attack on every image; clean scores once per metric, attacked per attack
    for m in metrics:
        for a in attacks[m]:
            w += attack_work(f"03 attacks on {m}", m, a, n, attack_calls)
    for m in metrics:
        w.append(Work("03 attacks: scores", f"metric_fwd:{m}", n * (1 + len(attacks[m]))))

    # 04: every baseline purifier on the clean image (once per metric) and on each attacked one
    s04 = _settings(profile, "04_baseline_purifiers")
    for m in metrics:
        inputs = n * (1 + len(attacks[m]))
        w += purify_work("04 baseline purifiers", list(s04["purifiers"]), inputs, purifiers)
        w.append(Work("04 baseline purifiers: scores", f"metric_fwd:{m}",
                      inputs * (1 + len(s04["purifiers"]))))

    # 05: DiffPure and DiffPure+Unsharp at the grid's t on the whole grid, then the t sweep
    s05 = _settings(profile, "05_diffpure")
    for m in metrics:
        inputs = n * (1 + len(attacks[m]))
        w += purify_work(f"05 DiffPure grid (t={s05['diffusion_t']})", list(s05["diffusion"]),
                         inputs, purifiers)
        w.append(Work(f"05 DiffPure grid (t={s05['diffusion_t']})", f"metric_fwd:{m}",
                      inputs * len(s05["diffusion"])))
    sweep = s05.get("sweep")
    if sweep:
        stage = f"05 DiffPure t sweep ({sweep['metric']}, t={','.join(map(str, sweep['t']))})"
        inputs = sweep["n_images"] * 2  # clean and attacked (the attack comes from 03's cache)
        for t in sweep["t"]:
            specs = [f"diffpure:t{t}", f"diffpure-unsharp:t{t}"]
            w += purify_work(stage, specs, inputs, purifiers)
            w.append(Work(stage, f"metric_fwd:{sweep['metric']}", inputs * len(specs)))

    # 06: AdvCF on the images, FCN training, then every purifier on the held-out third
    w += _fcn_work(profile, n, attack_calls, purifiers)

    # 08: purify(clean) for PSNR / SSIM: every purifier of the results tables (04's, 05's
    # DiffPure at the grid's t, 06's FCN filter), except those it leaves out, side by side
    # (experiments.clean_fidelity: DiffPure+Unsharp reuses DiffPure's output there too)
    s08 = _settings(profile, "08_clean_images")
    specs = list(dict.fromkeys([*s08["purifiers"], *s08["diffusion"], "fcn-filter"]))
    w += purify_work("08 clean images", [
        spec for spec in specs if spec.split(":")[0] not in s08.get("fidelity_exclude", [])],
        n, purifiers)

    # 09: the adaptive attack through each purifier (BPDA forward only; EOT draws)
    w += _adaptive_work(profile, attack_calls, purifiers)
    return [x for x in w if x.count]


def _fcn_work(profile, n, attack_calls, purifiers) -> list[Work]:
    """Notebook 06: the FCN filter trained with the authors' recipe
    (:func:`iqalib.training.fcn_filter.train_like_authors`: the first 80 % of the images by
    name, whole images, batch 4, the held-out 20 % purified after every epoch) on AdvCF
    images (from the grid's attack cache when notebook 03 made them), then the results grid
    with the trained filter on the held-out images (``grid_filter="trained"``) or with the
    shipped one on every image."""
    from ..training.fcn_filter import AUTHORS

    s06 = _settings(profile, "06_fcn_filter")
    train = s06.get("train")
    if not train:
        return []
    metric, attack = train["metric"], train["attack"]
    n_train = int(AUTHORS["train_fraction"] * n)
    n_val = n - n_train
    stage = "06 FCN filter"
    w: list[Work] = []
    if attack not in s06["attacks"].get(metric, []):  # else notebook 03 cached them
        w += attack_work(stage, metric, attack, n, attack_calls)
    w.append(Work(stage, "fcn_train", train["epochs"] * n_train))
    w.append(Work(stage, "purify:fcn-filter", train["epochs"] * n_val))  # model selection
    grid_n = n_val if s06.get("grid_filter") == "trained" else n
    for m in s06["metrics"]:
        inputs = grid_n * (1 + len(s06["attacks"][m]))
        w.append(Work(stage, "purify:fcn-filter", inputs))
        w.append(Work(stage, f"metric_fwd:{m}", 2 * inputs))  # the baseline and the filter
    return w


def _adaptive_work(profile, attack_calls, purifiers) -> list[Work]:
    ad = _settings(profile, "09_adaptive_attacks").get("adaptive")
    if not ad:
        return []
    specs = list(ad.get("purifiers") or ad.get("fallback") or [])
    m, n = ad["metric"], ad["n_images"]
    steps = attack_calls[ad["attack"]]
    w: list[Work] = []
    for spec in specs:
        i = purifiers[spec]
        stage = f"09 adaptive {ad['attack']} through {spec}"
        draws = ad["eot"] if i.stochastic else 1
        per_pass = n * draws
        # each attack step: every EOT draw purifies, then the metric's forward+backward
        grads = per_pass * steps["grad"]
        bpda = not i.differentiable
        if bpda or i.nfe:
            w += purify_work(stage, [spec], grads, purifiers)
        else:
            w.append(Work(stage, f"purify_grad:{spec}", grads))
        w.append(Work(stage, f"metric_grad:{m}", grads))
        w.append(Work(stage, f"attack_extra:{ad['attack']}", n))
        # scores through the purifier: clean, non-adaptive and adaptive attacked images
        w += purify_work(stage, [spec], 3 * per_pass, purifiers)
        w.append(Work(stage, f"metric_fwd:{m}", 3 * per_pass))
    return w


def by_stage(work: list[Work]) -> dict[str, dict[str, float]]:
    """``{stage: {component: count}}``, stages in the order they run."""
    out: dict[str, dict[str, float]] = collections.OrderedDict()
    for x in work:
        out.setdefault(x.stage, collections.Counter())[x.component] += x.count
    return out


def totals(work: list[Work]) -> dict[str, float]:
    """``{component: count}`` over the whole run."""
    c: collections.Counter = collections.Counter()
    for x in work:
        c[x.component] += x.count
    return dict(c)


__all__ = ["PurifierInfo", "Work", "attack_work", "by_stage", "purifier_info",
           "purify_work", "specs_needed", "totals", "workload"]
