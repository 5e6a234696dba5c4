"""The attack-unknown setting (beyond the study: its open question 2).

A purifier in production sees clean and attacked images mixed and does not know which. Two
questions, both answered from the tidy results table (:mod:`iqalib.evaluate.store`), so they
cover every metric x attack x purifier a grid ran:

- :func:`mixed_stream`: a fraction ``p`` of the images is attacked (``p`` swept over 0..1, the
  same images attacked for every purifier in a draw), every image is purified, and the purified
  scores are compared with the clean ones on the whole mixture: SROCC, Gain, Gain/range, the
  mean and a 95 % band over ``n_draws`` random choices of the attacked images.
- detect-then-purify: an attack detector from cheap signals, how far the score falls under
  flip / JPEG / a small blur (:data:`SIGNAL_PURIFIERS`): boosted images are fragile, their boost
  collapses under a mild transform (the squeeze-and-compare idea of Xu, Evans & Qi, "Feature
  squeezing", NDSS 2018, applied to a score). :func:`signals` reads the signals off the grid's
  rows of those purifiers; :func:`detector_auc` / :func:`roc_curves` give its ROC per attack
  (sklearn.metrics); :func:`detect_then_purify` runs the pipeline on the mixed stream: an
  image the detector passes keeps its score exactly, a flagged one is purified.
- adaptive attacks that also evade the detector: :class:`EvasionObjective` is the metric
  averaged over the identity and the signal transforms (BPDA through JPEG), so any gradient
  attack on it raises the score in a way that survives the transforms;
  :func:`scores_table` turns images attacked that way into rows of the same tidy form, so the
  functions above evaluate them unchanged.

Thresholds are set on clean images at a target false-positive rate, leave-one-out (each image's
threshold comes from the other images' clean statistics), so a small set does not grade its own
calibration.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..metrics.base import IQAMetric
from . import tables
from .uncertainty import _row_spearman

#: the cheap transforms whose score drop is the detector's signal (all in the study's grid)
SIGNAL_PURIFIERS = ("flip", "jpeg", "gaussian-blur")
#: how the per-transform signals become one statistic
COMBINE = ("mean", "max")
_GROUP = ["metric", "attack_label"]


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    m = df.copy()
    m["defense_label"] = tables._label(m, "defense")
    m["attack_label"] = tables._label(m, "attack")
    m["width"] = (m["metric_range_hi"] - m["metric_range_lo"]).astype(float)
    m["orient"] = np.where(m["metric_lower_better"].astype(bool), -1.0, 1.0)
    return m


def _ordered(g: pd.DataFrame) -> pd.DataFrame:
    return g.sort_values(["dataset", "image_id", "seed"], kind="stable")


# -- the mixed stream ------------------------------------------------------------------------
def _attacked_masks(n: int, fractions: Sequence[float], n_draws: int, seed: int) -> np.ndarray:
    """``[P, D, n]`` booleans: in draw d at fraction p, exactly ``round(p n)`` images attacked."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(fractions), n_draws, n), dtype=bool)
    for i, p in enumerate(fractions):
        if not 0 <= p <= 1:
            raise ValueError(f"fractions must be in [0, 1], got {p}")
        k = round(p * n)
        order = np.argsort(rng.random((n_draws, n)), axis=1)
        out[i] = order < k
    return out


def _stream_rows(sc, clean_out, attacked_out, width, masks, fractions, band=0.95) -> list[dict]:
    """Measures of the stream ``where(mask, attacked_out, clean_out)`` against ``sc``."""
    rows = []
    a = (1 - band) / 2
    for i, p in enumerate(fractions):
        obs = np.where(masks[i], attacked_out[None], clean_out[None])       # [D, n]
        ref = np.broadcast_to(sc, obs.shape)
        rho = _row_spearman(ref.copy(), obs)
        diff = np.abs(ref - obs)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(diff == 0, 0.0, diff / np.abs(ref)).mean(axis=1)
        gnorm = (diff / width).mean(axis=1)
        with np.errstate(invalid="ignore"):
            lo, hi = (np.nanquantile(rho, [a, 1 - a]) if np.isfinite(rho).any()
                      else (np.nan, np.nan))
        rows.append({"p": float(p), "n_attacked": int(masks[i][0].sum()),
                     "SROCC": float(np.nanmean(rho)) if np.isfinite(rho).any() else np.nan,
                     "SROCC lo": lo, "SROCC hi": hi, "Gain": float(np.mean(gain)),
                     "Gain/range": float(np.mean(gnorm)),
                     "Gain/range lo": float(np.quantile(gnorm, a)),
                     "Gain/range hi": float(np.quantile(gnorm, 1 - a))})
    return rows


