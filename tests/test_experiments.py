"""iqalib.evaluate.experiments: the small experiments measure what they say (scipy, skimage and
pyiqa's published scores as the references)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iqalib.evaluate import experiments, tables
from iqalib.imagesets import TensorImages


@pytest.fixture
def imgs(photos64):
    return TensorImages(photos64, name="toy")


def test_metric_scores_and_their_orientation(toy_metric, toy_lower_metric, imgs, photos64):
    s = experiments.metric_scores([toy_metric, toy_lower_metric], imgs)
    assert list(s.index) == list(imgs.ids) and s.attrs["lower_better"] == ["toy-lower"]
    np.testing.assert_allclose(s["toy-sharpness"], toy_metric(photos64).numpy(), rtol=1e-6)
    np.testing.assert_allclose(s["toy-lower"], -s["toy-sharpness"])
    assert spearmanr(s["toy-sharpness"], s["toy-lower"])[0] == pytest.approx(-1.0)
    # once oriented the two are one measurement
    assert tables.rank_agreement(s).loc["toy-sharpness", "toy-lower"] == pytest.approx(1.0)


def test_metric_scores_names_what_cannot_load(toy_metric, imgs, monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path / "no-weights"))
    s = experiments.metric_scores([toy_metric, "linearity"], imgs)
    assert list(s.columns) == ["toy-sharpness"]
    assert s.attrs["skipped"][0].startswith("linearity: ")


def test_distortion_response_blur_lowers_sharpness(toy_metric, imgs):
    r = experiments.distortion_response([toy_metric], imgs, distortions=("blur", "noise"),
                                        levels=(0, 5))
    assert len(r) == 3 * 2 * 2
    q = r.groupby(["distortion", "level"]).quality.mean()
    assert q[("blur", 5)] < q[("blur", 0)]      # blur removes the Laplacian energy
    assert q[("noise", 5)] > q[("noise", 0)]    # noise adds it (a toy metric, not a good one)
    assert q[("blur", 0)] == pytest.approx(q[("noise", 0)])


def test_distortion_quality_puts_the_best_end_at_one(toy_metric, toy_lower_metric, imgs):
    r = experiments.distortion_response([toy_metric, toy_lower_metric], imgs,
                                        distortions=("blur",), levels=(0, 3))
    q = r.pivot_table(index=["image_id", "level"], columns="metric", values="quality")
    # toy-lower is toy-sharpness negated on the range (-1, 0): the same quality once oriented
    np.testing.assert_allclose(q["toy-lower"], q["toy-sharpness"], atol=1e-6)
    s = r[r.metric == "toy-sharpness"]
    np.testing.assert_allclose(s.quality, s.score)  # range (0, 1), higher is better
    assert ((q >= 0) & (q <= 1)).all().all()


def test_calibration_reproduces_pyiqa_brisque():
    c = experiments.calibration(["brisque"], device="cpu")
    assert list(c.image) == ["I03", "I04", "I06", "I08", "I19"]
    # pyiqa's float32 BRISQUE: within 0.2% (0.01 absolute on the near-zero I04)
    assert ((c["abs diff"] <= 0.002 * c["pyiqa published"].abs()) | (c["abs diff"] < 0.01)).all()


def test_clean_fidelity_against_skimage(imgs, photos64, monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path / "no-weights"))
    f = experiments.clean_fidelity(["identity", "flip", "resize", "mprnet"], imgs, device="cpu")
    assert f.attrs["skipped"] and f.attrs["skipped"][0].startswith("mprnet")
    ident = f[f.purifier == "identity"]
    assert (ident.PSNR == 150.0).all() and np.allclose(ident.SSIM, 1.0)
    flipped = torch.flip(photos64, dims=(-2, -1))
    ref = [peak_signal_noise_ratio(photos64[i].numpy(), flipped[i].numpy(), data_range=1.0)
           for i in range(3)]
    np.testing.assert_allclose(f[f.purifier == "flip"].PSNR, ref, rtol=1e-5)
    ref_ssim = [structural_similarity(photos64[i].numpy(), flipped[i].numpy(), data_range=1.0,
                                      channel_axis=0) for i in range(3)]
    # the SSIM convention is measures.ssim's: it agrees in sign and order with skimage's
    assert np.argsort(f[f.purifier == "flip"].SSIM.to_numpy()).tolist() == np.argsort(ref_ssim).tolist()
    # resize halves and the table compares at the input size: finite, below identity
    r = f[f.purifier == "resize"]
    assert np.isfinite(r.PSNR).all() and (r.PSNR < 150).all() and (r.time_s >= 0).all()


def test_attacked_images_come_from_the_grid_cache(toy_metric, imgs, tmp_path):
    from iqalib.evaluate.grid import run_grid

    df = run_grid([toy_metric], ["ifgsm"], ["none"], imgs, progress=False, out=tmp_path / "run",
                  cache=tmp_path / "adv")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "adv").rglob("*"))
    x_adv = experiments.attacked_images(toy_metric, "ifgsm", imgs, cache=tmp_path / "adv")
    # read back under the grid's key: nothing attacked or written anew
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "adv").rglob("*")) == before
    np.testing.assert_allclose(toy_metric(x_adv).double().numpy(),
                               df.sort_values("image_id").set_index("image_id")
                               .loc[list(imgs.ids), "score_attacked"], rtol=1e-6)
    assert (x_adv * 255 - (x_adv * 255).round()).abs().max() < 1e-4  # the 8-bit PNG cache


def test_adaptive_attack_beats_the_purifier_it_knows(toy_metric, photos64, tmp_path):
    imgs = TensorImages(photos64[:2], name="toy")
    r = experiments.adaptive_comparison(toy_metric, "ifgsm", ["gaussian-blur"], imgs, eot=1,
                                        device="cpu", cache=tmp_path / "adv")
    assert len(r) == 2 * 2
    moved = r.groupby("setting").moved.mean()
    # blur removes much of what the plain attack added; an attack through the blur adapts
    assert moved["adaptive (BPDA/EOT)"] > moved["non-adaptive"]
    # both settings start from the same defended clean score
    assert (r.score_def_clean.groupby(r.setting).mean().diff().dropna().abs() < 1e-12).all()
    lo, hi = toy_metric.score_range
    np.testing.assert_allclose(r.moved, (r.score_def_attacked - r.score_def_clean) / (hi - lo))


def _count_jpeg_calls(monkeypatch) -> list:
    from iqalib.defenses import create_defense

    jpeg_type = type(create_defense("jpeg"))
    calls = []
    original = jpeg_type.purify

    def counting(self, x, generator):
        calls.append(len(x))
        return original(self, x, generator)

    monkeypatch.setattr(jpeg_type, "purify", counting)
    return calls


def test_purified_images_runs_a_shared_prefix_once(photos64, monkeypatch):
    """notebook 05's examples: DiffPure + Unsharp after DiffPure reuses the sampler's output;
    here JPEG + Flip after JPEG, counting JPEG's calls."""
    from iqalib.defenses import create_defense

    calls = _count_jpeg_calls(monkeypatch)
    out = experiments.purified_images(["jpeg", "jpeg+flip"], photos64, device="cpu",
                                      batch_size=len(photos64))
    assert calls == [len(photos64)]
    assert torch.equal(out["jpeg+flip"], create_defense("flip")(out["jpeg"]))
    # the same images as purifying directly
    assert torch.equal(out["jpeg"], create_defense("jpeg")(photos64))


def test_clean_fidelity_runs_a_shared_prefix_once_and_still_times_it(imgs, photos64, monkeypatch):
    """notebook 08: DiffPure + Unsharp after DiffPure on the clean images reuses the sampler's
    output, and its time still includes the prefix's (here JPEG + Flip after JPEG)."""
    calls = _count_jpeg_calls(monkeypatch)
    fid = experiments.clean_fidelity(["jpeg", "jpeg+flip"], imgs, device="cpu",
                                     batch_size=len(photos64))
    assert calls == [len(photos64)]
    t = fid.groupby("purifier")["time_s"].first()
    assert t["jpeg+flip"] >= t["jpeg"] > 0
