"""The study's tables from a hand-made tidy table with known answers (scipy as the reference)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from iqalib.evaluate import tables
from iqalib.evaluate.store import COLUMNS


def _tidy() -> pd.DataFrame:
    """2 metrics x 2 attacks x 2 defenses x 4 images with chosen scores."""
    rng = np.random.default_rng(0)
    rows = []
    clean = {"m1": [10.0, 20.0, 30.0, 40.0], "m2": [0.2, 0.4, 0.5, 0.9]}
    ranges = {"m1": (0.0, 100.0), "m2": (0.0, 1.0)}
    for metric in ("m1", "m2"):
        lo, hi = ranges[metric]
        for attack, boost in (("a1", 0.3), ("a2", 0.5)):
            for defense, undo in (("none", 0.0), ("jpeg:q50", 0.8)):
                def_clean_shift = 0.0 if defense == "none" else 0.05 * (hi - lo)
                for i, c in enumerate(clean[metric]):
                    att = c + boost * (hi - lo) * (1 + 0.1 * i)
                    rows.append({
                        "image_id": f"img{i}", "dataset": "toy", "metric": metric,
                        "attack": attack, "attack_params": "{}",
                        "defense": defense.split(":")[0],
                        "defense_params": "{}" if defense == "none" else '{"quality": 50}',
                        "seed": 0, "score_clean": c, "score_attacked": att,
                        "score_def_clean": c + def_clean_shift,
                        "score_def_attacked": att - undo * (att - c),
                        "psnr": 150.0 if defense == "none" else 30.0 + i,
                        "ssim": 1.0 if defense == "none" else 0.8,
                        "time_attack_s": 0.5, "time_defense_s": 0.0 if defense == "none" else 0.1,
                        "git_sha": "abc", "metric_range_lo": lo, "metric_range_hi": hi,
                        "metric_lower_better": False, "attack_spec": attack,
                        "defense_spec": defense, "image_sha": f"sha{i}"})
    df = pd.DataFrame(rows)[COLUMNS]
    return df.sample(frac=1.0, random_state=int(rng.integers(100))).reset_index(drop=True)


def test_summary_values():
    df = _tidy()
    s = tables.summary(df)
    assert len(s) == 2 * 2 * 2
    row = s[(s.metric == "m1") & (s.attack == "a2") & (s.defense == "jpeg:q50")].iloc[0]
    g = df[(df.metric == "m1") & (df.attack == "a2") & (df.defense_spec == "jpeg:q50")]
    g = g.sort_values("image_id")
    sc, sda = g.score_clean.to_numpy(), g.score_def_attacked.to_numpy()
    assert row["gain"] == pytest.approx(np.mean(np.abs(sc - sda) / np.abs(sc)))
    assert row["abs_gain_norm"] == pytest.approx(np.mean(np.abs(sc - sda) / 100.0))
    assert row["srocc"] == pytest.approx(spearmanr(sc, sda)[0])
    assert row["plcc"] == pytest.approx(pearsonr(sc, sda)[0])
    assert row["psnr"] == pytest.approx(31.5) and row["ssim"] == pytest.approx(0.8)
    assert row["q"] == pytest.approx(np.mean((0.8 + (30.0 + np.arange(4)) / 80) / 2))
    assert row["time_s"] == pytest.approx(0.1) and row["n"] == 4


def test_paper_table_is_the_mean_over_metrics_and_attacks():
    df = _tidy()
    s = tables.summary(df)
    t = tables.paper_table(df)
    assert list(t.columns) == tables.PAPER_COLUMNS
    assert list(t.index) == ["none", "jpeg:q50"]  # the undefended baseline first
    for col, src in (("Gain", "gain"), ("SROCC", "srocc"), ("Q", "q"), ("Gain/range", "abs_gain_norm")):
        assert t.loc["jpeg:q50", col] == pytest.approx(s[s.defense == "jpeg:q50"][src].mean())
    # purifying undoes 80% of every attack: the gain drops 5-fold
    assert t.loc["jpeg:q50", "Gain/range"] == pytest.approx(0.2 * t.loc["none", "Gain/range"])
    assert t.loc["none", "Q"] == pytest.approx((1 + 150 / 80) / 2)


def test_pivot_and_clean_cost():
    df = _tidy()
    p = tables.pivot(df, "abs_gain_norm")
    assert list(p.columns) == ["a1", "a2"] and list(p.index) == ["none", "jpeg:q50"]
    assert p.loc["none", "a2"] > p.loc["none", "a1"]
    pm = tables.pivot(df, "srocc", columns="metric")
    assert list(pm.columns) == ["m1", "m2"]
    with pytest.raises(KeyError):
        tables.pivot(df, "nope")
    c = tables.clean_cost_table(df)
    assert len(c) == 4 and (c["n"] == 4).all()  # clean rows of two attacks count once
    j = c[(c.metric == "m2") & (c.defense == "jpeg:q50")].iloc[0]
    assert j["abs_gain_norm"] == pytest.approx(0.05)
    assert j["gain"] == pytest.approx(np.mean(0.05 / np.array([0.2, 0.4, 0.5, 0.9])))
    assert j["srocc"] == pytest.approx(1.0)
    none = c[c.defense == "none"]
    assert (none["gain"] == 0).all()
    # the rows behind it: each image once per metric x purifier, whatever the attacks
    r = tables.clean_cost_rows(df)
    assert len(r) == 2 * 2 * 4 and not r.duplicated(["metric", "defense_label", "image_id"]).any()
    mean = r.groupby(["metric", "defense_label"])["clean_abs_gain_norm"].mean()
    assert np.allclose(mean.to_numpy(), c.set_index(["metric", "defense"])["abs_gain_norm"]
                       .loc[mean.index].to_numpy())


# --- derivations the notebooks show ---------------------------------------------------------------
def test_attack_effect_against_direct_computation(tmp_path, toy_lower_metric, photos64):
    from skimage.metrics import peak_signal_noise_ratio

    import iqalib
    from iqalib.attacks.cache import AttackCache
    from iqalib.evaluate.grid import run_grid
    from iqalib.imagesets import TensorImages

    imgs = TensorImages(photos64, name="toy")
    df = run_grid([toy_lower_metric], ["ifgsm"], ["none", "flip"], imgs, progress=False,
                  out=tmp_path / "run", cache=tmp_path / "adv")
    eff = tables.attack_effect(df)
    assert len(eff) == 1 and eff.n.iloc[0] == 3  # only the undefended rows count
    base = df[df.defense == "identity"]
    lo, hi = toy_lower_metric.score_range
    want = -(base.score_attacked - base.score_clean) / (hi - lo)  # lower is better: sign -1
    assert eff["score_change/range"].iloc[0] == pytest.approx(want.mean())
    assert eff["score_change/range"].iloc[0] > 0  # the attack made the toy metric "better"
    assert eff["improved"].iloc[0] == pytest.approx((want > 0).mean())
    # PSNR of attacked vs clean, from the cached attacked images, by skimage
    atk = iqalib.load_attack("ifgsm", toy_lower_metric, seed=0)
    x_adv = AttackCache(tmp_path / "adv").get_or_run(atk, toy_lower_metric.name, imgs, imgs.ids, 0)
    ref = [peak_signal_noise_ratio(photos64[i].numpy(), x_adv[i].numpy(), data_range=1.0)
           for i in range(3)]
    assert eff.PSNR.iloc[0] == pytest.approx(np.mean(ref), rel=1e-4)
    with pytest.raises(ValueError, match="no undefended rows"):
        tables.attack_effect(df[df.defense != "identity"])


def test_attack_effect_orients_each_metric():
    df = _tidy()
    eff = tables.attack_effect(df).set_index(["metric", "attack"])
    # m1: range 100, boost 0.3 of the range x (1 + 0.1 i): mean 0.3 * 1.15
    assert eff.loc[("m1", "a1"), "score_change/range"] == pytest.approx(0.3 * 1.15)
    flipped = df.assign(metric_lower_better=True, score_attacked=2 * df.score_clean - df.score_attacked)
    eff2 = tables.attack_effect(flipped).set_index(["metric", "attack"])
    np.testing.assert_allclose(eff2["score_change/range"], eff["score_change/range"])


def test_best_purifiers_direction():
    t = pd.DataFrame({"SROCC": [0.9, 0.5, 0.95, np.nan, 0.7], "Gain": [0.1, 0.3, 0.05, 0.0, 0.2]},
                     index=["none", "a", "b", "c", "d"])
    assert tables.best_purifiers(t, 2, by="SROCC") == ["b", "d"]
    assert tables.best_purifiers(t, 2, by="Gain") == ["c", "b"]  # the baseline never counts
    t.index = ["identity", "a", "diffpure:t10", "c", "d"]
    assert tables.best_purifiers(t, 2, by="SROCC", exclude=("diffpure",)) == ["d", "a"]


def test_flip_comparison_puts_ours_beside_the_paper():
    from iqalib.study import PAPER_FLIP_ROW

    t = pd.DataFrame({"Q": [0.5], "Gain": [0.2], "PSNR": [20.0], "SSIM": [0.6], "SROCC": [0.8]},
                     index=["flip"])
    c = tables.flip_comparison(t)
    assert c.iloc[:, 0].to_dict() == PAPER_FLIP_ROW
    assert c["ours"].tolist() == [0.5, 0.2, 20.0, 0.6, 0.8]
    two = tables.flip_comparison({"m": t, "no flip": t.rename(index={"flip": "jpeg"})})
    assert two["ours: m"].tolist() == [0.5, 0.2, 20.0, 0.6, 0.8]
    assert two["ours: no flip"].isna().all()


def _diffpure_tidy() -> pd.DataFrame:
    """The toy table's jpeg rows relabelled as DiffPure at t = 5, 10 and 50."""
    df = _tidy()
    j = df[df.defense == "jpeg"]
    frames = []
    for t, undo in ((5, 0.2), (10, 0.5), (50, 0.9)):
        dp = j.copy()
        dp["defense"], dp["defense_spec"] = "diffpure", f"diffpure:t{t}"
        dp["defense_params"] = f'{{"prior": "ffdnet", "t": {t}, "sampler": "ddpm"}}'
        dp["score_def_attacked"] = dp.score_attacked - undo * (dp.score_attacked - dp.score_clean)
        comp = dp.copy()
        comp["defense"], comp["defense_spec"] = "diffpure-unsharp", f"diffpure-unsharp:t{t}"
        comp["defense_params"] = json.dumps({"parts": [["diffpure", {"prior": "guided", "t": t,
                                                                     "sampler": "ddpm"}],
                                                       ["unsharp", {}]]})
        frames += [dp, comp]
    return pd.concat([df, *frames], ignore_index=True)


