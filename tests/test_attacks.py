"""The study's ten attacks on the deterministic toy metric and small real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import iqalib
from iqalib.attacks.base import quantise
from iqalib.errors import MissingWeightsError

OFFLINE = ["ifgsm", "mifgsm", "amifgsm", "korhonen", "madc", "ssah", "zhang-ssim", "advcf"]
LINF = {"ifgsm": 10 / 255, "mifgsm": 10 / 255, "amifgsm": 10 / 255}


pytestmark = pytest.mark.usefixtures("one_thread")


def _score(metric, x):
    with torch.no_grad():
        return metric(x)


@pytest.fixture(scope="module")
def attacked(photos64):
    """Each attack run once on the 3-photo batch (shared by several checks)."""
    from conftest import ToySharpness

    m = ToySharpness()
    return {n: iqalib.load_attack(n, m)(photos64) for n in OFFLINE}


@pytest.mark.parametrize("name", OFFLINE)
def test_raises_score_on_most_images(name, attacked, photos64, toy_metric):
    gain = _score(toy_metric, attacked[name]) - _score(toy_metric, photos64)
    assert (gain > 0).sum() >= 2, f"{name}: score changes {gain.tolist()}"


@pytest.mark.parametrize("name", OFFLINE)
def test_output_on_8bit_grid_in_unit_range(name, attacked):
    xa = attacked[name]
    assert xa.shape == (3, 3, 64, 64) and xa.dtype == torch.float32
    assert xa.min() >= 0 and xa.max() <= 1
    assert torch.equal(xa, torch.round(xa * 255) / 255)


@pytest.mark.parametrize("name", sorted(LINF))
def test_linf_budget(name, attacked, photos64):
    assert (attacked[name] - photos64).abs().max() <= LINF[name] + 1 / 255 + 1e-6


@pytest.mark.parametrize("name", OFFLINE)
def test_same_seed_same_output(name, photos64, toy_metric):
    a = iqalib.load_attack(name, toy_metric, seed=3)
    b = iqalib.load_attack(name, toy_metric, seed=3)
    x = photos64[:1, :, :32, :32]  # a 32 px corner keeps this repeat cheap
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", OFFLINE)
def test_batch_equals_single_runs(name, attacked, photos64, toy_metric):
    atk = iqalib.load_attack(name, toy_metric)
    singles = torch.cat([atk(photos64[i:i + 1]) for i in range(3)])
    # identical up to float noise in batched convolutions: at most a handful of 1/255 flips
    diff = (singles - attacked[name]).abs()
    assert diff.max() <= 1 / 255 + 1e-6 and (diff > 0).float().mean() < 1e-3


@pytest.mark.parametrize("name", OFFLINE)
def test_lower_better_metric(name, attacked, photos64, toy_lower_metric):
    # toy_lower = -toy with the range shifted: the score loss is the same function, so the
    # attack must lower the score by the same moves (mirrors the sign handling exactly)
    xa = iqalib.load_attack(name, toy_lower_metric)(photos64)
    drop = _score(toy_lower_metric, xa) - _score(toy_lower_metric, photos64)
    assert (drop < 0).sum() >= 2
    assert torch.equal(xa, attacked[name])


@pytest.mark.parametrize("name", OFFLINE)
def test_repr_shows_hyperparameters(name, toy_metric):
    atk = iqalib.load_attack(name, toy_metric)
    r = repr(atk)
    for key in atk.hparams:
        assert f"{key}=" in r
    assert "steps=" in r and "seed=" in r
    assert atk.params_json().startswith("{")


@pytest.mark.parametrize("name", OFFLINE)
def test_metric_mode_and_grad_flags_restored(name, photos64):
    from conftest import ToySharpness

    class Scaled(ToySharpness):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(()))
            self.frozen = nn.Parameter(torch.ones(()), requires_grad=False)

        def forward(self, x):
            return super().forward(x) * self.gain * self.frozen

    m = Scaled().train()
    iqalib.load_attack(name, m)(photos64[:1, :, :32, :32])
    assert m.training and m.gain.requires_grad and not m.frozen.requires_grad
    assert m.gain.grad is None  # the attack never trained the metric


def test_unknown_attack_suggests(toy_metric):
    with pytest.raises(iqalib.UnknownNameError, match="ifgsm"):
        iqalib.load_attack("ifgms", toy_metric)


# -- attack-specific checks against references we did not write ------------------------

def test_madc_holds_rmse(photos64, toy_metric):
    eps = 0.001  # tighter than 8 steps of 0.001 stay within: the pull-back must act
    atk = iqalib.load_attack("madc", toy_metric, eps=eps)
    xa = atk.perturb(photos64)  # before 8-bit rounding, where the bound is exact
    rmse = (xa - photos64).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert (rmse <= eps + 1e-6).all() and (rmse > eps / 2).all()
    free = iqalib.load_attack("madc", toy_metric).perturb(photos64)
    assert ((free - photos64).pow(2).mean(dim=(1, 2, 3)).sqrt() > eps).all()


def test_madc_default_rmse_bound(attacked, photos64):
    rmse = (attacked["madc"] - photos64).pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert (rmse <= 10 / 255 + 0.5 / 255).all()


def test_amifgsm_niqe_budget(photos64, toy_metric):
    niqe = lambda x: torch.tensor([5.0, 10.0, 20.0])[: x.shape[0]]
    atk = iqalib.load_attack("amifgsm:niqe", toy_metric, niqe_metric=niqe)
    assert atk.eps == "niqe"
    d = (atk(photos64) - photos64).abs().amax(dim=(1, 2, 3))
    budget = torch.tensor([1 / 5, 1 / 10, 1 / 20])
    assert (d <= budget + 1 / 255).all() and (d > budget - 2 / 255).all()


def test_amifgsm_rejects_unknown_eps_string(toy_metric):
    with pytest.raises(ValueError, match="niqe"):
        iqalib.load_attack("amifgsm", toy_metric, eps="brisque")


def _disc_dilation(m: np.ndarray) -> np.ndarray:
    disc = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1],
                     [0, 1, 1, 1, 0]], bool)
    return ndimage.grey_dilation(m, footprint=disc, mode="reflect")


def test_korhonen_default_map_is_the_benchmarks(photos64):
    # makeSpatialActivityMap: luma of cv2's RGB2YCrCb (0.299, 0.587, 0.114) scaled to the
    # 16..235 range, scipy's ndimage.sobel with its default axis (horizontal, signed), border
    # zeroed, divided by the maximum, dilated with the 5x5 disc, then divided by 255
    from iqalib.attacks.korhonen import spatial_activity_map

    ours = spatial_activity_map(photos64)
    for i in range(3):
        rgb = photos64[i].permute(1, 2, 0).numpy() * 255
        y = (rgb @ np.array([0.299, 0.587, 0.114], np.float32) * 219 + 16) / 255
        sob = ndimage.sobel(y)
        inner = np.zeros_like(sob)
        inner[1:-1, 1:-1] = sob[1:-1, 1:-1]
        ref = _disc_dilation(inner / inner.max()) / 255
        np.testing.assert_allclose(ours[i, 0].numpy(), ref, atol=1e-8)
        assert (ref < 0).any()  # signed: the benchmark's mask reverses some gradients
    flat = spatial_activity_map(torch.full((1, 3, 16, 16), 0.5))
    assert torch.allclose(flat, torch.full_like(flat, 1 / 255))


def test_korhonen_magnitude_map_matches_scipy(photos64):
    from skimage.color import rgb2ycbcr

    from iqalib.attacks.korhonen import spatial_activity_map

    ours = spatial_activity_map(photos64, "magnitude")
    for i in range(3):
        y = rgb2ycbcr(photos64[i].permute(1, 2, 0).double().numpy())[..., 0]
        mag = np.hypot(ndimage.sobel(y, axis=0), ndimage.sobel(y, axis=1))
        inner = np.zeros_like(mag)
        inner[1:-1, 1:-1] = mag[1:-1, 1:-1]
        np.testing.assert_allclose(ours[i, 0].numpy(), _disc_dilation(inner / inner.max()),
                                   atol=2e-5)


def test_korhonen_mask_confines_changes(photos64, toy_metric):
    flat_left = photos64[:1].clone()
    flat_left[..., :, :32] = 128 / 255  # a textureless half: its mask is zero off the edge
    for spec in ("korhonen", "korhonen:magnitude"):
        xa = iqalib.load_attack(spec, toy_metric, lr=0.05)(flat_left)
        assert (xa - flat_left)[..., :, :27].abs().max() == 0, spec
        assert (xa - flat_left)[..., :, 36:].abs().max() > 0, spec


def test_haar_low_band_matches_skimage(photos64):
    from skimage.transform import downscale_local_mean

    from iqalib.attacks.ssah import haar_dwt_ll, low_frequency

    x = photos64[:1, :, :63, :62]  # odd height exercises the padding
    lf = low_frequency(x)[0].numpy()
    ref = downscale_local_mean(np.pad(x[0].numpy(), ((0, 0), (0, 1), (0, 0)), mode="edge"),
                               (1, 2, 2))
    up = ref.repeat(2, axis=1).repeat(2, axis=2)[:, :63, :62]
    np.testing.assert_allclose(lf, up, atol=1e-6)
    # orthonormal Haar: the LL band is 2x the block mean
    np.testing.assert_allclose(haar_dwt_ll(x)[0].numpy(), 2 * ref, atol=1e-6)


def test_ssah_keeps_low_frequencies_better_than_plain_adam(photos64, toy_metric):
    from iqalib.attacks.ssah import low_frequency

    with_lf = iqalib.load_attack("ssah", toy_metric, lr=0.005)(photos64)
    without = iqalib.load_attack("ssah", toy_metric, lr=0.005, lambda_lf=0.0)(photos64)
    err = lambda xa: (low_frequency(xa) - low_frequency(photos64)).abs().mean()
    assert err(with_lf) < err(without)


def test_ssim_distance_matches_skimage(photos64):
    from skimage.metrics import structural_similarity

    from iqalib.attacks.zhang import ssim_distance

    noisy = quantise(photos64 + 0.05 * torch.randn(photos64.shape, generator=torch.Generator().manual_seed(0)))
    ours = 1 - ssim_distance(noisy, photos64)
    for i in range(3):
        ref = structural_similarity(noisy[i].permute(1, 2, 0).numpy(),
                                    photos64[i].permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert abs(float(ours[i]) - ref) < 2e-3


@pytest.mark.parametrize("name", ["zhang-dists", "zhang-lpips", "zhang-lpips-vgg"])
def test_zhang_learned_distances_need_weights(name, toy_metric, tmp_path, monkeypatch):
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path))  # an empty weights folder
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS="):
        iqalib.load_attack(name, toy_metric)


def test_colour_filter_matches_numpy_interp():
    from iqalib.attacks.advcf import colour_filter

    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 3, 8, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    out = colour_filter(x, p)
    for b in range(2):
        for c in range(3):
            knots = np.concatenate([[0], np.cumsum(p[b, c].numpy()) / p[b, c].sum().item()])
            ref = np.interp(x[b, c].numpy(), np.linspace(0, 1, 9), knots)
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=1e-12)
    ident = colour_filter(x, torch.full((2, 3, 64), 1 / 64, dtype=torch.float64))
    torch.testing.assert_close(ident, x)


def test_advcf_keeps_best_iterate(photos64, toy_metric):
    # a learning rate that overshoots: later iterates get worse, the best one is returned
    atk = iqalib.load_attack("advcf", toy_metric, lr=5.0)
    xa = atk(photos64)
    assert (_score(toy_metric, xa) >= _score(toy_metric, photos64) - 0.02).all()


def test_all_study_attacks_registered():
    names = set(iqalib.list_attacks())
    assert {"ifgsm", "mifgsm", "amifgsm", "korhonen", "madc", "ssah", "zhang-dists",
            "zhang-lpips", "zhang-ssim", "advcf", "uap", "cumulative-uap", "generative-uap",
            "adaptive"} <= names


def test_torchvision_checkpoints_points_hub_at_catalogue(tmp_path, monkeypatch):
    from iqalib.attacks import zhang

    src = tmp_path / "vgg16-from-catalogue.pth"
    src.write_bytes(b"weights")
    monkeypatch.setattr(zhang, "weight_file", lambda name: src)
    monkeypatch.setenv("IQALIB_CACHE", str(tmp_path / "cache"))
    before = torch.hub.get_dir()
    with zhang.torchvision_checkpoints("torchvision-vgg16"):
        link = tmp_path / "cache" / "torch-hub" / "checkpoints" / "vgg16-397923af.pth"
        assert torch.hub.get_dir() == str(tmp_path / "cache" / "torch-hub")
        assert link.read_bytes() == b"weights"
    assert torch.hub.get_dir() == before


def test_ssim_distance_matches_kornia(photos64):
    import kornia

    from iqalib.attacks.zhang import ssim_distance

    g = torch.Generator().manual_seed(1)
    noisy = (photos64 + 0.1 * torch.randn(photos64.shape, generator=g)).clamp(0, 1)
    ref = kornia.metrics.ssim(noisy, photos64, 11, padding="valid").mean(dim=(1, 2, 3))
    torch.testing.assert_close(1 - ssim_distance(noisy, photos64), ref, atol=1e-5, rtol=0)
