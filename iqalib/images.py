"""Read, validate and save images.

Every image iqalib handles is a float32 tensor ``[B, 3, H, W]``, RGB, in [0, 1]. This module is
the one place that turns files into such tensors (:func:`load_image`) and back
(:func:`save_image`), so every metric, attack and purifier sees the same pixels.

Decoding is done by Pillow. Two cases Pillow cannot do losslessly are routed elsewhere, on
purpose: 16-bit-per-channel colour PNGs (Pillow truncates them to 8 bits) are decoded by OpenCV,
and TIFFs (16-bit colour, float) by tifffile; both are dependencies of packages we already need
(pyiqa, scikit-image).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write_bytes  # re-exported
from .errors import ImageError

#: smallest side we accept: deep metrics pool over 32x downsampled maps
MIN_SIDE = 32
#: default upper bound on width * height (50 megapixels); a keyword of :func:`load_image`
MAX_PIXELS = 50_000_000
#: file suffixes :func:`iqalib.datasets.load_dataset` treats as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_TIFF_SUFFIXES = (".tif", ".tiff")


def _fail(path: Path, what: str, todo: str) -> ImageError:
    return ImageError(f"{path}: {what}. {todo}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise _fail(path, "no such file", "Check the path (relative paths are taken from the "
                    f"current directory, {os.getcwd()}).")
    if path.is_dir():
        raise _fail(path, "is a folder, not an image",
                    "Use iqalib.datasets.load_dataset(folder) for a folder of images.")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty (0 bytes)",
                    "Re-copy or re-download it; an interrupted transfer leaves empty files.")


def _check_size(path: Path, w: int, h: int, max_pixels: int) -> None:
    if min(w, h) < MIN_SIDE:
        raise _fail(path, f"{w}x{h} is smaller than {MIN_SIDE} px on a side",
                    "Use a larger image; the metrics need at least 32x32.")
    if w * h > max_pixels:
        raise _fail(path, f"{w}x{h} = {w * h / 1e6:.1f} megapixels is over the limit of "
                    f"{max_pixels / 1e6:.1f}", "Downscale it first, or pass a larger max_pixels=.")


def _open_pil(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # we enforce our own (lower) pixel limit before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"too large to decode safely ({exc})",
                    "Downscale it first.") from exc
    except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError...
        raise _fail(path, f"not a readable image ({type(exc).__name__}: {exc})",
                    "The file is corrupt or not an image format Pillow reads "
                    "(PNG, JPEG, BMP, TIFF, WebP); re-export or re-download it.") from exc


def probe(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` reading only the header; raise :class:`ImageError` if unusable.

    Cheap (no pixel decoding): used to list a folder. A truncated file passes the probe and
    fails later in :func:`load_image`.
    """
    path = Path(path)
    _check_file(path)
    try:
        im = _open_pil(path)
        w, h = im.size
        im.close()
    except ImageError:
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            raise
        w, h = _tiff_size(path)
    _check_size(path, w, h, max_pixels)
    return w, h


def _tiff_size(path: Path) -> tuple[int, int]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception as exc:
        raise _fail(path, f"not a readable TIFF ({type(exc).__name__}: {exc})",
                    "Re-export it as PNG or an 8/16-bit TIFF.") from exc


# --- decoding to float32 HxWxC in [0,1] (C in 1..4) -------------------------------------------
def _scale_integer(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float32)
    raise TypeError(f"unsupported integer sample type {arr.dtype}")


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        arr = tifffile.imread(path, key=0)
    except Exception as exc:
        raise _fail(path, f"corrupt or unreadable TIFF ({type(exc).__name__}: {exc})",
                    "Re-export it as PNG or an 8/16-bit TIFF.") from exc
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C,H,W) storage
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise _fail(path, "float TIFF contains NaN or Inf values",
                        "Fix or clip the source data; iqalib expects values in [0, 1].")
        return arr
    if arr.dtype in (np.uint8, np.uint16, bool):
        return _scale_integer(arr)
    raise _fail(path, f"TIFF sample type {arr.dtype} is not supported",
                "Save it as 8- or 16-bit unsigned integers or 32-bit float in [0, 1].")


def _decode_png16(path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _fail(path, "corrupt 16-bit PNG", "Re-export or re-download it.")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # OpenCV orders colour channels BGR(A)
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]]
    return _scale_integer(np.ascontiguousarray(arr))


