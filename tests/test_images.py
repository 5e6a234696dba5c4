"""iqalib.images: decoding checked against independent readers (Pillow, OpenCV, tifffile)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from iqalib.errors import ImageError
from iqalib.images import from_uint8, load_image, probe, save_image, to_uint8


@pytest.fixture(scope="module")
def rgb():
    """A 48x40 photo crop (not a synthetic pattern: real JPEG/PNG statistics)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:148, 200:240])


def _as_np(x: torch.Tensor) -> np.ndarray:
    assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[:2] == (1, 3)
    return x[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("fmt,ext,kw", [("PNG", "png", {}), ("BMP", "bmp", {}),
                                        ("TIFF", "tif", {}), ("WEBP", "webp", {"lossless": True})])
def test_lossless_formats_exact(tmp_path, rgb, fmt, ext, kw):
    p = tmp_path / f"a.{ext}"
    Image.fromarray(rgb).save(p, format=fmt, **kw)
    x = load_image(p)
    assert x.shape == (1, 3, 48, 40)
    np.testing.assert_array_equal(_as_np(x), rgb.astype(np.float32) / 255)


def test_jpeg_matches_independent_decoder(tmp_path, rgb):
    import cv2

    p = tmp_path / "a.jpg"
    Image.fromarray(rgb).save(p, quality=90)
    ref_pil = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
    ref_cv = cv2.imread(str(p))[..., ::-1].astype(np.float32) / 255  # libjpeg-turbo both
    got = _as_np(load_image(p))
    np.testing.assert_array_equal(got, ref_pil)
    assert np.abs(got - ref_cv).max() <= 2 / 255


def test_greyscale_repeated(tmp_path, rgb):
    g = rgb[..., 1]
    Image.fromarray(g).save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    for c in range(3):
        np.testing.assert_array_equal(x[0, c].numpy(), g.astype(np.float32) / 255)


def test_rgba_composited_on_white_like_pillow(tmp_path, rgb):
    alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    white = Image.new("RGBA", (rgb.shape[1], rgb.shape[0]), (255, 255, 255, 255))
    ref = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba)).convert("RGB"))
    got = _as_np(load_image(tmp_path / "a.png")) * 255
    assert np.abs(got - ref).max() <= 1.0  # Pillow composites in 8-bit integer arithmetic
    # fully transparent pixel -> white, opaque -> itself
    assert np.allclose(got[0, 0], 255) and np.allclose(got[-1, -1], rgb[-1, -1], atol=1e-3)


def test_la_and_palette_with_transparency(tmp_path, rgb):
    la = Image.fromarray(np.dstack([rgb[..., 0], np.full(rgb.shape[:2], 0, np.uint8)]), "LA")
    la.save(tmp_path / "la.png")
    assert torch.all(load_image(tmp_path / "la.png") == 1.0)  # all transparent -> white
    p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    idx0 = np.asarray(p)[0, 0]
    p.save(tmp_path / "p.png", transparency=int(idx0))
    x = load_image(tmp_path / "p.png")
    assert torch.all(x[0, :, 0, 0] == 1.0)
    assert x.shape == (1, 3, 48, 40)


