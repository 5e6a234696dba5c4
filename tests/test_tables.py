"""The study's tables from a hand-made tidy table with known answers (scipy as the reference)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from iqalib.evaluate import tables
from iqalib.evaluate.grid import COLUMNS, load_results


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
                        "defense_spec": defense})
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


def test_cli_prints_tables(tmp_path, capsys):
    df = _tidy()
    (tmp_path / "parts").mkdir()
    df.to_parquet(tmp_path / "parts" / "x.parquet", index=False)  # an unfinished run's parts
    assert len(load_results(tmp_path)) == len(df)
    rc = tables.cli([str(tmp_path), "--by", "attack", "--value", "gain", "--clean",
                     "--csv", str(tmp_path / "t.csv")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "SROCC" in out and "jpeg:q50" in out and "clean-image cost" in out
    back = pd.read_csv(tmp_path / "t.csv", index_col=0)
    assert list(back.columns) == tables.PAPER_COLUMNS
