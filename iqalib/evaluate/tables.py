"""The study's tables, computed from the tidy results table (:mod:`iqalib.evaluate.grid`).

- :func:`add_measures` per-row gain, gain / range, Q and the clean-image change.
- :func:`summary` per metric x attack x defense: Gain, Gain/range, SROCC, PLCC, Q, PSNR, SSIM,
  robustness score R, time per image (arXiv 2404.06957, "Measures"; SROCC/PLCC across images).
- :func:`paper_table` the paper's layout: rows = defenses; columns Q, Gain, Gain/range, PSNR,
  SSIM, SROCC, time; each value the mean over metrics and attacks of the per
  metric x attack x defense value.
- :func:`pivot` defense x attack (or metric) for heatmaps, averaged over the other axis.
- :func:`clean_cost_table` per metric x defense: ``f(clean)`` vs ``f(purify(clean))``.
- :func:`attack_effect` per metric x attack, from the undefended rows: how far the attack moved
  the metric, PSNR / SSIM of attacked vs clean, time.
- :func:`flip_comparison` the paper's Flip row beside ours.
- :func:`diffpure_priors` / :func:`diffpure_sweep` which prior and t produced the DiffPure rows,
  and the measures per purifier x t (t ordered as a number).
- :func:`best_purifiers` the k best rows of a paper table by a measure.
- :func:`rank_agreement` Spearman correlation between metrics, oriented higher = better.
- :func:`components_table` / :func:`metrics_table` / :func:`weights_table` which registered
  components need which checkpoints (from their ``weights`` declarations) and which are here.

Defenses and attacks are labelled by the spec they were run with (``jpeg:q30``) when the table
has ``defense_spec`` / ``attack_spec`` columns, else by name. The normalised gain uses the
``metric_range_lo`` / ``metric_range_hi`` columns (the metric's score_range).
"""
from __future__ import annotations

import json
import re
import typing

import numpy as np
import pandas as pd

from . import measures

#: the paper table's columns, in order
PAPER_COLUMNS = ["Q", "Gain", "Gain/range", "PSNR", "SSIM", "SROCC", "time_s"]
_SUMMARY_RENAME = {"q": "Q", "gain": "Gain", "abs_gain_norm": "Gain/range", "psnr": "PSNR",
                   "ssim": "SSIM", "srocc": "SROCC", "plcc": "PLCC", "time_s": "time_s"}


def _label(df: pd.DataFrame, what: str) -> pd.Series:
    spec = f"{what}_spec"
    return df[spec].astype(str) if spec in df.columns else df[what].astype(str)