def mixed_stream(df: pd.DataFrame, fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                 n_draws: int = 200, seed: int = 0, defenses: Sequence[str] | None = None
                 ) -> pd.DataFrame:
    """Every image purified, a fraction ``p`` of them attacked: one row per metric x attack x
    defense x p with the mixture's SROCC against the clean scores (mean over draws and its
    band ``SROCC lo`` / ``SROCC hi``), Gain and Gain/range (mean over images and draws).

    ``defense`` ``none`` is the undefended stream (at p = 0 it agrees perfectly). The same
    images are attacked for every defense in a draw (a paired comparison).
    """
    m = _with_labels(df)
    if defenses is not None:
        m = m[m["defense_label"].isin(list(defenses))]
    rows = []
    for (metric, attack, defense), g in m.groupby([*_GROUP, "defense_label"], sort=True):
        g = _ordered(g)
        sc = g["score_clean"].to_numpy(float)
        masks = _attacked_masks(len(g), fractions, n_draws, seed)
        for r in _stream_rows(sc, g["score_def_clean"].to_numpy(float),
                              g["score_def_attacked"].to_numpy(float), g["width"].iloc[0],
                              masks, fractions):
            rows.append({"metric": metric, "attack": attack, "defense": defense,
                         "n_images": len(g)} | r)
    return pd.DataFrame(rows)


# -- the detector's signals ---------------------------------------------------------------------
def signals(df: pd.DataFrame, transforms: Sequence[str] = SIGNAL_PURIFIERS) -> pd.DataFrame:
    """The detector's inputs from the grid's rows: for every metric x attack x image, a clean
    row and an attacked row (``attacked`` 0 / 1) with ``drop:<T> = sign * (f(x) - f(T(x))) /
    range`` for each transform T (how far the quality falls under T; sign orients
    lower-is-better metrics), and the unpurified score ``score``. Transforms are matched by the
    grid's defense label (``"jpeg"``), so the grid must have run them."""
    m = _with_labels(df)
    missing = [t for t in transforms if t not in set(m["defense_label"])]
    if missing:
        raise ValueError(f"the table has no rows for the signal transforms {missing}; run the "
                         f"grid with them among the defenses (it has "
                         f"{', '.join(sorted(set(m['defense_label'])))})")
    key = ["dataset", "metric", "attack_label", "image_id", "seed"]
    out = None
    for t in transforms:
        g = m[m["defense_label"] == t]
        part = g[key + ["score_clean", "score_attacked", "width", "orient"]].copy()
        part[f"clean:{t}"] = g["orient"] * (g["score_clean"] - g["score_def_clean"]) / g["width"]
        part[f"attacked:{t}"] = (g["orient"] * (g["score_attacked"] - g["score_def_attacked"])
                                 / g["width"])
        part = part.drop_duplicates(subset=key)
        out = part if out is None else out.merge(
            part.drop(columns=["score_clean", "score_attacked", "width", "orient"]), on=key,
            how="inner", validate="1:1")
    rows = []
    for kind, flag in (("clean", 0), ("attacked", 1)):
        r = out[key].copy()
        r["attacked"] = flag
        r["score"] = out["score_clean" if flag == 0 else "score_attacked"].to_numpy()
        for t in transforms:
            r[f"drop:{t}"] = out[f"{kind}:{t}"].to_numpy()
        rows.append(r)
    res = pd.concat(rows, ignore_index=True).rename(columns={"attack_label": "attack"})
    return res.sort_values(["metric", "attack", "attacked", "dataset", "image_id", "seed"],
                           kind="stable").reset_index(drop=True)