def test_diffpure_priors_reads_defense_params_in_numeric_t_order():
    p = tables.diffpure_priors(_diffpure_tidy())
    assert list(p.purifier) == ["diffpure:t5", "diffpure:t10", "diffpure:t50",
                                "diffpure-unsharp:t5", "diffpure-unsharp:t10",
                                "diffpure-unsharp:t50"]
    assert set(p[p.purifier.str.startswith("diffpure:")].prior) == {"ffdnet"}
    assert set(p[p.purifier.str.startswith("diffpure-unsharp")].prior) == {"guided"}
    assert (p.rows == 2 * 2 * 4).all() and list(p.t[:3]) == [5, 10, 50]


def test_diffpure_sweep_orders_t_as_numbers_and_matches_the_paper_table():
    df = _diffpure_tidy()
    sw = tables.diffpure_sweep(df)
    one = sw[sw.purifier == "diffpure"]
    assert list(one.t) == [5, 10, 50]
    # undoing 20 / 50 / 90 % of the attack: Gain/range falls with t
    assert one["Gain/range"].is_monotonic_decreasing
    pt = tables.paper_table(df)
    for t in (5, 10, 50):
        row = one[one.t == t].iloc[0]
        assert row["Gain/range"] == pytest.approx(pt.loc[f"diffpure:t{t}", "Gain/range"])
        assert row["SROCC"] == pytest.approx(pt.loc[f"diffpure:t{t}", "SROCC"])
    assert set(sw[sw.purifier == "diffpure-unsharp"].prior) == {"guided"}
    # presets in numeric order in the paper table and the pivots too
    assert [i for i in pt.index if i.startswith("diffpure:")] == ["diffpure:t5", "diffpure:t10",
                                                                  "diffpure:t50"]
    assert list(tables.pivot(df, "srocc").index[:3]) == ["none", "diffpure-unsharp:t5",
                                                         "diffpure-unsharp:t10"]
    with pytest.raises(ValueError, match="no DiffPure rows"):
        tables.diffpure_sweep(_tidy())