def add_measures(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of the tidy table with per-row ``gain``, ``abs_gain_norm``, ``q``,
    ``clean_gain``, ``clean_abs_gain_norm`` and ``defense_label`` / ``attack_label``."""
    out = df.copy()
    width = (out["metric_range_hi"] - out["metric_range_lo"]).to_numpy(dtype=float)
    sc, sda = out["score_clean"].to_numpy(float), out["score_def_attacked"].to_numpy(float)
    sdc = out["score_def_clean"].to_numpy(float)
    out["gain"] = measures.gain(sc, sda)
    out["abs_gain_norm"] = np.abs(sc - sda) / width
    out["clean_gain"] = measures.gain(sc, sdc)
    out["clean_abs_gain_norm"] = np.abs(sc - sdc) / width
    out["q"] = measures.q_score(out["ssim"].to_numpy(float), out["psnr"].to_numpy(float))
    out["defense_label"] = _label(out, "defense")
    out["attack_label"] = _label(out, "attack")
    return out


def _group_stats(g: pd.DataFrame) -> pd.Series:
    sc, sda = g["score_clean"].to_numpy(float), g["score_def_attacked"].to_numpy(float)
    return pd.Series({
        "n": len(g),
        "gain": g["gain"].mean(),
        "abs_gain_norm": g["abs_gain_norm"].mean(),
        "srocc": measures.srocc(sc, sda),
        "plcc": measures.plcc(sc, sda),
        "q": g["q"].mean(),
        "psnr": g["psnr"].mean(),
        "ssim": g["ssim"].mean(),
        "robustness": float(np.mean(measures.robustness_score(sc, sda))),
        "time_s": g["time_defense_s"].mean(),
        "time_attack_s": g["time_attack_s"].mean(),
    })


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per metric x attack x defense (labels), measures averaged over images and seeds;
    SROCC / PLCC / R computed across the images of the group."""
    m = add_measures(df)
    keys = ["metric", "attack_label", "defense_label"]
    rows = [dict(zip(keys, k)) | _group_stats(g).to_dict()
            for k, g in m.groupby(keys, sort=True)]
    res = pd.DataFrame(rows)
    return res.rename(columns={"attack_label": "attack", "defense_label": "defense"})


def _is_baseline(label) -> bool:
    from ..defenses import is_baseline

    return is_baseline(str(label))


def _natural(label: str) -> list:
    """Sort key reading digit runs as numbers: ``diffpure:t5`` < ``diffpure:t10``, ``jpeg:q20``
    < ``jpeg:q100``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(label))]


def _defense_order(labels) -> list[str]:
    """The undefended baseline first, then the purifiers by name, presets in numeric order."""
    labels = list(dict.fromkeys(labels))
    base = [x for x in labels if _is_baseline(x)]
    return base + sorted((x for x in labels if x not in base), key=_natural)


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows = defenses, columns :data:`PAPER_COLUMNS`, each the mean over
    metrics and attacks of the per metric x attack x defense measure."""
    s = summary(df)
    t = s.groupby("defense", sort=False)[list(_SUMMARY_RENAME)].mean().rename(
        columns=_SUMMARY_RENAME)
    t = t.reindex(_defense_order(t.index))
    t.index.name = "defense"
    return t[PAPER_COLUMNS]


def pivot(df: pd.DataFrame, value: str = "srocc", *, columns: str = "attack") -> pd.DataFrame:
    """Defense x ``columns`` (attack or metric) of one summary measure (``srocc``, ``gain``,
    ``abs_gain_norm``, ``q``, ``psnr``, ``ssim``, ``robustness``, ``time_s``), averaged over the
    remaining axis; for heatmaps."""
    s = summary(df)
    if value not in s.columns:
        raise KeyError(f"unknown measure {value!r}; choose from {', '.join(s.columns[4:])}")
    t = s.pivot_table(index="defense", columns=columns, values=value, aggfunc="mean", sort=True)
    return t.reindex(_defense_order(t.index))


def clean_cost_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows behind :func:`clean_cost_table`, one per metric x purifier x image (and seed):
    clean rows repeat for every attack, so each image is kept once. Columns of
    :func:`add_measures` (``clean_gain``, ``clean_abs_gain_norm``, ``defense_label``, ...): the
    long form a figure needs for intervals over images."""
    m = add_measures(df)
    return m.drop_duplicates(subset=["dataset", "metric", "defense_label", "defense_params",
                                     "seed", "image_id"]).reset_index(drop=True)


def clean_cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per metric x defense: what purifying *clean* images does to the score (mean gain, mean
    gain / range, SROCC and PLCC of ``f(clean)`` vs ``f(purify(clean))``). Clean rows repeat for
    every attack; each image counts once."""
    m = clean_cost_rows(df)
    rows = []
    for (metric, defense), g in m.groupby(["metric", "defense_label"], sort=True):
        sc, sdc = g["score_clean"].to_numpy(float), g["score_def_clean"].to_numpy(float)
        rows.append({"metric": metric, "defense": defense, "n": len(g),
                     "gain": g["clean_gain"].mean(), "abs_gain_norm": g["clean_abs_gain_norm"].mean(),
                     "srocc": measures.srocc(sc, sdc), "plcc": measures.plcc(sc, sdc)})
    return pd.DataFrame(rows)


def attack_effect(df: pd.DataFrame) -> pd.DataFrame:
    """How far each attack moved each metric, from the undefended rows (the baseline defense,
    ``"none"``): per metric x attack the mean oriented normalised score change
    ``sign * (f(x_adv) - f(x)) / range`` (:func:`~iqalib.evaluate.measures.score_change`;
    positive = the attack "improved" the score, 1 = a whole range), the share of images it
    improved, PSNR / SSIM of attacked vs clean and the attack's time per image."""
    base = df[df["defense"].map(_is_baseline)].copy()
    if base.empty:
        raise ValueError("no undefended rows (defense 'none') in the table: run the grid with "
                         "'none' among the defenses")
    base["moved"] = np.nan
    for (lo, hi, lower), g in base.groupby(["metric_range_lo", "metric_range_hi",
                                            "metric_lower_better"]):
        base.loc[g.index, "moved"] = measures.score_change(
            g["score_clean"], g["score_attacked"], score_range=(lo, hi), lower_better=bool(lower))
    base["attack_label"] = _label(base, "attack")
    g = base.groupby(["metric", "attack_label"], sort=True)
    return pd.DataFrame({
        "n": g.size(),
        "score_change/range": g["moved"].mean(),
        "improved": g["moved"].apply(lambda v: float((v > 0).mean())),
        "PSNR": g["psnr"].mean(), "SSIM": g["ssim"].mean(),
        "time_attack_s": g["time_attack_s"].mean(),
    }).reset_index().rename(columns={"attack_label": "attack"})


def flip_comparison(tables: pd.DataFrame | dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's Flip row (:data:`iqalib.study.PAPER_FLIP_ROW`) next to ours: ``tables`` is a
    :func:`paper_table` or a dict ``label -> paper table`` (e.g. one per metric and
    ``"overall"``), giving one column each (NaN where flip did not run)."""
    from ..study import PAPER_FLIP_ROW

    if isinstance(tables, pd.DataFrame):
        tables = {"ours": tables}
    cols = list(PAPER_FLIP_ROW)
    out = {"paper (NIPS'17; Linearity, MetaIQA, SPAQ)": [PAPER_FLIP_ROW[c] for c in cols]}
    for label, t in tables.items():
        row = t.loc["flip"] if "flip" in t.index else pd.Series(dtype=float)
        out["ours" if label == "ours" else f"ours: {label}"] = [
            float(row.get(c, float("nan"))) for c in cols]
    return pd.DataFrame(out, index=cols)


def _diffpure_params(params: str) -> dict:
    """DiffPure's settings from a row's ``defense_params`` (a composition such as DiffPure +
    Unsharp records its parts; DiffPure is the first)."""
    p = json.loads(params)
    if "parts" in p:
        p = p["parts"][0][1]
    return p


def _diffpure_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["defense"].astype(str).str.startswith("diffpure")]


def diffpure_priors(df: pd.DataFrame) -> pd.DataFrame:
    """Which prior produced each DiffPure row set: one row per DiffPure spec and settings with
    its prior (``ffdnet``: the offline FFDNet denoiser; ``guided``: the guided-diffusion
    256x256 UNet), t, sampler and the number of result rows, read from ``defense_params``;
    ordered by purifier, then t as a number."""
    rows = []
    sub = _diffpure_rows(df)
    for (spec, params), g in sub.groupby([_label(sub, "defense"), "defense_params"], sort=True):
        p = _diffpure_params(params)
        rows.append({"purifier": spec, "prior": p.get("prior"), "t": p.get("t"),
                     "sampler": p.get("sampler"), "rows": len(g)})
    out = pd.DataFrame(rows, columns=["purifier", "prior", "t", "sampler", "rows"])
    out["_name"] = out["purifier"].str.split(":").str[0]
    return out.sort_values(["_name", "t"], kind="stable").drop(columns="_name").reset_index(
        drop=True)


def diffpure_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """DiffPure's t sweep: one row per purifier (``diffpure``, ``diffpure-unsharp``) x t, with
    t read from ``defense_params`` as a number (so 5 < 10 < 50, not "t10" < "t5") and the
    prior; columns ``purifier``, ``t``, ``prior``, ``n``, ``Gain/range``, ``Gain``, ``PSNR``,
    ``SSIM``, ``SROCC``, ``time_s`` (each the mean over metrics and attacks of the per metric
    x attack value, as in :func:`paper_table`)."""
    sub = _diffpure_rows(df)
    if sub.empty:
        raise ValueError("no DiffPure rows in the table")
    s = summary(sub)
    settings = {lab: _diffpure_params(p) for lab, p in
                zip(_label(sub, "defense"), sub["defense_params"])}
    s["purifier"] = s["defense"].str.split(":").str[0]
    s["t"] = s["defense"].map(lambda lab: settings[lab].get("t"))
    s["prior"] = s["defense"].map(lambda lab: settings[lab].get("prior"))
    out = s.groupby(["purifier", "t", "prior"], sort=True).agg(
        n=("n", "sum"), gain_norm=("abs_gain_norm", "mean"), gain=("gain", "mean"),
        psnr=("psnr", "mean"), ssim=("ssim", "mean"), srocc=("srocc", "mean"),
        time_s=("time_s", "mean")).reset_index()
    return out.rename(columns={"gain_norm": "Gain/range", "gain": "Gain", "psnr": "PSNR",
                               "ssim": "SSIM", "srocc": "SROCC"})


def diffpure_sweep_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The DiffPure rows of a t sweep one per image (and seed), with the per-row measures of
    :func:`add_measures` and ``purifier`` / ``t`` / ``prior`` read from ``defense_params`` as in
    :func:`diffpure_sweep`: the long form a figure needs to draw intervals over images."""
    sub = _diffpure_rows(df)
    if sub.empty:
        raise ValueError("no DiffPure rows in the table")
    out = add_measures(sub)
    settings = out["defense_params"].map(_diffpure_params)
    out["purifier"] = out["defense_label"].str.split(":").str[0]
    out["t"] = settings.map(lambda p: p.get("t"))
    out["prior"] = settings.map(lambda p: p.get("prior"))
    return out.reset_index(drop=True)


def best_purifiers(table: pd.DataFrame, k: int = 3, *, by: str = "SROCC",
                   exclude: tuple[str, ...] = ()) -> list[str]:
    """The ``k`` best purifiers of a :func:`paper_table` by ``by`` (SROCC, Q, PSNR, SSIM: higher
    is better; Gain, Gain/range, time: lower is better), ignoring NaNs, the undefended baseline
    and the purifiers named in ``exclude`` (with any preset: ``"diffpure"`` also drops
    ``"diffpure:t10"``)."""
    drop = [i for i in table.index if _is_baseline(i) or str(i) in exclude
            or str(i).split(":")[0] in exclude]
    t = table.drop(index=drop)[by].dropna()
    ascending = by in ("Gain", "Gain/range", "time_s")
    return list(t.sort_values(ascending=ascending, kind="stable").index[:k])


def rank_agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation between metrics across images (``scores``: image x metric, as
    :func:`iqalib.evaluate.experiments.metric_scores` returns), every metric oriented so that
    higher = better: the columns named in ``scores.attrs["lower_better"]`` are negated first."""
    oriented = scores.copy()
    for c in scores.attrs.get("lower_better", []):
        if c in oriented:
            oriented[c] = -oriented[c]
    return oriented.corr(method="spearman")


# --- which components need which checkpoints ----------------------------------------------------
def _registry(kind: str):
    from .. import attacks, defenses, metrics  # noqa: F401  (registers every component)
    from ..registry import ATTACKS, DEFENSES, METRICS

    regs = {"metric": METRICS, "attack": ATTACKS, "defense": DEFENSES}
    if kind not in regs:
        raise ValueError(f"kind must be one of {', '.join(regs)}, got {kind!r}")
    return regs[kind]


def declared_weights(kind: str, name: str, *, optional: bool = False) -> tuple[str, ...]:
    """The catalogue names (:data:`iqalib.weights.CATALOGUE`) of the checkpoints a registered
    metric, attack or defense declares it needs (``weights``), or with ``optional=True`` the
    ones it uses when present (``optional_weights``: DiffPure's guided UNet). Read from its
    registry factory (a class such as an :class:`~iqalib.metrics.base.IQAMetric` subclass, or a
    function carrying the attribute), else from the class the factory is annotated to return."""
    attr = "optional_weights" if optional else "weights"
    factory = _registry(kind).entry(name).factory
    declared = getattr(factory, attr, None)
    if declared is None and not isinstance(factory, type):
        try:
            returned = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001 - an unresolvable annotation declares nothing
            returned = None
        declared = getattr(returned, attr, None)
    return tuple(declared) if isinstance(declared, (tuple, list)) else ()


def components_table(kind: str = "metric") -> pd.DataFrame:
    """Every registered ``kind`` ("metric", "attack", "defense"): its tags, the checkpoints it
    declares it needs, whether they are all here (so it runs without downloads), the commands
    that fetch the missing ones, and the optional checkpoints it uses when present."""
    from .. import weights

    rows = []
    reg = _registry(kind)
    for name in reg.names():
        need = declared_weights(kind, name)
        missing = [c for c in need if not weights.is_available(c)]
        rows.append({kind: name, "tags": ", ".join(reg.entry(name).tags),
                     "checkpoints": ", ".join(need) or "-",
                     "runs offline": not missing,
                     "to enable": " ; ".join(f"make weights WEIGHTS={c}" for c in missing),
                     "optional": ", ".join(declared_weights(kind, name, optional=True))})
    return pd.DataFrame(rows, columns=[kind, "tags", "checkpoints", "runs offline", "to enable",
                                       "optional"])


def metrics_table() -> pd.DataFrame:
    """:func:`components_table` of the metrics."""
    return components_table("metric")


def weights_table() -> pd.DataFrame:
    """The checkpoint catalogue (:data:`iqalib.weights.CATALOGUE`): one row per file with the
    components that declare it (``used_by``; "(optional)": used when present), the catalogue's note on it, its licence, whether
    it is here and the command that fetches it."""
    from .. import weights

    users: dict[str, list[str]] = {}
    for kind in ("metric", "attack", "defense"):
        for name in _registry(kind).names():
            for ck in declared_weights(kind, name):
                users.setdefault(ck, []).append(f"{kind} {name}")
            for ck in declared_weights(kind, name, optional=True):
                users.setdefault(ck, []).append(f"{kind} {name} (optional)")
    rows = [{"checkpoint": name, "file": s.filename, "used_by": ", ".join(users.get(name, [])),
             "note": s.used_by, "licence": s.licence, "available": weights.is_available(name),
             "fetch": f"make weights WEIGHTS={name}" if s.url else "manual (see catalogue)"}
            for name, s in weights.CATALOGUE.items()]
    return pd.DataFrame(rows, columns=["checkpoint", "file", "used_by", "note", "licence",
                                       "available", "fetch"])


__all__ = [
    "PAPER_COLUMNS",
    "add_measures",
    "attack_effect",
    "best_purifiers",
    "clean_cost_rows",
    "clean_cost_table",
    "components_table",
    "declared_weights",
    "diffpure_priors",
    "diffpure_sweep",
    "diffpure_sweep_rows",
    "flip_comparison",
    "metrics_table",
    "paper_table",
    "pivot",
    "rank_agreement",
    "summary",
    "weights_table",
]