def statistic(sig: pd.DataFrame, combine: str = "mean",
              transforms: Sequence[str] | None = None) -> np.ndarray:
    """One detection statistic per row of :func:`signals`: the mean (or max) of the drops;
    larger = more likely attacked."""
    cols = [f"drop:{t}" for t in transforms] if transforms else [
        c for c in sig.columns if c.startswith("drop:")]
    v = sig[cols].to_numpy(float)
    if combine == "mean":
        return v.mean(axis=1)
    if combine == "max":
        return v.max(axis=1)
    raise ValueError(f"combine must be one of {COMBINE}, got {combine!r}")


def detector_auc(sig: pd.DataFrame, combine: str = "mean") -> pd.DataFrame:
    """ROC AUC (sklearn.metrics.roc_auc_score) of attacked vs clean per metric x attack, for
    every single signal and the combined statistic; 0.5 = chance, 1 = perfect."""
    from sklearn.metrics import roc_auc_score

    drops = [c for c in sig.columns if c.startswith("drop:")]
    rows = []
    for (metric, attack), g in sig.groupby(["metric", "attack"], sort=True):
        y = g["attacked"].to_numpy()
        row = {"metric": metric, "attack": attack, "n_clean": int((y == 0).sum()),
               "n_attacked": int((y == 1).sum())}
        if len(set(y)) < 2:
            continue
        for c in drops:
            row[f"AUC {c.split(':', 1)[1]}"] = roc_auc_score(y, g[c].to_numpy(float))
        row[f"AUC {combine}"] = roc_auc_score(y, statistic(g, combine))
        rows.append(row)
    return pd.DataFrame(rows)


