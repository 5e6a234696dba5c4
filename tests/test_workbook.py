"""iqalib.workbook: profile settings agree with the registry; collect / skipped read run folders
back exactly; the notebook helpers measure what they say (checked against scipy / skimage)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import peak_signal_noise_ratio

import iqalib
from iqalib import workbook
from iqalib.evaluate.grid import TensorImages, run_grid


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("IQALIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", workbook.PROFILES)
def test_settings_name_only_registered_components(profile):
    s = workbook.settings(profile)
    assert set(s["metrics"]) <= set(iqalib.list_metrics())
    assert set(s["metrics"]) == set(s["attacks"])
    assert set(s["all_attacks"]) <= set(iqalib.list_attacks())
    defenses = set(iqalib.list_defenses(presets=True))
    assert set(s["purifiers"]) <= defenses and set(s["paper_purifiers"]) <= defenses
    assert set(s["compare"]["defenses"]) <= defenses
    assert s["adaptive"]["metric"] in iqalib.list_metrics()
    assert set(s["score_metrics"]) <= set(iqalib.list_metrics())


def test_profiles_follow_the_study():
    smoke, quick, paper = (workbook.settings(p) for p in ("smoke", "quick", "paper"))
    assert smoke["n_images"] == 2 and smoke["dataset"] == "samples"
    assert quick["n_images"] == 8 and quick["dataset"] == "samples"
    assert paper["dataset"] == "nips17" and paper["n_images"] == 1000
    assert paper["metrics"] == ["linearity", "metaiqa", "spaq"]
    assert all(len(set(paper["attacks"][m])) == 10 for m in paper["metrics"])
    assert len(set(paper["paper_purifiers"])) == 16
    assert quick["attacks"]["effnet-iqa"] == workbook.PAPER_ATTACKS
    # the diffusion purifiers are notebook 05's: not in 04's list
    assert not set(quick["purifiers"]) & set(workbook.DIFFUSION_PURIFIERS)


def test_settings_is_a_copy_and_unknown_profile_suggests():
    s = workbook.settings("quick")
    s["metrics"].append("x")
    assert "x" not in workbook.settings("quick")["metrics"]
    with pytest.raises(ValueError, match="Did you mean 'quick'"):
        workbook.settings("quik")


def test_smoke_images_are_small_and_named_apart():
    small, full = workbook.images("smoke"), workbook.images("quick", 2)
    assert small.batch(small.ids).shape == (2, 3, 128, 128)
    assert full.batch(full.ids).shape[-2:] == (299, 299)
    # different names keep the attack cache from handing 128 px images to a 299 px run
    assert small.name != full.name and small.ids == full.ids


# --- collect / skipped --------------------------------------------------------------------------
def test_collect_reads_every_run_folder(results, toy_metric, photos64):
    imgs = TensorImages(photos64[:, :, :48, :48], ["a", "b", "c"], name="toy")
    kw = {"seed": 0, "progress": False, "cache": results / "adv"}
    r1 = run_grid([toy_metric], ["ifgsm"], ["none", "flip"], imgs,
                  out=workbook.run_folder("quick", "03_attacks") / "toy", **kw)
    # two grid calls writing one folder: results.parquet then holds only the second's rows
    out4 = workbook.run_folder("quick", "04_baseline_purifiers")
    r2 = run_grid([toy_metric], ["ifgsm"], ["none", "jpeg"], imgs, out=out4, **kw)
    r3 = run_grid([toy_metric], ["mifgsm"], ["none"], imgs, out=out4, **kw)
    got = workbook.collect("quick")
    want = pd.concat([r1, r2, r3]).drop_duplicates(
        subset=["metric", "attack", "defense", "defense_params", "image_id"])
    assert len(got) == len(want) == 4 * 3  # ifgsm: none, flip, jpeg; mifgsm: none
    key = ["attack", "defense", "image_id"]
    merged = got.merge(want, on=key, suffixes=("", "_want"))
    assert len(merged) == len(want)
    np.testing.assert_allclose(merged.score_def_attacked, merged.score_def_attacked_want)
    assert set(got.run) == {"03_attacks/toy", "04_baseline_purifiers"}
    only4 = workbook.collect("quick", runs=["04_baseline_purifiers"])
    assert set(only4.attack) == {"ifgsm", "mifgsm"} and set(only4.defense) == {"identity", "jpeg"}
    assert workbook.collect("smoke").empty  # another profile's folder is separate


def test_skipped_names_the_make_weights_target(results, toy_metric, photos64):
    imgs = TensorImages(photos64[:2], name="toy")
    df = run_grid([toy_metric], ["ifgsm"], ["none", "mprnet"], imgs, progress=False,
                  out=workbook.run_folder("quick", "04_baseline_purifiers"),
                  cache=results / "adv")
    assert set(df.defense) == {"identity"}
    sk = workbook.skipped("quick")
    assert list(sk.what) == ["mprnet"]
    assert "make weights WEIGHTS=mprnet" in sk.why.iloc[0]


# --- tables -----------------------------------------------------------------------------------
def test_attack_effect_against_direct_computation(results, toy_lower_metric, photos64, tmp_path):
    imgs = TensorImages(photos64, name="toy")
    df = run_grid([toy_lower_metric], ["ifgsm"], ["none", "flip"], imgs, progress=False,
                  out=tmp_path / "run", cache=results / "adv")
    eff = workbook.attack_effect(df)
    assert len(eff) == 1 and eff.n.iloc[0] == 3  # only the undefended rows count
    base = df[df.defense == "identity"]
    lo, hi = toy_lower_metric.score_range
    want = -(base.score_attacked - base.score_clean) / (hi - lo)  # lower is better: sign -1
    assert eff["score_change/range"].iloc[0] == pytest.approx(want.mean())
    assert eff["score_change/range"].iloc[0] > 0  # the attack made the toy metric "better"
    # PSNR of attacked vs clean, from the cached attacked images, by skimage
    from iqalib.attacks.cache import AttackCache

    atk = iqalib.load_attack("ifgsm", toy_lower_metric, seed=0)
    x_adv = AttackCache(results / "adv").get_or_run(atk, toy_lower_metric.name, imgs, imgs.ids, 0)
    ref = [peak_signal_noise_ratio(photos64[i].numpy(), x_adv[i].numpy(), data_range=1.0)
           for i in range(3)]
    assert eff.PSNR.iloc[0] == pytest.approx(np.mean(ref), rel=1e-4)


def test_best_purifiers_direction():
    t = pd.DataFrame({"SROCC": [0.9, 0.5, 0.95, np.nan, 0.7], "Gain": [0.1, 0.3, 0.05, 0.0, 0.2]},
                     index=["none", "a", "b", "c", "d"])
    assert workbook.best_purifiers(t, 2, by="SROCC") == ["b", "d"]
    assert workbook.best_purifiers(t, 2, by="Gain") == ["c", "b"]
    t.index = ["none", "a", "diffpure:t10", "c", "d"]
    assert workbook.best_purifiers(t, 2, by="SROCC", exclude=("none", "diffpure")) == ["d", "a"]


def test_flip_comparison_puts_ours_beside_the_paper():
    t = pd.DataFrame({"Q": [0.5], "Gain": [0.2], "PSNR": [20.0], "SSIM": [0.6], "SROCC": [0.8]},
                     index=["flip"])
    c = workbook.flip_comparison(t)
    assert c.iloc[:, 0].to_dict() == workbook.PAPER_FLIP_ROW
    assert c["ours"].tolist() == [0.5, 0.2, 20.0, 0.6, 0.8]
    two = workbook.flip_comparison({"m": t, "no flip": t.rename(index={"flip": "jpeg"})})
    assert two["ours: m"].tolist() == [0.5, 0.2, 20.0, 0.6, 0.8]
    assert two["ours: no flip"].isna().all()


# --- notebook 01 helpers ------------------------------------------------------------------------
def test_rank_agreement_orients_lower_is_better(toy_metric, toy_lower_metric, photos64):
    imgs = TensorImages(photos64, name="toy")
    s = workbook.metric_scores([toy_metric, toy_lower_metric], imgs)
    assert s.attrs["lower_better"] == ["toy-lower"]
    np.testing.assert_allclose(s["toy-sharpness"], toy_metric.score(photos64).numpy())
    agree = workbook.rank_agreement(s)
    # the two are the same measurement: once oriented, they agree perfectly
    assert agree.loc["toy-sharpness", "toy-lower"] == pytest.approx(1.0)
    raw = spearmanr(s["toy-sharpness"], s["toy-lower"])[0]
    assert raw == pytest.approx(-1.0)


def test_distortion_response_blur_lowers_sharpness(toy_metric, photos64):
    imgs = TensorImages(photos64, name="toy")
    r = workbook.distortion_response([toy_metric], imgs, distortions=("blur", "noise"),
                                     levels=(0, 5))
    assert len(r) == 3 * 2 * 2
    q = r.groupby(["distortion", "level"]).quality.mean()
    assert q[("blur", 5)] < q[("blur", 0)]      # blur removes the Laplacian energy
    assert q[("noise", 5)] > q[("noise", 0)]    # noise adds it (a toy metric, not a good one)
    assert q[("blur", 0)] == pytest.approx(q[("noise", 0)])


def test_calibration_reproduces_pyiqa_brisque():
    c = workbook.calibration(["brisque"], device="cpu")
    assert list(c.image) == ["I03", "I04", "I06", "I08", "I19"]
    # pyiqa's float32 BRISQUE: within 0.2% (0.01 absolute on the near-zero I04)
    assert ((c["abs diff"] <= 0.002 * c["pyiqa published"].abs()) | (c["abs diff"] < 0.01)).all()


def test_metrics_table_matches_weight_availability():
    t = workbook.metrics_table().set_index("metric")
    assert t.loc["brisque", "runs offline"] and t.loc["effnet-iqa", "runs offline"]
    from iqalib import weights

    assert t.loc["linearity", "checkpoints"] == "linearity-p1q2"
    assert bool(t.loc["linearity", "runs offline"]) == weights.is_available("linearity-p1q2")
    w = workbook.weights_table()
    assert set(w.checkpoint) == set(weights.CATALOGUE)


# --- notebook 08 / 09 helpers -------------------------------------------------------------------
def test_clean_fidelity_against_skimage(photos64):
    imgs = TensorImages(photos64, name="toy")
    f = workbook.clean_fidelity(["identity", "flip", "mprnet"], imgs, device="cpu")
    assert f.attrs["skipped"] and f.attrs["skipped"][0].startswith("mprnet")
    ident = f[f.purifier == "identity"]
    assert (ident.PSNR == 150.0).all() and np.allclose(ident.SSIM, 1.0)
    flipped = torch.flip(photos64, dims=(-2, -1))
    ref = [peak_signal_noise_ratio(photos64[i].numpy(), flipped[i].numpy(), data_range=1.0)
           for i in range(3)]
    np.testing.assert_allclose(f[f.purifier == "flip"].PSNR, ref, rtol=1e-5)


def test_adaptive_attack_beats_the_purifier_it_knows(toy_metric, photos64, tmp_path):
    imgs = TensorImages(photos64[:2], name="toy")
    r = workbook.adaptive_comparison(toy_metric, "ifgsm", ["gaussian-blur"], imgs, eot=1,
                                     device="cpu", cache=tmp_path / "adv")
    moved = r.groupby("setting").moved.mean()
    # blur removes much of what the plain attack added; an attack through the blur adapts
    assert moved["adaptive (BPDA/EOT)"] > moved["non-adaptive"]
    assert (r.score_def_clean.groupby(r.setting).mean().diff().dropna().abs() < 1e-12).all()


def test_diffpure_priors_reads_defense_params():
    dp = '{"prior": "ffdnet", "t": 5, "sampler": "ddpm"}'
    comp = '{"parts": [["diffpure", {"prior": "guided-diffusion", "t": 10, "sampler": "ddpm"}], ["unsharp", {}]]}'
    df = pd.DataFrame({"defense": ["diffpure", "diffpure", "diffpure-unsharp", "flip"],
                       "defense_spec": ["diffpure:t5", "diffpure:t5", "diffpure-unsharp:t10", "flip"],
                       "defense_params": [dp, dp, comp, "{}"]})
    p = workbook.diffpure_priors(df).set_index("purifier")
    assert list(p.index) == ["diffpure-unsharp:t10", "diffpure:t5"]
    assert p.loc["diffpure:t5", "prior"] == "ffdnet" and p.loc["diffpure:t5", "rows"] == 2
    assert p.loc["diffpure-unsharp:t10", "prior"] == "guided-diffusion"
    assert p.loc["diffpure-unsharp:t10", "t"] == 10


def test_distortion_quality_puts_the_best_end_at_one(toy_metric, toy_lower_metric, photos64):
    imgs = TensorImages(photos64, name="toy")
    r = workbook.distortion_response([toy_metric, toy_lower_metric], imgs, distortions=("blur",),
                                     levels=(0, 3))
    q = r.pivot_table(index=["image_id", "level"], columns="metric", values="quality")
    # toy-lower is toy-sharpness negated on the range (-1, 0): the same quality once oriented
    np.testing.assert_allclose(q["toy-lower"], q["toy-sharpness"], atol=1e-6)
    assert ((q >= 0) & (q <= 1)).all().all()