def test_16bit_png_colour_and_grey_not_truncated(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, size=(40, 36, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), a16[..., ::-1])  # OpenCV writes BGR
    got = _as_np(load_image(tmp_path / "c16.png"))
    np.testing.assert_allclose(got, a16.astype(np.float32) / 65535, rtol=0, atol=1e-7)
    rgba16 = rng.integers(0, 65536, size=(40, 36, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), rgba16[..., [2, 1, 0, 3]])
    alpha = rgba16[..., 3:] / 65535
    ref = rgba16[..., :3] / 65535 * alpha + (1 - alpha)  # composited on white, in 16 bits
    np.testing.assert_allclose(_as_np(load_image(tmp_path / "a16.png")), ref, atol=1e-6)
    g16 = rng.integers(0, 65536, size=(40, 36), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    got = load_image(tmp_path / "g16.png")[0, 0].numpy()
    np.testing.assert_allclose(got, g16.astype(np.float32) / 65535, rtol=0, atol=1e-7)


def test_tiff_16bit_and_float(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    a16 = rng.integers(0, 65536, size=(33, 35, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", a16)
    np.testing.assert_allclose(_as_np(load_image(tmp_path / "a.tif")),
                               a16.astype(np.float32) / 65535, atol=1e-7)
    f = rng.random((33, 35, 3), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(_as_np(load_image(tmp_path / "f.tif")), f)
    f[3, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", f)
    with pytest.raises(ImageError, match="NaN"):
        load_image(tmp_path / "nan.tif")
    g = np.full((33, 35), np.inf, np.float32)
    tifffile.imwrite(tmp_path / "inf.tif", g)
    with pytest.raises(ImageError, match="NaN or Inf"):
        load_image(tmp_path / "inf.tif")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path, rgb, orientation):
    im = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    im.save(p, exif=exif)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"), np.float32) / 255
    got = _as_np(load_image(p))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_exif_orientation_jpeg(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "o.jpg"
    Image.fromarray(rgb).save(p, exif=exif, quality=95)
    assert load_image(p).shape == (1, 3, 40, 48)  # rotated: width and height swap


def test_errors_name_the_file_and_what_to_do(tmp_path, rgb):
    with pytest.raises(ImageError, match="no such file") as ei:
        load_image(tmp_path / "missing.png")
    assert "missing.png" in str(ei.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "junk.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ImageError, match="junk.jpg.*not a readable image"):
        load_image(tmp_path / "junk.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_an_error(tmp_path, fmt):
    from skimage import data

    p = tmp_path / f"t.{fmt.lower()}"
    Image.fromarray(data.coffee()).save(p, format=fmt)
    full = p.read_bytes()
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(p)


def test_size_limits(tmp_path, rgb):
    Image.fromarray(rgb[:31]).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="smaller than 32"):
        load_image(tmp_path / "small.png")
    Image.fromarray(rgb[:32, :32]).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").shape == (1, 3, 32, 32)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="megapixels"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    with pytest.raises(ImageError, match="megapixels"):
        probe(tmp_path / "big.png", max_pixels=1000)
    assert probe(tmp_path / "big.png") == (40, 48)


def test_save_roundtrip_is_lossless_and_atomic(tmp_path, rgb):
    x = from_uint8(rgb)
    p = save_image(x, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(p)), rgb)  # Pillow reads what we wrote
    assert torch.equal(load_image(p), x)
    save_image(x[0], tmp_path / "y.png")  # [3,H,W] accepted
    assert (tmp_path / "y.png").read_bytes() == p.read_bytes()  # deterministic bytes
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == ["x.png"]  # no temp files


def test_save_rounds_to_nearest_and_clamps(tmp_path):
    x = torch.full((1, 3, 32, 32), 0.5)
    x[0, 0, 0, 0] = 10 / 255 + 0.49 / 255
    x[0, 0, 0, 1] = 10 / 255 + 0.51 / 255
    x[0, 0, 0, 2] = 1.7
    x[0, 0, 0, 3] = -0.2
    save_image(x, tmp_path / "r.png")
    a = np.asarray(Image.open(tmp_path / "r.png"))
    assert a[0, :4, 0].tolist() == [10, 11, 255, 0]
    assert a[5, 5, 1] == round(0.5 * 255)


def test_save_errors(tmp_path):
    with pytest.raises(ImageError, match=".png"):
        save_image(torch.zeros(1, 3, 32, 32), tmp_path / "x.jpg")
    with pytest.raises(ImageError, match="batch of 2"):
        save_image(torch.zeros(2, 3, 32, 32), tmp_path / "x.png")
    bad = torch.zeros(1, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        save_image(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(ImageError, match="shape"):
        save_image(torch.zeros(1, 1, 32, 32), tmp_path / "x.png")


def test_uint8_helpers_roundtrip():
    a = np.random.default_rng(0).integers(0, 256, size=(2, 33, 34, 3), dtype=np.uint8)
    x = from_uint8(a)
    assert x.shape == (2, 3, 33, 34) and x.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(x), a)
    assert to_uint8(x[:1]).shape == (33, 34, 3)