def roc_curves(sig: pd.DataFrame, combine: str = "mean") -> pd.DataFrame:
    """The combined statistic's ROC curve per metric x attack (sklearn.metrics.roc_curve):
    long form ``metric, attack, fpr, tpr, threshold``."""
    from sklearn.metrics import roc_curve

    rows = []
    for (metric, attack), g in sig.groupby(["metric", "attack"], sort=True):
        if g["attacked"].nunique() < 2:
            continue
        fpr, tpr, thr = roc_curve(g["attacked"].to_numpy(), statistic(g, combine))
        rows.append(pd.DataFrame({"metric": metric, "attack": attack, "fpr": fpr, "tpr": tpr,
                                  "threshold": thr}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["metric", "attack", "fpr", "tpr", "threshold"])


def loo_thresholds(clean_stats: np.ndarray, fpr: float = 0.05) -> np.ndarray:
    """Leave-one-out thresholds: image i's is the ``1 - fpr`` quantile of the other images'
    clean statistics (numpy's 'higher' method: a threshold is one of the values seen), so no
    image calibrates its own flag. Flag when the statistic is above the threshold."""
    s = np.asarray(clean_stats, dtype=float)
    if len(s) < 2:
        raise ValueError("leave-one-out thresholds need at least 2 clean images")
    if not 0 <= fpr < 1:
        raise ValueError(f"fpr must be in [0, 1), got {fpr}")
    return np.array([np.quantile(np.delete(s, i), 1 - fpr, method="higher")
                     for i in range(len(s))])


def detect_then_purify(df: pd.DataFrame, purifier: str,
                       fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *,
                       transforms: Sequence[str] = SIGNAL_PURIFIERS, combine: str = "mean",
                       fpr: float = 0.05, n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """The combined pipeline on the mixed stream, beside never and always purifying.

    Per metric x attack and fraction p (the same draws for the three pipelines):

    - ``never``: the metric on the raw stream;
    - ``always``: every image purified by ``purifier``;
    - ``detect``: the detector (``combine`` of the ``transforms`` drops, leave-one-out
      threshold at false-positive rate ``fpr`` on clean images) flags images; flagged ones are
      purified, the others keep their score exactly (a clean image left alone is untouched).

    Columns as :func:`mixed_stream` plus ``pipeline``, ``purifier``, ``label`` (``"never"``, or
    the pipeline and the purifier: ``"detect median"``, for figures), ``flagged_clean`` (share
    of clean images flagged) and ``flagged_attacked`` (share of attacked images caught).
    """
    sig = signals(df, transforms)
    m = _with_labels(df)
    p_rows = m[m["defense_label"] == purifier]
    if p_rows.empty:
        raise ValueError(f"no rows for purifier {purifier!r} in the table")
    key = ["dataset", "image_id", "seed"]
    rows = []
    for (metric, attack), g in p_rows.groupby(_GROUP, sort=True):
        g = _ordered(g).drop_duplicates(subset=key)
        s = sig[(sig.metric == metric) & (sig.attack == attack)]
        sc_ = s[s.attacked == 0].set_index(key)
        sa_ = s[s.attacked == 1].set_index(key)
        idx = pd.MultiIndex.from_frame(g[key])
        if not (idx.isin(sc_.index).all() and idx.isin(sa_.index).all()):
            raise ValueError(f"{metric} x {attack}: some images of {purifier!r} have no signal "
                             "rows (the signal transforms ran on fewer images)")
        stat_c = statistic(sc_.loc[idx], combine, transforms)
        stat_a = statistic(sa_.loc[idx], combine, transforms)
        thr = loo_thresholds(stat_c, fpr)
        flag_c, flag_a = stat_c > thr, stat_a > thr
        sc = g["score_clean"].to_numpy(float)
        sa = g["score_attacked"].to_numpy(float)
        sdc = g["score_def_clean"].to_numpy(float)
        sda = g["score_def_attacked"].to_numpy(float)
        masks = _attacked_masks(len(g), fractions, n_draws, seed)
        pipelines = {"never": (sc, sa), "always": (sdc, sda),
                     "detect": (np.where(flag_c, sdc, sc), np.where(flag_a, sda, sa))}
        for name, (out_c, out_a) in pipelines.items():
            for r in _stream_rows(sc, out_c, out_a, g["width"].iloc[0], masks, fractions):
                rows.append({"metric": metric, "attack": attack, "pipeline": name,
                             "purifier": purifier,
                             "label": name if name == "never" else f"{name} {purifier}",
                             "n_images": len(g),
                             "flagged_clean": float(flag_c.mean()) if name == "detect" else
                             float(name == "always"),
                             "flagged_attacked": float(flag_a.mean()) if name == "detect" else
                             float(name == "always")} | r)
    return pd.DataFrame(rows)


# -- adaptive attacks that evade the detector ---------------------------------------------------
class EvasionObjective(IQAMetric):
    """The metric averaged over the identity and the detector's transforms:
    ``mean(f(x), f(T_1(x)), ..., f(T_k(x)))``, BPDA through non-differentiable transforms
    (:class:`~iqalib.attacks.adaptive.DefendedMetric`). Raising it raises ``f(x)`` while keeping
    ``f(T(x))`` up with it: the drops the detector looks at stay small. Attack it with any
    gradient attack (``load_attack("ifgsm", EvasionObjective(metric))``)."""

    def __init__(self, metric: IQAMetric, transforms: Sequence[str] = SIGNAL_PURIFIERS):
        super().__init__()
        from ..attacks.adaptive import DefendedMetric

        self.metric = metric
        self.views = torch.nn.ModuleList([DefendedMetric(metric, t) for t in transforms])
        self.name = f"{metric.name}|evade({','.join(transforms)})"
        self.lower_better = metric.lower_better
        self.score_range = metric.score_range
        self.weights = tuple(getattr(metric, "weights", ()))

    def forward(self, x):
        scores = [self.metric(x)] + [v(x) for v in self.views]
        return torch.stack(scores).mean(dim=0)


def scores_table(metric: IQAMetric, x: torch.Tensor, attacked: dict[str, torch.Tensor],
                 defenses: Sequence[str], *, ids: Sequence[str] | None = None,
                 dataset: str = "live", seed: int = 0, batch_size: int = 4) -> pd.DataFrame:
    """Rows of the tidy form (the score columns, labels and ranges that this module and
    :mod:`.tables` read; no PSNR / SSIM) for images attacked outside the grid: ``attacked``
    maps an attack label to its images, ``defenses`` are purifier specs (``"none"`` for the
    raw scores). Clean purification is shared by every attack."""
    from ..defenses import create_defense, is_baseline
    from . import run

    ids = list(ids) if ids is not None else [f"img{i:04d}" for i in range(len(x))]
    device = metric.device
    sc = run.score(metric, x, batch_size=batch_size)
    purified = {}
    for d in defenses:
        if is_baseline(d):
            purified[d] = None
        else:
            purified[d] = create_defense(d).to(device)
    clean_def = {d: (sc if p is None else run.score(metric, run.purify(
        p, x, batch_size=batch_size, seed=seed, like=x).images, batch_size=batch_size))
        for d, p in purified.items()}
    rows = []
    for attack, xa in attacked.items():
        sa = run.score(metric, xa, batch_size=batch_size)
        for d, p in purified.items():
            sda = sa if p is None else run.score(metric, run.purify(
                p, xa, batch_size=batch_size, seed=seed, like=xa).images, batch_size=batch_size)
            rows.append(pd.DataFrame({
                "image_id": ids, "dataset": dataset, "metric": metric.name, "attack": attack,
                "defense": d, "seed": seed, "score_clean": sc, "score_attacked": sa,
                "score_def_clean": clean_def[d], "score_def_attacked": sda,
                "psnr": np.nan, "ssim": np.nan, "time_attack_s": np.nan,
                "time_defense_s": np.nan, "metric_range_lo": metric.score_range[0],
                "metric_range_hi": metric.score_range[1],
                "metric_lower_better": metric.lower_better, "attack_spec": attack,
                "defense_spec": d}))
    return pd.concat(rows, ignore_index=True)


# -- figures ---------------------------------------------------------------------------------
def stream_figure(stream: pd.DataFrame, *, hue: str = "defense",
                  measures: Sequence[str] = ("SROCC", "Gain/range"), title: str = ""):
    """Each measure of a mixed stream against the attacked fraction p, one line per ``hue``
    (``defense`` for :func:`mixed_stream`, ``pipeline`` for :func:`detect_then_purify`),
    averaged over metrics and attacks."""
    import matplotlib.pyplot as plt

    from .. import viz

    mean = stream.groupby([hue, "p"], as_index=False)[list(measures)].mean()
    fig, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures) + 1.5, 3.8),
                             squeeze=False)
    n = int(stream["n_images"].max()) if "n_images" in stream else None
    for ax, m in zip(axes[0], measures):
        viz.line(mean, x="p", y=m, hue=hue, ax=ax, title=m, n=n)
        ax.set_xlabel("fraction of the stream attacked (p)")
        if ax.get_legend() is not None:
            if ax is axes[0][-1]:  # one legend, beside the panels rather than over the lines
                ax.legend(*ax.get_legend_handles_labels(), loc="upper left",
                          bbox_to_anchor=(1.02, 1.0), fontsize=7, title=hue)
            else:
                ax.get_legend().remove()
    if title:
        viz.suptitle(fig, title)
    fig.tight_layout()
    return fig


