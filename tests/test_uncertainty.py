"""Bootstrap intervals over images: the point estimates are the tables', the resampled
statistics are the tables' statistics, the intervals agree with scipy.stats.bootstrap, and a
paired comparison tells a real difference from noise."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqalib.evaluate import tables, uncertainty
from iqalib.evaluate.store import COLUMNS

DEFENSES = {"none": 0.0, "jpeg:q50": 0.6, "flip": 0.8}


def _tidy(n_images: int = 12, seed: int = 0, undo: dict | None = None) -> pd.DataFrame:
    """2 metrics x 2 attacks x len(undo) defenses x n images; the defense removes ``undo`` of
    the attack's boost, plus per-image noise."""
    rng = np.random.default_rng(seed)
    undo = undo or DEFENSES
    rows = []
    for metric, (lo, hi) in (("m1", (0.0, 100.0)), ("m2", (0.0, 1.0))):
        clean = rng.uniform(lo + 0.2 * (hi - lo), lo + 0.8 * (hi - lo), n_images)
        for attack, boost in (("a1", 0.2), ("a2", 0.4)):
            att = clean + boost * (hi - lo) * rng.uniform(0.5, 1.5, n_images)
            for defense, u in undo.items():
                noise = rng.normal(0, 0.05 * (hi - lo), n_images) if u else 0.0
                sda = att - u * (att - clean) + noise
                psnr = np.full(n_images, 150.0) if not u else rng.uniform(25, 35, n_images)
                for i in range(n_images):
                    rows.append({
                        "image_id": f"img{i:02d}", "dataset": "toy", "metric": metric,
                        "attack": attack, "attack_params": "{}", "defense": defense.split(":")[0],
                        "defense_params": "{}", "seed": 0, "score_clean": clean[i],
                        "score_attacked": att[i], "score_def_clean": clean[i],
                        "score_def_attacked": sda[i], "psnr": psnr[i],
                        "ssim": 1.0 if not u else rng.uniform(0.7, 0.9),
                        "time_attack_s": 0.5, "time_defense_s": 0.1, "git_sha": "abc",
                        "metric_range_lo": lo, "metric_range_hi": hi,
                        "metric_lower_better": False, "attack_spec": attack,
                        "defense_spec": defense, "image_sha": f"sha{i}"})
    return pd.DataFrame(rows)[COLUMNS]


def _one_image_apart(n_images: int = 6) -> pd.DataFrame:
    """flip = jpeg on every image but one, where flip undoes a little more of the attack: a
    difference carried by a single image, which a resample leaves out a third of the time."""
    df = _tidy(n_images=n_images)
    jpeg = df[df.defense_spec == "jpeg:q50"].set_index(["metric", "attack", "image_id"])
    flip = df.defense_spec == "flip"
    keys = pd.MultiIndex.from_frame(df.loc[flip, ["metric", "attack", "image_id"]])
    for col in ("score_def_attacked", "psnr", "ssim"):
        df.loc[flip, col] = jpeg.loc[keys, col].to_numpy()
    one = flip & (df.image_id == "img00")
    df.loc[one, "score_def_attacked"] -= 0.3 * (df.loc[one, "score_def_attacked"]
                                                - df.loc[one, "score_clean"])
    return df


def test_point_estimates_are_the_tables():
    df = _tidy()
    s = uncertainty.summary_ci(df, n_boot=50)
    pd.testing.assert_frame_equal(s[tables.summary(df).columns], tables.summary(df))
    p = uncertainty.paper_table_ci(df, n_boot=50)
    pd.testing.assert_frame_equal(p[tables.PAPER_COLUMNS], tables.paper_table(df))
    for m in ("gain", "abs_gain_norm", "srocc", "q", "psnr", "ssim"):
        assert (s[f"{m}_lo"] <= s[m] + 1e-12).mean() > 0.9  # the point sits inside (almost always)
        assert (s[f"{m}_lo"] <= s[f"{m}_hi"]).all()


