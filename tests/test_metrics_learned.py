"""effnet-iqa (the offline learned metric) and iqalib.distortions.

References we did not write: scipy.ndimage (Gaussian blur), PIL.ImageEnhance (contrast,
colour), PIL's JPEG codec, scipy.stats (Spearman).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from scipy import ndimage
from scipy.stats import spearmanr

from iqalib.distortions import LEVELS, distort, list_distortions
from iqalib.errors import ImageError, UnknownNameError
from iqalib.metrics import learned
from iqalib.metrics.learned import LearnedIQA
from iqalib.training import data as photos
from iqalib.training import learned_metric as training


# --------------------------------------------------------------------------- distortions
def _u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_distortions_shape_range_identity(photos64):
    for kind in list_distortions():
        for lv in (1, 5):
            y = distort(photos64, kind, lv, seed=3)
            assert y.shape == photos64.shape and y.dtype == photos64.dtype
            assert float(y.min()) >= 0 and float(y.max()) <= 1
            assert not torch.equal(y, photos64), kind
        assert torch.equal(distort(photos64, kind, 0), photos64)


def test_distortions_seeded_and_severity_grows(photos64):
    a = distort(photos64, "noise", 3, seed=7)
    assert torch.equal(a, distort(photos64, "noise", 3, seed=7))
    assert not torch.equal(a, distort(photos64, "noise", 3, seed=8))
    for kind in ("noise", "blur", "jpeg", "contrast", "saturation", "brightness", "pixelate"):
        err = [float((distort(photos64, kind, lv, seed=1) - photos64).pow(2).mean())
               for lv in range(1, 6)]
        assert err == sorted(err), (kind, err)


def test_distortion_unknown_name_suggests(photos64):
    with pytest.raises(UnknownNameError, match="blur"):
        distort(photos64, "blurr", 2)
    with pytest.raises(ValueError):
        distort(photos64, "blur", 6)


def test_noise_std_matches_level():
    x = torch.full((1, 3, 128, 128), 0.5)
    for lv in (1, 3, 5):
        d = distort(x, "noise", lv, seed=0) - x
        assert abs(float(d.std()) - LEVELS["noise"][lv - 1]) < 0.1 * LEVELS["noise"][lv - 1]


def test_blur_matches_scipy(photos64):
    sigma = LEVELS["blur"][2]
    y = distort(photos64[:1], "blur", 3)[0].numpy()
    radius = int(np.ceil(3 * sigma))  # the kernel is 2*ceil(3 sigma)+1 wide
    ref = np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma)
                    for c in photos64[0].numpy()])
    assert np.abs(y - ref).max() < 1e-4


def test_contrast_and_saturation_match_pil(photos64):
    im = Image.fromarray(_u8(photos64[:1]))
    for kind, enh in (("contrast", ImageEnhance.Contrast), ("saturation", ImageEnhance.Color)):
        for lv in (1, 4):
            ref = np.asarray(enh(im).enhance(LEVELS[kind][lv - 1])).astype(int)
            got = _u8(distort(torch.from_numpy(_u8(photos64[:1])).permute(2, 0, 1)[None] / 255.0,
                              kind, lv)).astype(int)
            assert np.abs(ref - got).max() <= 2, (kind, lv)


def test_jpeg_is_the_pil_codec(photos64):
    im = Image.fromarray(_u8(photos64[:1]))
    import io

    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=LEVELS["jpeg"][3])
    ref = np.asarray(Image.open(buf))
    got = _u8(distort(torch.from_numpy(_u8(photos64[:1])).permute(2, 0, 1)[None] / 255.0, "jpeg", 4))
    assert np.array_equal(ref, got)


# --------------------------------------------------------------------------- the metric
@pytest.fixture(scope="module")
def metric():
    return LearnedIQA(weights="auto", train_if_missing=False).eval()


def _heldout(size: int = 224) -> torch.Tensor:
    return training.held_out_crops(size)


def test_sources_load_offline():
    for name in photos.PHOTOS:
        a = photos.load_source(name)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 300
    assert set(training.HELD_OUT) <= set(photos.PHOTOS)
    assert not set(training.HELD_OUT) & set(training.TRAIN_PHOTOS)


def test_shipped_asset_loads_weights_only():
    path = learned.asset_path()
    assert path.exists(), ("iqalib/assets/learned_iqa.pt is missing: "
                           "python -m iqalib.training.learned_metric --out iqalib/assets/learned_iqa.pt")
    assert path.stat().st_size < 5 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"feat_mean", "feat_std", "head.1.weight", "block._project_conv.weight"} <= set(state)
    m = LearnedIQA(weights=None)
    before = m.head[1].weight.clone()
    m.load_trained(path)
    assert not torch.equal(before, m.head[1].weight)


def test_static_padding_matches_the_packages_dynamic_same_padding():
    # reference: efficientnet_lite_pytorch's own trunk, every convolution padding per input
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    ref = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    ref.load_state_dict(torch.load(learned.backbone_weights_path(), weights_only=True))
    ours = learned.build_backbone()
    ref.eval(), ours.eval()
    convs = [m for m in ours.modules() if isinstance(m, torch.nn.Conv2d)]
    dynamic = [m for m in convs if isinstance(m, Conv2dDynamicSamePadding)]
    assert len(convs) == 49 and dynamic and all(tuple(m.stride) == (2, 2) for m in dynamic)
    assert set(ours.state_dict()) - {"_fc.weight", "_fc.bias"} <= set(ref.state_dict())
    g = torch.Generator().manual_seed(0)
    for h, w in ((67, 45), (64, 96), (33, 32)):  # odd and even sizes: stride 2 pads unevenly
        x = torch.rand(2, 3, h, w, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(ours.extract_features(x), ref.extract_features(x),
                                       rtol=0, atol=1e-5)


def test_registry_names(metric):
    import iqalib

    assert "effnet-iqa" in iqalib.list_metrics()
    m = iqalib.load_metric("learned", device="cpu")
    assert isinstance(m, LearnedIQA) and not m.lower_better and m.score_range == (0.0, 100.0)
    assert m.weights_source.endswith("learned_iqa.pt")


def test_shape_any_size_and_batch_independent(metric, photos64):
    s = metric.score(photos64)
    assert s.shape == (3,) and torch.isfinite(s).all()
    with torch.no_grad():
        one = metric(photos64[1:2])
        rect = metric(torch.rand(2, 3, 40, 72, generator=torch.Generator().manual_seed(0)))
    assert rect.shape == (2,)
    assert torch.allclose(one, s[1:2].float(), atol=1e-4)
    assert torch.equal(metric.score(photos64), s)  # deterministic
    with pytest.raises(ImageError, match="at least 32"):
        metric(torch.rand(1, 3, 16, 64))


def test_gradients_finite_nonzero(metric, photos64):
    x = photos64[:2].clone().requires_grad_(True)
    metric(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.abs().flatten(1).sum(1) > 0).all()
    assert all(p.grad is None for p in metric.parameters())  # the metric itself stays frozen


def test_heavier_distortion_scores_lower_on_heldout_photos(metric):
    """Not self-fulfilling: the held-out photos never reached training."""
    x = _heldout()
    for kind in ("blur", "noise", "jpeg"):
        means = [float(metric.score(distort(x, kind, lv, seed=lv)).mean()) for lv in range(6)]
        rho = spearmanr(range(6), means)[0]
        assert rho <= -0.9, (kind, means)
    clean = metric.score(x)
    worst = metric.score(distort(x, "noise", 5, seed=0))
    assert float((clean - worst).mean()) > 20


def test_ifgsm_moves_the_score_far(metric):
    """10-step I-FGSM, sign steps 1/255, L_inf 10/255 (the study's setting), by hand."""
    x = _heldout()[:2]
    eps, alpha = 10 / 255, 1 / 255
    adv = x.clone()
    for _ in range(10):
        adv.requires_grad_(True)
        g, = torch.autograd.grad(metric(adv).sum(), adv)
        adv = (adv.detach() + alpha * g.sign())
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    clean, attacked = metric.score(x), metric.score(adv)
    assert float((adv - x).abs().max()) <= eps + 1e-6
    gain = attacked - clean
    assert (gain > 30).all(), (clean, attacked)


@pytest.mark.slow
@pytest.mark.extended   # ~40 s: make test-extended (notebook 02's quick profile runs it too)
def test_training_runs_and_saves(tmp_path):
    out = tmp_path / "head.pt"
    r = training.train_learned_metric(seed=1, epochs=2, n_crops=1, n_pairs=3, n_test_crops=1,
                                      n_extra_crops=1, out=out, progress=False)
    assert out.exists() and r["asset_bytes"] == out.stat().st_size
    assert r["n_test"] == len(training.HELD_OUT) * 31
    assert np.isfinite([r["srocc"], r["plcc"], r["rmse"]]).all()
    m = LearnedIQA(weights=out)
    assert torch.isfinite(m.score(torch.rand(1, 3, 64, 64))).all()