def test_rank_agreement_orients_lower_is_better():
    rng = np.random.default_rng(1)
    a = rng.normal(size=6)
    s = pd.DataFrame({"up": a, "down": -3 * a + 1, "other": rng.normal(size=6)})
    s.attrs["lower_better"] = ["down"]
    agree = tables.rank_agreement(s)
    assert agree.loc["up", "down"] == pytest.approx(1.0)
    assert spearmanr(s["up"], s["down"])[0] == pytest.approx(-1.0)
    assert agree.loc["up", "other"] == pytest.approx(spearmanr(s["up"], s["other"])[0])


def test_components_and_weights_tables_follow_the_declarations():
    from iqalib import weights
    from iqalib.metrics import Linearity

    t = tables.metrics_table().set_index("metric")
    assert t.loc["brisque", "runs offline"] and t.loc["effnet-iqa", "runs offline"]
    assert t.loc["linearity", "checkpoints"] == ", ".join(Linearity.weights)
    assert bool(t.loc["linearity", "runs offline"]) == all(
        weights.is_available(c) for c in Linearity.weights)
    w = tables.weights_table().set_index("checkpoint")
    assert set(w.index) == set(weights.CATALOGUE)
    assert "metric linearity" in w.loc[Linearity.weights[0], "used_by"]
    assert tables.declared_weights("metric", "linearity-p1q2") == tuple(Linearity.weights)
    # attacks and purifiers declare theirs too; DiffPure uses the guided UNet when present
    from iqalib.defenses.diffpure import DiffPure

    d = tables.components_table("defense").set_index("defense")
    assert d.loc["diffpure", "runs offline"] and d.loc["diffpure", "checkpoints"] == "-"
    assert d.loc["diffpure", "optional"] == ", ".join(DiffPure.optional_weights)
    assert "defense diffpure (optional)" in w.loc[DiffPure.optional_weights[0], "used_by"]


def test_diffpure_sweep_rows_are_per_image_and_average_to_the_sweep():
    df = _diffpure_tidy()
    rows = tables.diffpure_sweep_rows(df)
    assert set(rows.purifier) == {"diffpure", "diffpure-unsharp"} and set(rows.t) == {5, 10, 50}
    assert "none" not in set(rows.defense_label)
    sw = tables.diffpure_sweep(df).set_index(["purifier", "t"])
    # one metric x attack per group here or several: the mean over the per-group means is the sweep's
    per_group = rows.groupby(["purifier", "t", "metric", "attack_label"])[["abs_gain_norm", "psnr"]].mean()
    back = per_group.groupby(["purifier", "t"]).mean()
    assert np.allclose(back["abs_gain_norm"], sw.loc[back.index, "Gain/range"])
    assert np.allclose(back["psnr"], sw.loc[back.index, "PSNR"])
    with pytest.raises(ValueError, match="no DiffPure rows"):
        tables.diffpure_sweep_rows(_tidy())
