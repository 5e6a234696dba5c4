"""The attack-unknown setting: the mixed stream agrees with the tables at p = 0 and 1, the
detector's AUC is the Mann-Whitney statistic, and detect-then-purify leaves clean images alone."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from iqalib.evaluate import detection, tables
from iqalib.evaluate.store import COLUMNS

TRANSFORMS = ("flip", "jpeg", "gaussian-blur")


def _tidy(n: int = 10, seed: int = 0, detectable: bool = True) -> pd.DataFrame:
    """One metric, two attacks, the undefended rows, the three signal transforms and a
    purifier. Attacked images lose most of their boost under every transform when
    ``detectable``; clean images move a little."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(30, 70, n)
    # purifying a clean image does not depend on the attack (the grid shares it)
    def_clean = {d: clean + rng.normal(0, 1.0, n) for d in (*TRANSFORMS, "median")}
    rows = []
    for attack in ("a1", "a2"):
        att = clean + rng.uniform(20, 30, n)
        for defense in ("none", *TRANSFORMS, "median"):
            if defense == "none":
                dc, da = clean, att
            else:
                dc = def_clean[defense]
                keep = 0.2 if detectable else 1.0
                da = clean + keep * (att - clean) + rng.normal(0, 1.0, n)
            for i in range(n):
                rows.append({
                    "image_id": f"img{i:02d}", "dataset": "toy", "metric": "m",
                    "attack": attack, "attack_params": "{}", "defense": defense,
                    "defense_params": "{}", "seed": 0, "score_clean": clean[i],
                    "score_attacked": att[i], "score_def_clean": dc[i],
                    "score_def_attacked": da[i], "psnr": 30.0, "ssim": 0.9,
                    "time_attack_s": 0.1, "time_defense_s": 0.1, "git_sha": "x",
                    "metric_range_lo": 0.0, "metric_range_hi": 100.0,
                    "metric_lower_better": False, "attack_spec": attack, "defense_spec": defense,
                    "image_sha": f"s{i}"})
    return pd.DataFrame(rows)[COLUMNS]


def test_mixed_stream_ends_are_the_tables_clean_and_attacked_rows():
    df = _tidy()
    ms = detection.mixed_stream(df, [0.0, 0.5, 1.0], n_draws=20)
    summ = tables.summary(df).set_index(["metric", "attack", "defense"])
    clean = tables.clean_cost_table(df).set_index(["metric", "defense"])
    for _, r in ms[ms.p == 1.0].iterrows():   # every image attacked: the study's own measure
        s = summ.loc[(r.metric, r.attack, r.defense)]
        assert r["SROCC"] == pytest.approx(s["srocc"]) and r["Gain"] == pytest.approx(s["gain"])
        assert r["Gain/range"] == pytest.approx(s["abs_gain_norm"])
    for _, r in ms[ms.p == 0.0].iterrows():   # nobody attacked: the clean-image cost
        c = clean.loc[(r.metric, r.defense)]
        assert r["SROCC"] == pytest.approx(c["srocc"]) and r["Gain"] == pytest.approx(c["gain"])
    half = ms[ms.p == 0.5]
    assert (half["n_attacked"] == 5).all() and (half["SROCC lo"] <= half["SROCC hi"]).all()


def test_the_same_images_are_attacked_for_every_purifier():
    m = detection._attacked_masks(9, [0.0, 1 / 3, 1.0], 50, seed=4)
    assert m.shape == (3, 50, 9)
    assert (m[0].sum(1) == 0).all() and (m[1].sum(1) == 3).all() and (m[2].sum(1) == 9).all()
    assert np.array_equal(m, detection._attacked_masks(9, [0.0, 1 / 3, 1.0], 50, seed=4))


def test_signals_are_the_oriented_drops():
    df = _tidy(n=4)
    sig = detection.signals(df, TRANSFORMS)
    assert len(sig) == 2 * 2 * 4 and set(sig["attacked"]) == {0, 1}
    r = df[(df.attack == "a2") & (df.defense == "jpeg") & (df.image_id == "img03")].iloc[0]
    got = sig[(sig.attack == "a2") & (sig.image_id == "img03")].set_index("attacked")
    assert got.loc[1, "drop:jpeg"] == pytest.approx((r.score_attacked - r.score_def_attacked) / 100)
    assert got.loc[0, "drop:jpeg"] == pytest.approx((r.score_clean - r.score_def_clean) / 100)
    # lower-is-better metrics are oriented: a quality drop stays positive
    flipped = df.assign(metric_lower_better=True)
    sig2 = detection.signals(flipped, TRANSFORMS)
    np.testing.assert_allclose(sig2["drop:flip"], -sig["drop:flip"])
    with pytest.raises(ValueError, match="no rows for the signal transforms"):
        detection.signals(df[df.defense != "flip"], TRANSFORMS)