def _decode_pil(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "L"):
        return _scale_integer(np.asarray(im))
    if mode == "1":
        return np.asarray(im).astype(np.float32)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "I":  # how Pillow hands out 16-bit greyscale PNGs
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "F":
        arr = np.asarray(im).astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("float image contains NaN or Inf values")
        return arr
    if mode in ("LA", "La"):
        return _scale_integer(np.asarray(im.convert("LA")))
    if mode in ("RGBA", "RGBa", "P", "PA") or "transparency" in im.info:
        return _scale_integer(np.asarray(im.convert("RGBA")))
    return _scale_integer(np.asarray(im.convert("RGB")))  # CMYK, YCbCr, LAB, HSV, RGBX...


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation tag 1..8 -> upright pixels (the same transforms as ImageOps.exif_transpose)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = np.swapaxes(arr, 0, 1)
    elif orientation == 6:
        arr = np.swapaxes(arr, 0, 1)[:, ::-1]
    elif orientation == 7:
        arr = np.swapaxes(arr, 0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = np.swapaxes(arr, 0, 1)[::-1]
    return np.ascontiguousarray(arr)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """Greyscale -> RGB; alpha composited on white (a transparent pixel reads as white paper)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c in (2, 4):
        color, alpha = arr[..., : c - 1], arr[..., c - 1:]
        arr = color * alpha + (1.0 - alpha)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] != 3:
        raise TypeError(f"{arr.shape[2]} channels")
    return arr


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Read one image file as a ``[1, 3, H, W]`` float32 tensor, RGB, in [0, 1].

    Any format Pillow reads (PNG, JPEG, BMP, TIFF, WebP, ...); the first frame of
    multi-frame files. Conversions, all deterministic:

    - greyscale (1, L, I;16) is repeated to three channels;
    - images with transparency (RGBA, LA, P with a transparent colour) are composited on a
      **white** background: ``rgb * alpha + (1 - alpha)``;
    - 8-bit samples are divided by 255, 16-bit PNG/TIFF samples by 65535 (not clipped to 8 bits;
      16-bit colour PNGs are decoded with OpenCV because Pillow truncates them);
    - float TIFFs are taken as they are and clipped to [0, 1]; NaN/Inf is an error;
    - the EXIF orientation tag is applied, so the tensor is upright as a viewer shows it.

    Raises :class:`iqalib.errors.ImageError` (the message names the file and what to do) for a
    missing, empty, corrupt or truncated file, an image under 32 px on a side, or one over
    ``max_pixels`` (default 50 megapixels).
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        im = _open_pil(path)
    except ImageError:
        if suffix not in _TIFF_SUFFIXES:  # Pillow cannot open float RGB TIFFs: tifffile can
            raise
        im = None
    orientation = 1
    if im is None:
        w, h = _tiff_size(path)
        _check_size(path, w, h, max_pixels)
        arr = _decode_tiff(path)
    else:
        with im:
            w, h = im.size
            _check_size(path, w, h, max_pixels)
            # read the raw sample layout first: getexif() may decode the image and drop .tile
            fmt = im.format
            tile_modes = [str(t[3][0] if isinstance(t[3], tuple) else t[3]) for t in im.tile]
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # noqa: BLE001 (a broken EXIF block is not a broken image)
                orientation = 1
            try:
                if fmt == "TIFF":
                    im.load()  # surface truncation the Pillow way, then decode exactly
                    arr = _decode_tiff(path)
                elif fmt == "PNG" and any(";16" in m for m in tile_modes) and im.mode != "I;16":
                    im.load()
                    arr = _decode_png16(path)
                else:
                    im.load()
                    arr = _decode_pil(im)
            except ImageError:
                raise
            except ValueError as exc:
                raise _fail(path, str(exc), "Fix or clip the source data.") from exc
            except Exception as exc:  # OSError: image file is truncated / broken data stream
                raise _fail(path, f"corrupt or truncated image data ({type(exc).__name__}: "
                            f"{exc})", "Re-copy or re-download the file.") from exc
    try:
        arr = _to_rgb(_apply_orientation(arr, orientation))
    except TypeError as exc:
        raise _fail(path, f"unsupported channel layout ({exc})",
                    "Save it as greyscale, RGB or RGBA.") from exc
    arr = np.clip(arr, 0.0, 1.0, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[3,H,W]`` / ``[1,3,H,W]`` -> ``HxWx3`` uint8; ``[B,3,H,W]`` -> ``BxHxWx3``.

    ``round(clamp(x, 0, 1) * 255)``: an image already on the 1/255 grid comes back bit-exact.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ImageError(f"expected an image [3,H,W] or [B,3,H,W], got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ImageError("image contains NaN or Inf values; nothing was written. "
                         "Check the attack or purifier that produced it.")
    arr = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return arr[0] if arr.shape[0] == 1 else arr


def from_uint8(arr: np.ndarray) -> torch.Tensor:
    """``HxWx3`` (or ``HxW``, or ``BxHxWx3``) uint8 -> ``[B,3,H,W]`` float32 in [0,1]."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ImageError(f"expected HxWx3 or BxHxWx3 uint8, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div(255.0)


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save ``[1,3,H,W]`` or ``[3,H,W]`` in [0,1] as an 8-bit RGB PNG, losslessly and atomically.

    Pixels are ``round(x * 255)`` (so re-loading returns exactly the quantised image an attack
    produced); the file appears complete or not at all (temp file + ``os.replace``), so a killed
    run never leaves a half-written PNG. Returns the path.
    """
    import io

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImageError(f"{path}: save_image writes lossless PNG only; use a .png name.")
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] != 1:
        raise ImageError(f"save_image takes one image, got a batch of {x.shape[0]}; "
                         "save each x[i] to its own file.")
    arr = to_uint8(x)
    buf = io.BytesIO()
    # fixed settings and no metadata: the same pixels always give the same bytes
    Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
    atomic_write_bytes(path, buf.getvalue())
    return path


__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "atomic_write_bytes",
    "from_uint8",
    "load_image",
    "probe",
    "save_image",
    "to_uint8",
]
