"""Measures against references we did not write: scipy, skimage, sklearn."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from iqalib.evaluate import measures as M


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def test_gain_and_abs_gain_norm():
    clean = torch.tensor([2.0, -4.0, 10.0, 0.0, 0.0])
    pur = np.array([3.0, -1.0, 10.0, 0.0, 5.0])
    g = M.gain(clean, pur)
    np.testing.assert_allclose(g[:3], [0.5, 0.75, 0.0])
    assert g[3] == 0.0 and np.isinf(g[4])  # undefined where f(clean) = 0: inf, not a crash
    a = M.abs_gain_norm(clean, pur, (-10.0, 10.0))
    np.testing.assert_allclose(a, [0.05, 0.15, 0.0, 0.0, 0.25])
    with pytest.raises(ValueError):
        M.abs_gain_norm(clean, pur, (1.0, 1.0))
    with pytest.raises(ValueError):
        M.gain([1.0, 2.0], [1.0])


def test_correlations_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=40)
    b = a + rng.normal(scale=0.7, size=40)
    assert M.srocc(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)
    assert M.plcc(torch.from_numpy(a), b) == pytest.approx(pearsonr(a, b)[0], abs=1e-12)
    # non-finite pairs are dropped, not propagated
    a2, b2 = np.append(a, np.nan), np.append(b, 3.0)
    assert M.srocc(a2, b2) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)


def test_correlations_undefined_give_nan_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning leaks out
        assert np.isnan(M.srocc([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert np.isnan(M.plcc([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
        assert np.isnan(M.srocc([1.0], [2.0]))
        assert np.isnan(M.srocc([], []))


def test_psnr_matches_skimage_and_caps_only_identical_images(photos64):
    x = photos64.double()
    y = _noisy(x, 0.05)
    ours = M.psnr(y, x)
    for i in range(x.shape[0]):
        ref = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-9)
    same = M.psnr(x, x.clone())
    assert torch.all(same == M.PSNR_CAP)  # identical images: the authors' 150, not skimage's inf
    # anywhere else the value is skimage's, even above the cap (as in the authors' code)
    tiny = x.clone()
    tiny[0, 0, 0, 0] += 1e-9
    ref = peak_signal_noise_ratio(x[0].numpy(), tiny[0].numpy(), data_range=1.0)
    assert ref > M.PSNR_CAP and float(M.psnr(tiny, x)[0]) == pytest.approx(ref, rel=1e-9)


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_ssim_default_is_skimage_defaults_on_photos(photos128):
    # the authors' call (test.py): structural_similarity(img1, img2, channel_axis=2, data_range=1)
    # with every other setting at skimage's default (7x7 uniform window, sample covariance)
    x = photos128.double()
    for y in (_noisy(x, 0.08, seed=3), torch.flip(x, dims=(2, 3)),
              (x * 255).floor() / 255):
        ours = M.ssim(y, x)
        for i in range(x.shape[0]):
            ref = structural_similarity(_hwc(x[i]), _hwc(y[i]), channel_axis=2, data_range=1)
            assert float(ours[i]) == pytest.approx(ref, abs=1e-9)
    # the float32 tensors the authors feed (ToTensor of 8-bit images) agree to float32 rounding
    y = _noisy(x, 0.08, seed=3).float()
    ref = structural_similarity(_hwc(x[0].float()), _hwc(y[0]), channel_axis=2, data_range=1)
    assert float(M.ssim(y, x.float())[0]) == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(M.ssim(x, x), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        M.ssim(x, x[..., :32])
    with pytest.raises(ValueError, match="window"):
        M.ssim(x, x, window="box")


def test_ssim_gaussian_option_matches_skimage_rgb_and_gray(photos64):
    # Wang et al.'s window (Gaussian 11, sigma 1.5, population covariance, valid border) in
    # float64 on both sides: only the summation order differs, so 1e-6 is generous.
    x = photos64.double()
    y = _noisy(x, 0.08, seed=3)
    ours = M.ssim(y, x, window="gaussian")
    for i in range(x.shape[0]):
        ref = structural_similarity(
            _hwc(x[i]), _hwc(y[i]), data_range=1.0,
            channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-6)
    # grayscale: the gray image replicated to 3 channels has the gray image's SSIM
    gx, gy = x[:, :1].expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)
    ref = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), data_range=1.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(M.ssim(gy, gx, window="gaussian")[0]) == pytest.approx(ref, abs=1e-6)
    # float32 inputs agree with float64
    assert torch.allclose(M.ssim(y.float(), x.float(), window="gaussian"), ours, atol=1e-5)


def test_q_score():
    assert M.q_score(1.0, M.PSNR_CAP) == pytest.approx((1 + 150 / 80) / 2)
    np.testing.assert_allclose(M.q_score(np.array([0.5, 0.2]), np.array([40.0, 8.0])),
                               [(0.5 + 0.5) / 2, (0.2 + 0.1) / 2])
    assert torch.is_tensor(M.q_score(torch.tensor([0.5]), torch.tensor([40.0])))


def test_robustness_score_matches_minmaxscaler_formula():
    from sklearn.preprocessing import MinMaxScaler

    rng = np.random.default_rng(2)
    clean = rng.uniform(20, 80, size=12)
    attacked = clean + rng.uniform(0, 15, size=12)
    sc = MinMaxScaler().fit(clean.reshape(-1, 1))
    s = sc.transform(clean.reshape(-1, 1)).ravel()
    s2 = sc.transform(attacked.reshape(-1, 1)).ravel()
    ref = np.log10(np.maximum(1 - s, s) / (np.abs(s - s2) + 1e-6))
    np.testing.assert_allclose(M.robustness_score(clean, attacked), ref, rtol=1e-12)
    assert M.ROBUSTNESS_EPS == 1e-6
    # with a fixed range; unchanged scores hit the eps ceiling
    r = M.robustness_score([30.0, 60.0], [30.0, 70.0], score_range=(20.0, 80.0))
    assert r[0] == pytest.approx(np.log10(max(1 - 1 / 6, 1 / 6) / 1e-6))
    assert r[1] == pytest.approx(np.log10((2 / 3) / (10 / 60 + 1e-6)))
    assert r[0] > r[1]  # a bigger change means a less robust metric


def test_clean_cost_and_match_size(photos64):
    cost = M.clean_cost([1.0, 2.0, 4.0], [1.0, 2.5, 3.0], (0.0, 10.0))
    assert cost["gain"] == pytest.approx((0 + 0.25 + 0.25) / 3)
    assert cost["abs_gain_norm"] == pytest.approx((0 + 0.05 + 0.1) / 3)
    assert cost["srocc"] == pytest.approx(spearmanr([1, 2, 4], [1, 2.5, 3])[0])
    assert M.match_size(photos64, photos64) is photos64


def test_match_size_is_torchvision_tensor_resize_without_antialias(photos64):
    # the authors resize a purifier's output back with torchvision.transforms.Resize((h, w)) on
    # tensors; in the torchvision versions they pinned (0.14 / 0.15) that is bilinear without
    # antialiasing
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    for small in (photos64[:, :, :32, :40], torch.nn.functional.interpolate(photos64, scale_factor=4)):
        ref = resize(small, [64, 64], interpolation=InterpolationMode.BILINEAR, antialias=False)
        torch.testing.assert_close(M.match_size(small, photos64), ref.clamp(0, 1), atol=1e-6, rtol=0)
