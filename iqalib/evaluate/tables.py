"""The study's tables, computed from the tidy results table (:mod:`iqalib.evaluate.grid`).

- :func:`add_measures` per-row gain, gain / range, Q and the clean-image change.
- :func:`summary` per metric x attack x defense: Gain, Gain/range, SROCC, PLCC, Q, PSNR, SSIM,
  robustness score R, time per image (arXiv 2404.06957, "Measures"; SROCC/PLCC across images).
- :func:`paper_table` the paper's layout: rows = defenses; columns Q, Gain, Gain/range, PSNR,
  SSIM, SROCC, time; each value the mean over metrics and attacks of the per
  metric x attack x defense value.
- :func:`pivot` defense x attack (or metric) for heatmaps, averaged over the other axis.
- :func:`clean_cost_table` per metric x defense: ``f(clean)`` vs ``f(purify(clean))``.

Defenses and attacks are labelled by the spec they were run with (``jpeg:q30``) when the table
has ``defense_spec`` / ``attack_spec`` columns, else by name. The normalised gain uses the
``metric_range_lo`` / ``metric_range_hi`` columns (the metric's score_range).
"""
from __future__ import annotations

import argparse
from pathlib import Path

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


def _defense_order(labels) -> list[str]:
    labels = list(dict.fromkeys(labels))
    base = [x for x in labels if x in ("none", "identity")]
    return base + sorted(x for x in labels if x not in base)


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


def clean_cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per metric x defense: what purifying *clean* images does to the score (mean gain, mean
    gain / range, SROCC and PLCC of ``f(clean)`` vs ``f(purify(clean))``). Clean rows repeat for
    every attack; each image counts once."""
    m = add_measures(df)
    m = m.drop_duplicates(subset=["dataset", "metric", "defense_label", "defense_params", "seed",
                                  "image_id"])
    rows = []
    for (metric, defense), g in m.groupby(["metric", "defense_label"], sort=True):
        sc, sdc = g["score_clean"].to_numpy(float), g["score_def_clean"].to_numpy(float)
        rows.append({"metric": metric, "defense": defense, "n": len(g),
                     "gain": g["clean_gain"].mean(), "abs_gain_norm": g["clean_abs_gain_norm"].mean(),
                     "srocc": measures.srocc(sc, sdc), "plcc": measures.plcc(sc, sdc)})
    return pd.DataFrame(rows)


def cli(argv: list[str] | None = None) -> int:
    """``python -m iqalib table data/results/quick [--by attack|metric --value srocc] [--csv F]``"""
    from .grid import load_results

    p = argparse.ArgumentParser(prog="python -m iqalib table", description=cli.__doc__)
    p.add_argument("run", help="a run folder (with results.parquet or parts/) or a parquet file")
    p.add_argument("--by", choices=["attack", "metric"], default=None,
                   help="also print a defense x attack|metric pivot of --value")
    p.add_argument("--value", default="srocc")
    p.add_argument("--clean", action="store_true", help="also print the clean-image cost table")
    p.add_argument("--csv", default=None, help="write the paper table to this CSV file")
    a = p.parse_args(argv)
    path = Path(a.run)
    df = pd.read_parquet(path) if path.is_file() else load_results(path)
    if df.empty:
        print(f"no rows in {path}")
        return 1
    t = paper_table(df)
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        print(f"{len(df)} rows; {df['metric'].nunique()} metrics, {df['attack'].nunique()} attacks; "
              "mean over metrics and attacks (Gain divides by f(clean); Gain/range by the range)")
        print(t.round(4).to_string())
        if a.by:
            print(f"\n{a.value} by defense x {a.by}")
            print(pivot(df, a.value, columns=a.by).round(4).to_string())
        if a.clean:
            print("\nclean-image cost: f(clean) vs f(purify(clean))")
            print(clean_cost_table(df).round(4).to_string(index=False))
    if a.csv:
        t.to_csv(a.csv)
    return 0


__all__ = [
    "PAPER_COLUMNS",
    "add_measures",
    "clean_cost_table",
    "cli",
    "paper_table",
    "pivot",
    "summary",
]