def test_unresampled_statistics_equal_the_tables_with_ties_gaps_and_seeds():
    """The vectorised statistics on the identity resample are exactly tables.summary's,
    including tied scores, an image missing from one group, a non-finite score and two seeds."""
    df = _tidy(n_images=7)
    df.loc[df.index[:3], "score_def_attacked"] = 42.0              # ties
    df = df.drop(index=df.index[10])                                # a gap
    df.loc[df.index[20], "score_def_attacked"] = np.nan              # a failed score
    extra = df[df["image_id"] == "img03"].assign(seed=1)
    extra["score_def_attacked"] += 1.5
    df = pd.concat([df, extra], ignore_index=True)                  # a second seed
    layout = uncertainty._layout(df)
    draws = uncertainty._group_draws(layout, np.arange(layout.n_images)[None])
    ref = tables.summary(df)
    key = layout.keys.rename(columns={"attack_label": "attack", "defense_label": "defense"})
    got = key.assign(**{k: v[0] for k, v in draws.items()})
    merged = ref.merge(got, on=["metric", "attack", "defense"], suffixes=("", "_boot"))
    assert len(merged) == len(ref)
    for m in uncertainty.CI_MEASURES:
        np.testing.assert_allclose(merged[f"{m}_boot"], merged[m], rtol=1e-12, equal_nan=True)


def test_intervals_agree_with_scipy_bootstrap():
    df = _tidy(n_images=20, seed=3)
    s = uncertainty.summary_ci(df, n_boot=4000, seed=1)
    row = s[(s.metric == "m1") & (s.attack == "a2") & (s.defense == "jpeg:q50")].iloc[0]
    g = tables.add_measures(df)
    g = g[(g.metric == "m1") & (g.attack == "a2") & (g.defense_spec == "jpeg:q50")]
    g = g.sort_values("image_id")

    def rho(a, b, axis=-1):
        # Spearman's rho = Pearson's r of the ranks (scipy's definition), vectorised for speed
        return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis),
                              axis=axis).statistic

    sc, sda = g["score_clean"].to_numpy(), g["score_def_attacked"].to_numpy()
    assert rho(sc, sda) == pytest.approx(stats.spearmanr(sc, sda).statistic)
    ref = stats.bootstrap((sc, sda), rho, paired=True, vectorized=True, method="percentile",
                          n_resamples=4000, rng=np.random.default_rng(2))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(row["srocc_lo"] - ref.confidence_interval.low) < 0.12 * width
    assert abs(row["srocc_hi"] - ref.confidence_interval.high) < 0.12 * width
    ref = stats.bootstrap((g["psnr"].to_numpy(),), np.mean, method="percentile",
                          n_resamples=4000, rng=np.random.default_rng(2))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(row["psnr_lo"] - ref.confidence_interval.low) < 0.1 * width
    assert abs(row["psnr_hi"] - ref.confidence_interval.high) < 0.1 * width


def test_paired_comparison_tells_a_difference_from_noise():
    # flip removes 95 % of the boost, jpeg 40 %: clearly different on 12 images
    df = _tidy(undo={"none": 0.0, "jpeg:q50": 0.4, "flip": 0.95})
    c = uncertainty.compare_purifiers(df, "flip", "jpeg:q50", "Gain/range", n_boot=500)
    assert c["verdict"] == "flip better" and c["p_a_better"] > 0.99 and c["p_value"] < 0.01
    assert c["diff"] == pytest.approx(c["value_a"] - c["value_b"]) and c["diff_hi"] < 0
    # flip is better on one image of six: the point estimate ranks it first, the bootstrap
    # says that this cannot be told apart from chance
    df = _one_image_apart()
    c = uncertainty.compare_purifiers(df, "flip", "jpeg:q50", "Gain/range", n_boot=500)
    assert c["diff"] < 0 and c["verdict"] == "indistinguishable"
    assert c["diff_lo"] < 0 and c["diff_hi"] == 0 and c["p_value"] > 0.05
    with pytest.raises(KeyError, match="not in the table"):
        uncertainty.compare_purifiers(df, "flip", "median", n_boot=10)


