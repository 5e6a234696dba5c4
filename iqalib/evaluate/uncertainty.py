"""How sure is each number: bootstrap confidence intervals over images, and paired comparisons.

Every value of the study's tables (:mod:`iqalib.evaluate.tables`) is a statistic of a few
images: 8 in the quick profile, where most rankings of purifiers are noise. Resampling the
images with replacement (Efron's bootstrap) and recomputing the statistic shows how much it
would move on another draw of images of the same kind.

- :func:`summary_ci` :func:`tables.summary` (per metric x attack x defense) with ``<measure>_lo``
  / ``<measure>_hi`` for Gain, Gain/range, SROCC, Q, PSNR, SSIM.
- :func:`paper_table_ci` :func:`tables.paper_table` with ``"<Measure> lo"`` / ``"<Measure> hi"``
  columns and, for one measure (default SROCC), each purifier's rank, the share of resamples in
  which it is the best (``p_best``) and whether it is distinguishable from the best
  (``vs_best``: the paired interval of the difference excludes 0).
- :func:`compare_purifiers` a paired comparison of two purifiers on one measure: the difference,
  its interval, the share of resamples in which the first is better, a two-sided p-value.
- :func:`bootstrap_paper_table` the resampled paper tables themselves (what the three use).
- :func:`ci_errorbars` a figure: one measure per purifier with its interval.

The point estimates are exactly :func:`tables.summary` / :func:`tables.paper_table` (they are
called, not re-derived). The resampling unit is the image (``dataset``, ``image_id``): the rows
of one image (its seeds) stay together, and one resample of the image ids is applied to every
metric x attack x defense group at once, so comparisons between purifiers are paired over the
same images. Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13) at ``level``
(default 0.95); ``n_boot`` (default 1000) resamples drawn by ``numpy.random.default_rng(seed)``.
scipy.stats.bootstrap computes the same intervals for one group (the tests check it); this
module vectorises them over every group of a results table.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from . import tables

#: measure -> (per-row column, statistic); the summary's lower-case names
CI_MEASURES = {"gain": ("gain", "mean"), "abs_gain_norm": ("abs_gain_norm", "mean"),
               "srocc": (None, "srocc"), "q": ("q", "mean"), "psnr": ("psnr", "mean"),
               "ssim": ("ssim", "mean")}
#: the paper table's names of the same measures
PAPER_NAMES = {"gain": "Gain", "abs_gain_norm": "Gain/range", "srocc": "SROCC", "q": "Q",
               "psnr": "PSNR", "ssim": "SSIM"}
#: measures where a lower value is better (the rest: higher is better)
LOWER_IS_BETTER = {"Gain", "Gain/range", "gain", "abs_gain_norm", "time_s"}
_KEYS = ["metric", "attack_label", "defense_label"]


def _image_keys(m: pd.DataFrame) -> pd.Series:
    ds = m["dataset"].astype(str) if "dataset" in m.columns else ""
    return ds + "\x1f" + m["image_id"].astype(str)


def _resamples(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_images, size=(n_boot, n_images))


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of ``[R, M]`` arrays, dropping non-finite pairs as
    :func:`iqalib.evaluate.measures.srocc` does (NaN for < 2 pairs or a constant side)."""
    keep = np.isfinite(a) & np.isfinite(b)
    a = np.where(keep, a, np.nan)
    b = np.where(keep, b, np.nan)
    ra = rankdata(a, axis=1, nan_policy="omit")
    rb = rankdata(b, axis=1, nan_policy="omit")
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ca = ra - np.nanmean(ra, axis=1, keepdims=True)
        cb = rb - np.nanmean(rb, axis=1, keepdims=True)
        num = np.nansum(ca * cb, axis=1)
        den = np.sqrt(np.nansum(ca * ca, axis=1) * np.nansum(cb * cb, axis=1))
        rho = num / den
    rho[(keep.sum(axis=1) < 2) | ~(den > 0)] = np.nan
    return rho


def _nanmean_rows(v: np.ndarray) -> np.ndarray:
    present = ~np.isnan(v)
    with np.errstate(invalid="ignore"):
        s = np.where(present, v, 0.0).sum(axis=1)  # keeps inf (an exploding Gain) as inf
        return s / present.sum(axis=1)


@dataclass
class _Groups:
    """Each metric x attack x defense group's per-row values laid out ``[G, N, r]`` over the
    table's N images (r = most rows one image has in a group; NaN where absent)."""

    keys: pd.DataFrame
    values: dict[str, np.ndarray]
    n_images: int


