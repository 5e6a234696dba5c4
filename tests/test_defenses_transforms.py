"""Transform purifiers against references we did not write: PIL's JPEG codec, scipy.ndimage
filters, torchvision's resize / rotate, numpy's flip."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import iqalib
from iqalib.defenses.base import Compose
from iqalib.errors import UnknownNameError
from iqalib.registry import DEFENSES

TRANSFORMS = ["identity", "resize", "upscale-nearest", "upscale-bilinear", "upscale-bicubic",
              "flip", "rotate", "random-crop", "gaussian-blur", "median", "jpeg", "jpeg-diff",
              "unsharp"]


def make(name, **kw):
    return iqalib.load_defense(name, device="cpu", **kw)


def test_all_registered():
    names = iqalib.list_defenses()
    for n in TRANSFORMS + ["mprnet", "realesrgan", "fcn-filter"]:
        assert n in names, n


@pytest.mark.parametrize("name", TRANSFORMS)
def test_shape_range_determinism(name, photos64):
    kw = {"size": 48} if name == "random-crop" else {}
    d = make(name, **kw)
    x = photos64
    y1, y2 = d(x), d(x)
    assert y1.dtype == x.dtype and y1.shape[:2] == x.shape[:2]
    assert float(y1.min()) >= 0.0 and float(y1.max()) <= 1.0
    assert torch.equal(y1, y2), "same input and seed must give the same output"
    if not d.changes_size:
        assert y1.shape == x.shape
    expected = {"resize": (32, 32), "random-crop": (48, 48)}
    if name in expected:
        assert tuple(y1.shape[-2:]) == expected[name]
    if name != "identity":
        assert d.name == name


@pytest.mark.parametrize("name", TRANSFORMS)
def test_gradients_where_claimed(name, photos64):
    d = make(name)
    x = photos64[:2].clone().requires_grad_(True)
    y = d(x)
    if d.differentiable:
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0
    else:
        assert y.grad_fn is None  # the real codec cuts the graph: BPDA needed


def test_differentiable_flags():
    assert make("jpeg").differentiable is False
    for n in ("jpeg-diff", "median", "flip", "rotate", "unsharp", "gaussian-blur"):
        assert make(n).differentiable is True
    assert make("rotate").stochastic and make("random-crop").stochastic
    assert make("resize").changes_size and make("random-crop").changes_size
    assert not make("upscale-bicubic").changes_size


def _pil_jpeg(arr: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("q", [10, 30, 50, 90, 100])
def test_jpeg_matches_pil(q, photos64):
    # odd sizes exercise the codec's MCU padding
    x = torch.cat([photos64[:, :, :61, :57]])
    y = make("jpeg", quality=q)(x)
    for i in range(x.shape[0]):
        arr = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        ref = _pil_jpeg(arr, q).astype(np.float32) / 255
        got = y[i].permute(1, 2, 0).numpy()
        assert np.abs(got - ref).max() <= 1 / 255 + 1e-6


def test_jpeg_quality_orders_error(photos64):
    errs = [float((make("jpeg", quality=q)(photos64) - photos64).abs().mean()) for q in (10, 50, 95)]
    assert errs[0] > errs[1] > errs[2]


def test_jpeg_diff_close_to_real_codec(photos64):
    real = make("jpeg", quality=50)(photos64)
    approx = make("jpeg-diff", quality=50)(photos64)
    assert float((real - approx).abs().mean()) < 3 / 255
    assert float((photos64 - approx).abs().mean()) > 1 / 255  # it does compress


def test_flip_is_an_involution_and_matches_numpy(photos64):
    f = make("flip")
    assert torch.equal(f(f(photos64)), photos64)
    ref = np.ascontiguousarray(photos64.numpy()[:, :, ::-1, ::-1])
    assert np.array_equal(f(photos64).numpy(), ref)


def _scipy_blur(img: np.ndarray, k: int, sigma: float) -> np.ndarray:
    # torch "reflect" padding is scipy's "mirror"; truncate so the radius is k // 2
    return np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=(k // 2) / sigma)
                     for c in img])


def test_unsharp_matches_scipy(photos64):
    x = photos64.double()
    y = make("unsharp")(photos64.clone())
    for i in range(x.shape[0]):
        img = x[i].numpy()
        ref = np.clip(img + 1.0 * (img - _scipy_blur(img, 5, 1.0)), 0, 1)
        assert np.abs(y[i].double().numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("k", [3, 5, 11])
def test_gaussian_blur_matches_scipy_with_opencv_sigma(k, photos64):
    d = make("gaussian-blur", kernel_size=k)
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    assert d.sigma == pytest.approx(sigma)
    y = d(photos64)
    for i in range(photos64.shape[0]):
        ref = _scipy_blur(photos64[i].double().numpy(), k, sigma)
        assert np.abs(y[i].double().numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("k", [3, 5, 7])
def test_median_matches_scipy(k, photos64):
    y = make("median", kernel_size=k)(photos64)
    for i in range(photos64.shape[0]):
        ref = np.stack([ndimage.median_filter(c, size=k, mode="mirror") for c in photos64[i].numpy()])
        assert np.abs(y[i].numpy() - ref).max() < 1e-6


def test_resize_and_upscale_match_torchvision_tensor_resize(photos64):
    # the authors: transforms.Resize((int(h*s), int(w*s))) on tensors (no antialias in their
    # pinned torchvision), then nn.Upsample(size=<input size>, mode=...)
    from torchvision.transforms.functional import resize

    x = photos64[:, :, :63, :50]
    small = resize(x, [31, 25], antialias=False)
    assert torch.equal(make("resize")(x), small.clamp(0, 1))
    for mode in ("bilinear", "bicubic", "nearest"):
        up = torch.nn.Upsample(size=(63, 50), mode=mode)(small)
        assert torch.equal(make(f"upscale-{mode}")(x), up.clamp(0, 1)), mode
    # the antialiased variant is an option, and it is a different image
    smooth = resize(x, [31, 25], antialias=True)
    assert torch.allclose(make("resize:antialias")(x), smooth.clamp(0, 1), atol=1e-6)
    assert not torch.allclose(smooth, small, atol=1e-3)
    # sizes: int() of the float32 product, as their torch.tensor(shape) * scale
    assert make("resize", scale=0.1)(photos64[:, :, :59, :61]).shape[-2:] == (5, 6)


def test_rotate_default_is_torchvision_random_rotation(photos64):
    import torchvision.transforms.functional as TF
    from scipy.stats import kstest
    from torchvision.transforms import InterpolationMode

    r = make("rotate")
    assert (r.angle, r.sampling, r.interpolation, r.padding) == (5.0, "uniform", "nearest", "zeros")
    # RandomRotation(5): the angle is uniform on [-5, 5]
    angles = r.sample_angles(4000, torch.Generator().manual_seed(0)).numpy()
    assert angles.min() >= -5 and angles.max() <= 5
    assert kstest(angles, "uniform", args=(-5, 10)).pvalue > 0.01
    # nearest, fill 0, same size: torchvision's rotate with the drawn angles
    x = photos64
    angles = r.sample_angles(x.shape[0], torch.Generator().manual_seed(r.seed))
    y = r(x)
    for i in range(x.shape[0]):
        ref = TF.rotate(x[i:i + 1], float(angles[i]), interpolation=InterpolationMode.NEAREST,
                        fill=0)
        assert torch.equal(y[i:i + 1], ref)
    # a fresh generator draws fresh angles (EOT); the default seed repeats
    draws = {tuple(r.sample_angles(8, torch.Generator().manual_seed(s)).tolist()) for s in range(5)}
    assert len(draws) > 1
    assert torch.equal(r(x), y)


def test_rotate_fixed_preset_turns_by_exactly_the_angle():
    r = make("rotate:fixed")
    assert r.sampling == "sign"
    angles = r.sample_angles(64, torch.Generator().manual_seed(1))
    assert set(angles.abs().tolist()) == {5.0} and len(set(angles.tolist())) == 2


def test_jpeg_truncates_like_the_msu_code(photos64):
    from torchvision.io import decode_jpeg, encode_jpeg

    # between two 8-bit levels: theirs is (x * 255).type(torch.uint8), i.e. truncation
    x = (photos64 + 0.7 / 255).clamp(0, 1)
    ref = torch.stack([decode_jpeg(encode_jpeg((img * 255).type(torch.uint8), 50))
                       for img in x]).float() / 255
    assert torch.equal(make("jpeg")(x), ref)
    rounded = make("jpeg:round")(x)
    assert rounded.shape == x.shape and not torch.equal(rounded, ref)
    # images on the 8-bit grid (attacked images are) are the same either way
    assert torch.equal(make("jpeg")(photos64), make("jpeg:round")(photos64))


def test_random_crop_is_a_window_of_the_input(photos64):
    d = make("random-crop", size=40)
    y = d(photos64)
    for i in range(photos64.shape[0]):
        found = any(torch.equal(y[i], photos64[i, :, t:t + 40, l:l + 40])
                    for t in range(25) for l in range(25))
        assert found
    ys = {tuple(d(photos64, generator=torch.Generator().manual_seed(s))[0, 0, 0, :3].tolist())
          for s in range(6)}
    assert len(ys) > 1
    big = make("random-crop", size=300)(photos64)  # larger than the image: whole image
    assert torch.equal(big, photos64)


def test_presets_resolve():
    assert make("jpeg:q30").quality == 30
    assert make("jpeg:q100").quality == 100
    assert make("median:k7").kernel_size == 7
    assert make("gaussian-blur:k11").kernel_size == 11
    assert make("rotate:deg50").angle == 50.0
    assert make("random-crop:s32").size == 32
    assert make("resize:x0.25").scale == 0.25
    assert make("upscale-bilinear:x0.75").scale == 0.75
    assert len([p for p in DEFENSES.entry("jpeg").presets if p.startswith("q")]) == 10
    with pytest.raises(UnknownNameError, match="q30"):
        make("jpeg:q3O")
    with pytest.raises(UnknownNameError, match="median"):
        make("medain")


def test_compose_and_aliases(photos64):
    d = make("flip+unsharp")
    assert isinstance(d, Compose) and d.name == "flip+unsharp"
    ref = make("unsharp")(make("flip")(photos64))
    assert torch.equal(d(photos64), ref)
    assert make("median-blur").name == "median"
    assert make("none")(photos64) is photos64


def test_bad_parameters():
    with pytest.raises(ValueError, match="odd"):
        make("median", kernel_size=4)
    with pytest.raises(ValueError, match="quality"):
        make("jpeg", quality=0)
    with pytest.raises(ValueError, match="scale"):
        make("resize", scale=1.5)