def test_auc_is_the_mann_whitney_statistic():
    for detectable in (True, False):
        sig = detection.signals(_tidy(n=12, seed=1, detectable=detectable), TRANSFORMS)
        auc = detection.detector_auc(sig).set_index("attack")
        g = sig[sig.attack == "a1"]
        stat = detection.statistic(g)
        u = stats.mannwhitneyu(stat[g.attacked.to_numpy() == 1],
                               stat[g.attacked.to_numpy() == 0]).statistic
        assert auc.loc["a1", "AUC mean"] == pytest.approx(u / (12 * 12))
        if detectable:
            assert (auc["AUC mean"] == 1.0).all()
    curves = detection.roc_curves(sig)
    assert set(curves.attack) == {"a1", "a2"} and curves.tpr.between(0, 1).all()


def test_leave_one_out_thresholds():
    s = np.array([0.0, 0.1, 0.2, 5.0])
    thr = detection.loo_thresholds(s, fpr=0.0)
    assert np.allclose(thr, [5.0, 5.0, 5.0, 0.2])  # the outlier is judged by the others
    assert (s > thr).tolist() == [False, False, False, True]


def test_detect_then_purify_leaves_clean_images_untouched():
    df = _tidy(n=10)
    # leave-one-out at fpr 0: a clean image is flagged only if it beats every other one
    res = detection.detect_then_purify(df, "median", [0.0], n_draws=5, fpr=0.0)
    assert (res[res.pipeline == "detect"]["flagged_clean"] == 0.1).all()
    # the transforms leave clean images exactly alone: no clean image can be flagged
    sig_rows = df.defense.isin(TRANSFORMS)
    df.loc[sig_rows, "score_def_clean"] = df.loc[sig_rows, "score_clean"]
    res = detection.detect_then_purify(df, "median", [0.0, 0.5, 1.0], n_draws=30, fpr=0.0)
    res = res.set_index(["attack", "pipeline", "p"]).sort_index()
    for attack in ("a1", "a2"):
        det = res.loc[(attack, "detect")]
        # at p = 0 the stream is the clean one, every score untouched
        assert det.loc[0.0, "SROCC"] == 1.0 and det.loc[0.0, "Gain"] == 0.0
        assert det["flagged_clean"].iloc[0] == 0.0 and det["flagged_attacked"].iloc[0] == 1.0
        # every attacked image caught: at p = 1 the pipeline is "always purify"
        alw = res.loc[(attack, "always", 1.0)]
        assert det.loc[1.0, "SROCC"] == pytest.approx(alw["SROCC"])
        # and on the mixture it beats both never and always on Gain
        mid = res.xs(0.5, level="p").loc[attack]
        assert mid.loc["detect", "Gain/range"] < mid.loc["never", "Gain/range"]
        assert mid.loc["detect", "Gain/range"] < mid.loc["always", "Gain/range"]


def test_evasion_objective_and_live_rows(toy_metric, photos64):
    obj = detection.EvasionObjective(toy_metric, ("flip", "gaussian-blur"))
    x = photos64[:2, :, :32, :32]
    with torch.no_grad():
        from iqalib.defenses import create_defense

        ref = (toy_metric(x) + toy_metric(create_defense("flip")(x))
               + toy_metric(create_defense("gaussian-blur")(x))) / 3
        assert torch.allclose(obj(x), ref)
    xg = x.clone().requires_grad_(True)
    obj(xg).sum().backward()
    assert xg.grad.abs().sum() > 0
    table = detection.scores_table(toy_metric, x, {"noise": (x + 0.05).clamp(0, 1)},
                                   ["none", "flip", "gaussian-blur", "jpeg"])
    sig = detection.signals(table, ("flip", "gaussian-blur", "jpeg"))
    assert len(sig) == 4 and np.isfinite(sig.filter(like="drop:").to_numpy()).all()
    assert (table[table.defense == "none"]["score_def_attacked"].to_numpy()
            == table[table.defense == "none"]["score_attacked"].to_numpy()).all()