def _layout(df: pd.DataFrame) -> _Groups:
    m = tables.add_measures(df)
    img_codes, images = pd.factorize(_image_keys(m), sort=True)
    m = m.assign(_img=img_codes)
    m["_rep"] = m.groupby([*_KEYS, "_img"], sort=False).cumcount()
    groups = m.groupby(_KEYS, sort=True)
    keys = pd.DataFrame(list(groups.groups.keys()), columns=_KEYS)
    g_index = groups.ngroup()
    r = int(m["_rep"].max()) + 1
    shape = (len(keys), len(images), r)
    cols = {"score_clean", "score_def_attacked", *(c for c, _ in CI_MEASURES.values() if c)}
    values = {}
    for c in cols:
        arr = np.full(shape, np.nan)
        arr[g_index.to_numpy(), m["_img"].to_numpy(), m["_rep"].to_numpy()] = \
            m[c].to_numpy(dtype=float)
        values[c] = arr
    return _Groups(keys, values, len(images))


def _group_draws(layout: _Groups, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every measure of every group on every resample: ``measure -> [B, G]``. ``idx`` holds
    resampled image indices ``[B, N]``."""
    b = idx.shape[0]
    out = {k: np.empty((b, len(layout.keys))) for k in CI_MEASURES}
    def take(col: str, gi: int) -> np.ndarray:
        return layout.values[col][gi][idx].reshape(b, -1)   # [B, N * r]

    for gi in range(len(layout.keys)):
        for k, (col, stat) in CI_MEASURES.items():
            if stat == "mean":
                out[k][:, gi] = _nanmean_rows(take(col, gi))
        sc, sda = take("score_clean", gi), take("score_def_attacked", gi)
        absent = np.isnan(sc)
        out["srocc"][:, gi] = _row_spearman(np.where(absent, np.nan, sc),
                                            np.where(absent, np.nan, sda))
    return out


def _percentile(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        lo, hi = np.nanquantile(draws, [a, 1 - a], axis=0)
    return lo, hi


def summary_ci(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
               level: float = 0.95) -> pd.DataFrame:
    """:func:`tables.summary` with percentile bootstrap intervals over images:
    ``gain_lo``, ``gain_hi``, ``abs_gain_norm_lo``, ... for Gain, Gain/range, SROCC, Q, PSNR,
    SSIM (one resample of the images shared by every group)."""
    point = tables.summary(df)
    layout = _layout(df)
    draws = _group_draws(layout, _resamples(layout.n_images, n_boot, seed))
    key = layout.keys.rename(columns={"attack_label": "attack", "defense_label": "defense"})
    ci = key.copy()
    for k, d in draws.items():
        ci[f"{k}_lo"], ci[f"{k}_hi"] = _percentile(d, level)
    out = point.merge(ci, on=["metric", "attack", "defense"], how="left", validate="1:1")
    out.attrs.update({"n_boot": n_boot, "level": level, "seed": seed,
                      "n_images": layout.n_images, "interval": "percentile bootstrap over images"})
    return out


@dataclass
class BootstrapTable:
    """The paper table (``point``, :func:`tables.paper_table`) and its resampled versions:
    ``draws[measure]`` is ``[n_boot, n_defenses]`` in the order of ``point.index``."""

    point: pd.DataFrame
    draws: dict[str, np.ndarray]
    n_images: int
    n_boot: int
    seed: int

    def column(self, measure: str, defense: str) -> np.ndarray:
        return self.draws[measure][:, list(self.point.index).index(defense)]


def bootstrap_paper_table(df: pd.DataFrame, *, n_boot: int = 1000,
                          seed: int = 0) -> BootstrapTable:
    """The paper table recomputed on ``n_boot`` resamples of the images: each resample's
    per metric x attack x defense measures, averaged over metrics and attacks per defense, as
    :func:`tables.paper_table` does (NaN groups skipped)."""
    point = tables.paper_table(df)
    layout = _layout(df)
    draws = _group_draws(layout, _resamples(layout.n_images, n_boot, seed))
    defenses = layout.keys["defense_label"].to_numpy()
    out = {}
    for k, d in draws.items():
        # tables.paper_table: pandas' mean over the defense's groups (skips NaN, keeps inf)
        cols = [_nanmean_rows(d[:, defenses == name]) for name in point.index]
        out[PAPER_NAMES[k]] = np.stack(cols, axis=1)
    return BootstrapTable(point, out, layout.n_images, n_boot, seed)


def _better_sign(measure: str) -> float:
    return -1.0 if measure in LOWER_IS_BETTER else 1.0


def paper_table_ci(df: pd.DataFrame | None = None, *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, rank_by: str = "SROCC",
                   boot: BootstrapTable | None = None) -> pd.DataFrame:
    """:func:`tables.paper_table` with ``"<Measure> lo"`` / ``"<Measure> hi"`` columns (Gain,
    Gain/range, SROCC, Q, PSNR, SSIM) and, for ``rank_by``:

    - ``rank`` of the point estimate (1 = best; Gain and Gain/range: lower is better);
    - ``p_best``: share of resamples in which the purifier is the best (ties shared);
    - ``vs_best``: ``"best"``, ``"worse"`` (the paired interval of its difference to the best
      excludes 0) or ``"tied"`` (it does not: on these images it cannot be told from the best).

    ``table.attrs["best_distinguishable"]`` says whether the best is distinguishable from the
    second. The undefended baseline (``none``) is excluded from the ranking.
    """
    boot = boot or bootstrap_paper_table(df, n_boot=n_boot, seed=seed)
    t = boot.point.copy()
    for name, d in boot.draws.items():
        t[f"{name} lo"], t[f"{name} hi"] = _percentile(d, level)
    if rank_by not in boot.draws:
        raise KeyError(f"rank_by must be one of {', '.join(boot.draws)}, got {rank_by!r}")
    from ..defenses import is_baseline

    s = _better_sign(rank_by)
    ranked = [i for i, name in enumerate(t.index) if not is_baseline(str(name))
              and np.isfinite(t[rank_by].iloc[i])]
    t["rank"] = np.nan
    t["p_best"] = np.nan
    t["vs_best"] = ""
    if ranked:
        order = sorted(ranked, key=lambda i: -s * t[rank_by].iloc[i])
        t.iloc[order, t.columns.get_loc("rank")] = np.arange(1, len(order) + 1)
        d = s * boot.draws[rank_by][:, ranked]              # higher = better in every column
        d = np.where(np.isnan(d), -np.inf, d)
        top = d == d.max(axis=1, keepdims=True)
        share = (top / top.sum(axis=1, keepdims=True)).mean(axis=0)
        t.iloc[ranked, t.columns.get_loc("p_best")] = share
        best = order[0]
        labels = []
        for i in ranked:
            if i == best:
                labels.append("best")
                continue
            diff = s * (boot.draws[rank_by][:, best] - boot.draws[rank_by][:, i])
            lo, _ = _percentile(diff[:, None], level)
            labels.append("worse" if lo[0] > 0 else "tied")
        t.iloc[ranked, t.columns.get_loc("vs_best")] = labels
        if len(order) > 1:
            t.attrs["best_distinguishable"] = t["vs_best"].iloc[order[1]] == "worse"
    t.attrs.update({"n_boot": boot.n_boot, "level": level, "seed": boot.seed,
                    "n_images": boot.n_images, "rank_by": rank_by,
                    "interval": "percentile bootstrap over images"})
    return t


def compare_purifiers(df: pd.DataFrame | None, a: str, b: str, measure: str = "SROCC", *,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      boot: BootstrapTable | None = None) -> dict:
    """Is purifier ``a`` really better than ``b`` on ``measure`` (a paper-table column)?

    Paired bootstrap over images (both purifiers see the same resample). Returns ``a``, ``b``,
    ``measure``, their values, ``diff`` = value(a) - value(b) with ``diff_lo`` / ``diff_hi``,
    ``p_a_better`` (share of resamples in which ``a`` is better, with the measure's direction),
    ``p_value`` (two-sided: twice the smaller tail share of the difference at 0, at most 1) and
    ``verdict`` (``"a better"``, ``"b better"`` or ``"indistinguishable"`` at ``level``).
    """
    boot = boot or bootstrap_paper_table(df, n_boot=n_boot, seed=seed)
    if measure not in boot.draws:
        raise KeyError(f"measure must be one of {', '.join(boot.draws)}, got {measure!r}")
    for p in (a, b):
        if p not in boot.point.index:
            raise KeyError(f"purifier {p!r} is not in the table; it has "
                           f"{', '.join(map(str, boot.point.index))}")
    da, db = boot.column(measure, a), boot.column(measure, b)
    diff = da - db
    ok = np.isfinite(diff)
    lo, hi = _percentile(diff[ok][:, None], level) if ok.any() else (np.array([np.nan]),) * 2
    s = _better_sign(measure)
    better = (s * diff[ok] > 0).mean() + 0.5 * (diff[ok] == 0).mean() if ok.any() else np.nan
    p = min(1.0, 2 * min((diff[ok] <= 0).mean(), (diff[ok] >= 0).mean())) if ok.any() else np.nan
    point_a, point_b = float(boot.point.loc[a, measure]), float(boot.point.loc[b, measure])
    if lo[0] > 0 or hi[0] < 0:
        a_wins = (s * (point_a - point_b)) > 0
        verdict = f"{a if a_wins else b} better"
    else:
        verdict = "indistinguishable"
    return {"a": a, "b": b, "measure": measure, "value_a": point_a, "value_b": point_b,
            "diff": point_a - point_b, "diff_lo": float(lo[0]), "diff_hi": float(hi[0]),
            "p_a_better": float(better), "p_value": float(p), "verdict": verdict,
            "n_images": boot.n_images, "n_boot": boot.n_boot, "level": level}


def compare_top_two(table: pd.DataFrame, boot: BootstrapTable, *,
                    level: float = 0.95) -> dict | None:
    """:func:`compare_purifiers` on the first two purifiers of a :func:`paper_table_ci` ranking
    (on the measure it was ranked by), or None when fewer than two have a rank: SROCC over the
    images needs at least two of them, so a one-image run ranks nothing."""
    ranked = table.dropna(subset=["rank"]).sort_values("rank").index
    if len(ranked) < 2:
        return None
    measure = table.attrs.get("rank_by", "SROCC")
    return compare_purifiers(None, str(ranked[0]), str(ranked[1]), measure, boot=boot,
                             level=level)


def ranking_verdict(table: pd.DataFrame, comparison: dict | None = None) -> str:
    """What a :func:`paper_table_ci` ranking can be trusted for, in plain words: how many
    purifiers cannot be told from the best on these images, and (with ``comparison`` from
    :func:`compare_purifiers`) whether the best beats the runner-up. For a notebook's reader."""
    measure = table.attrs.get("rank_by", "SROCC")
    n = table.attrs.get("n_images", "?")
    level = table.attrs.get("level", 0.95)
    ranked = table[table["vs_best"] != ""].sort_values("rank")
    if ranked.empty:
        return f"No purifier has a finite {measure}: nothing to rank."
    best = str(ranked.index[0])
    tied = [str(i) for i in ranked.index[ranked["vs_best"] == "tied"]]
    text = (f"On {n} images, {measure} ranks {len(ranked)} purifiers; {best} is first "
            f"(best in {ranked['p_best'].iloc[0]:.0%} of the resamples). ")
    if tied:
        text += (f"{len(tied)} of the other {len(ranked) - 1} cannot be told from it at "
                 f"{level:.0%} (paired bootstrap): their order is noise")
        text += f" ({', '.join(tied[:6])}{', ...' if len(tied) > 6 else ''}). "
    else:
        text += "Every other purifier is distinguishably worse. "
    if comparison is not None:
        c = comparison
        text += (f"{c['a']} vs {c['b']}: difference {c['diff']:+.3f}, {level:.0%} interval "
                 f"[{c['diff_lo']:+.3f}, {c['diff_hi']:+.3f}], p = {c['p_value']:.2f}: ")
        text += ("the two are indistinguishable on these images."
                 if c["verdict"] == "indistinguishable" else f"{c['verdict']}.")
    return text.strip()


def ci_errorbars(table: pd.DataFrame, measure: str = "SROCC", *, ax=None, title: str | None = None):
    """One measure per purifier from :func:`paper_table_ci`, point and interval, best at the top,
    in the workbook's house style (:func:`iqalib.viz.intervals`: family colours; the purifiers
    distinguishably worse than the best hollow and faded). Returns the figure."""
    from .. import viz

    return viz.intervals(table, measure, ax=ax, title=title)


__all__ = ["CI_MEASURES", "LOWER_IS_BETTER", "PAPER_NAMES", "BootstrapTable",
           "bootstrap_paper_table", "ci_errorbars", "compare_purifiers", "compare_top_two",
           "paper_table_ci",
           "ranking_verdict",
           "summary_ci"]