def test_paper_table_ranking_columns_say_when_the_best_is_noise():
    df = _one_image_apart()
    t = uncertainty.paper_table_ci(df, n_boot=400, rank_by="Gain/range")
    ranked = t.drop(index="none")
    assert sorted(ranked["rank"]) == [1, 2] and np.isnan(t.loc["none", "rank"])
    assert ranked["p_best"].sum() == pytest.approx(1.0)
    assert ranked.loc["flip", "vs_best"] == "best" and ranked.loc["jpeg:q50", "vs_best"] == "tied"
    assert t.attrs["best_distinguishable"] is False and t.attrs["n_images"] == 6
    # with a real gap the runner-up is "worse"
    df = _tidy(undo={"none": 0.0, "jpeg:q50": 0.4, "flip": 0.95})
    t = uncertainty.paper_table_ci(df, n_boot=400, rank_by="Gain/range")
    assert t.loc["flip", "vs_best"] == "best" and t.loc["jpeg:q50", "vs_best"] == "worse"
    assert t.attrs["best_distinguishable"] is True
    # same seed, same intervals
    t2 = uncertainty.paper_table_ci(df, n_boot=400, rank_by="Gain/range")
    pd.testing.assert_frame_equal(t, t2)


def test_ci_errorbars_draws_every_purifier():
    import matplotlib

    matplotlib.use("Agg")
    t = uncertainty.paper_table_ci(_tidy(n_images=6), n_boot=100)
    fig = uncertainty.ci_errorbars(t, "SROCC")
    assert len(fig.axes[0].get_yticklabels()) == len(t)


def test_ranking_verdict_says_when_the_order_is_noise():
    # two purifiers that undo the attack equally well: the order between them is noise
    df = _tidy(n_images=6, undo={"none": 0.0, "jpeg:q50": 0.9, "flip": 0.9})
    boot = uncertainty.bootstrap_paper_table(df, n_boot=300, seed=0)
    t = uncertainty.paper_table_ci(boot=boot, rank_by="Gain/range")
    first, second = t.dropna(subset=["rank"]).sort_values("rank").index[:2]
    c = uncertainty.compare_purifiers(None, first, second, "Gain/range", boot=boot)
    text = uncertainty.ranking_verdict(t, c)
    assert text.startswith("On 6 images, Gain/range ranks 2 purifiers")
    assert "1 of the other 1 cannot be told from it" in text and "indistinguishable" in text
    # a real gap: the runner-up is distinguishably worse and the sentence says who wins
    df = _tidy(undo={"none": 0.0, "jpeg:q50": 0.4, "flip": 0.95})
    boot = uncertainty.bootstrap_paper_table(df, n_boot=300, seed=0)
    t = uncertainty.paper_table_ci(boot=boot, rank_by="Gain/range")
    c = uncertainty.compare_purifiers(None, "flip", "jpeg:q50", "Gain/range", boot=boot)
    text = uncertainty.ranking_verdict(t, c)
    assert "Every other purifier is distinguishably worse" in text and "flip better" in text


def test_one_image_ranks_nothing_and_its_figures_still_draw():
    # SROCC over the images is undefined on one image (the rehearsal profile runs one):
    # nothing is ranked, the top-two comparison is None, and notebook 07's figures still draw
    import matplotlib

    matplotlib.use("Agg")
    from iqalib import viz

    df = _tidy(n_images=1)
    boot = uncertainty.bootstrap_paper_table(df, n_boot=50, seed=0)
    t = uncertainty.paper_table_ci(boot=boot, rank_by="SROCC")
    assert t["rank"].isna().all()
    assert uncertainty.compare_top_two(t, boot) is None
    assert uncertainty.ranking_verdict(t, None) == "No purifier has a finite SROCC: nothing to rank."
    viz.tradeoff_scatter(t.reset_index(), x="Q", y="Gain/range", n=1)
    viz.heatmaps({m: tables.pivot(df[df.metric == m], "srocc") for m in ("m1", "m2")},
                 measure="srocc", title="SROCC", n=1)
    # with images enough, the top two are compared on the ranking's measure
    df = _tidy(undo={"none": 0.0, "jpeg:q50": 0.4, "flip": 0.95})
    boot = uncertainty.bootstrap_paper_table(df, n_boot=200, seed=0)
    t = uncertainty.paper_table_ci(boot=boot, rank_by="Gain/range")
    c = uncertainty.compare_top_two(t, boot)
    assert (c["a"], c["b"], c["measure"]) == ("flip", "jpeg:q50", "Gain/range")