def roc_figure(curves: pd.DataFrame, auc: pd.DataFrame | None = None, combine: str = "mean"):
    """ROC curves of the detector per attack, one panel per metric (AUC in the legend)."""
    import matplotlib.pyplot as plt

    from .. import viz

    metrics = sorted(curves["metric"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        g = curves[curves["metric"] == m]
        for attack in viz.order("attack", g["attack"].unique()):
            c = g[g["attack"] == attack]
            lab = str(attack)
            if auc is not None:
                a = auc[(auc["metric"] == m) & (auc["attack"] == attack)]
                if len(a):
                    lab += f" ({a[f'AUC {combine}'].iloc[0]:.2f})"
            ax.step(c["fpr"], c["tpr"], where="post", label=lab,
                    color=viz.color("attack", str(attack)))
        ax.plot([0, 1], [0, 1], ls=":", color="0.6")
        ax.set_xlabel("false-positive rate (clean images flagged)")
        ax.set_ylabel("true-positive rate (attacked images caught)")
        ax.set_title(f"{m}: score drop under the signal transforms")
        ax.legend(fontsize=7, title="attack (AUC)")
    fig.tight_layout()
    return fig


__all__ = ["COMBINE", "SIGNAL_PURIFIERS", "EvasionObjective", "detect_then_purify",
           "detector_auc", "loo_thresholds", "mixed_stream", "roc_curves", "roc_figure",
           "scores_table", "signals", "statistic", "stream_figure"]
