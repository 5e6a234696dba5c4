"""A stand-in for the NIPS 2017 development set: photos in a served folder and a
``dev_dataset.csv`` written like the real one, so that ``make data`` runs its real path.

The real CSV (cleverhans v3.1.0) has one row per image: ``ImageId`` (16 hex digits), ``URL``
(a Flickr original, mostly JPEG, of any size), the crop box ``x1, y1, x2, y2`` as fractions of
the width and height, ``TrueLabel`` / ``TargetClass`` (1001-class indexing), the photo's landing
page, its licence URL, the author (non-ASCII names as octal UTF-8 escapes, names with commas
quoted) and the author's profile page. The stand-in keeps every one of those traits. Its photos
are cut from the images that installed packages ship (scikit-image, scikit-learn, matplotlib)
plus one generated pattern, at Flickr-like sizes and aspect ratios; licences and authors are the
photos' own, as their packages state them.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELDS = ["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass",
          "OriginalLandingURL", "License", "Author", "AuthorProfileURL"]

_CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
_PD = "https://creativecommons.org/publicdomain/mark/1.0/"
_BY2 = "https://creativecommons.org/licenses/by/2.0/"
_SKDOC = "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data."


@dataclass(frozen=True)
class _Photo:
    key: str
    dist: str                 # distribution that ships the file (None: generated)
    file: str
    size: tuple[int, int]     # (w, h) of the stand-in "original"
    landing: str
    licence: str
    author: str
    profile: str


_PHOTOS = (
    _Photo("astronaut", "scikit-image", "skimage/data/astronaut.png", (1024, 1024),
           _SKDOC + "astronaut", _PD, "NASA", "https://www.flickr.com/photos/nasacommons/"),
    _Photo("coffee", "scikit-image", "skimage/data/coffee.png", (1200, 800),
           _SKDOC + "coffee", _CC0, "Rachel Michetti", ""),
    _Photo("china", "scikit-learn", "sklearn/datasets/images/china.jpg", (640, 427),
           "https://www.flickr.com/photos/danielbuechele/6061409035/", _BY2, "danielbuechele",
           "https://www.flickr.com/photos/danielbuechele/"),
    _Photo("chelsea", "scikit-image", "skimage/data/chelsea.png", (451, 300),
           _SKDOC + "chelsea", _CC0, "Stefan van der Walt", ""),
    _Photo("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
           (512, 600), "https://matplotlib.org/stable/gallery/index.html", _PD,
           "U.S. Navy, Naval History and Heritage Command", ""),
    _Photo("rocket", "scikit-image", "skimage/data/rocket.jpg", (1280, 854),
           "https://www.flickr.com/photos/spacexphotos/16511594820/", _CC0, "SpaceX",
           "https://www.flickr.com/photos/spacexphotos/"),
    _Photo("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg", (427, 640),
           "https://www.flickr.com/photos/vultilion/6056698931/", _BY2, "vultilion",
           "https://www.flickr.com/photos/vultilion/"),
    # generated here (ours, CC0); its credit carries a non-ASCII name, escaped as in the real CSV
    _Photo("pattern", "", "", (800, 533), "https://github.com/", _CC0, "iqalib répétition", ""),
)


def _escape(text: str) -> str:
    """Non-ASCII characters as octal escapes of their UTF-8 bytes (``\\303\\251``), as the
    real dev_dataset.csv writes them."""
    return "".join(ch if ord(ch) < 128 else "".join(f"\\{b:03o}" for b in ch.encode())
                   for ch in text)


def _source_image(p: _Photo, rng: np.random.Generator):
    from PIL import Image

    from ..package_data import package_file

    if not p.dist:  # a smooth colour field with some texture, so that every metric has work
        h, w = p.size[1], p.size[0]
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * xx + 1), np.cos(5 * yy), np.sin(4 * (xx + yy))], -1)
        arr = (0.5 + 0.35 * base + 0.08 * rng.standard_normal((h, w, 3))).clip(0, 1)
        return Image.fromarray((arr * 255).astype(np.uint8))
    f = package_file(p.dist, p.file)
    if f is None:
        return None
    with Image.open(f) as im:
        im = im.convert("RGB")
        if im.size != p.size:  # a Flickr-like original size and aspect
            im = im.resize(p.size, Image.LANCZOS)
        return im


def _box(w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A crop box in fractions like the real CSV's: a near-square region, sometimes at the
    quarter marks the real file often uses."""
    if w >= h:
        fw = h / w
        x1 = float(rng.choice([0.0, (1 - fw) / 2, 1 - fw])) if rng.random() < 0.7 else \
            float(rng.uniform(0, 1 - fw))
        return round(x1, 12), 0.0, round(x1 + fw, 12), 1.0
    fh = w / h
    y1 = float(rng.choice([0.0, 1 - fh]))
    return 0.0, round(y1, 12), 1.0, round(y1 + fh, 12)


def write_photos(folder: str | Path, *, n: int = 8, seed: int = 0) -> list[dict]:
    """Save up to ``n`` stand-in originals under ``folder`` (JPEG, one PNG) and return one
    record per photo (its file name and CSV fields except the URL)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for p in _PHOTOS:
        if len(out) == n:
            break
        im = _source_image(p, rng)
        if im is None:
            continue
        flickr_id = int(rng.integers(26_000_000_000, 33_000_000_000))
        secret = "".join(rng.choice(list("0123456789abcdef"), 10))
        ext = "png" if p.key == "chelsea" else "jpg"  # Flickr originals are mostly JPEG
        name = f"{flickr_id}_{secret}_o.{ext}"
        buf = io.BytesIO()
        im.save(buf, format="PNG" if ext == "png" else "JPEG", quality=92)
        (folder / name).write_bytes(buf.getvalue())
        x1, y1, x2, y2 = _box(*im.size, rng)
        out.append({"file": name, "ImageId": "".join(rng.choice(list("0123456789abcdef"), 16)),
                    "x1": repr(x1), "y1": repr(y1), "x2": repr(x2), "y2": repr(y2),
                    "TrueLabel": str(int(rng.integers(1, 1001))),
                    "TargetClass": str(int(rng.integers(1, 1001))),
                    "OriginalLandingURL": p.landing, "License": p.licence,
                    "Author": _escape(p.author), "AuthorProfileURL": p.profile})
    return out


def write_csv(path: str | Path, photos: list[dict], base_url: str) -> Path:
    """``dev_dataset.csv`` for ``photos`` whose ``URL`` is ``<base_url>/<file>``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for rec in photos:
        w.writerow({**{k: rec[k] for k in FIELDS if k in rec},
                    "URL": f"{base_url.rstrip('/')}/{rec['file']}"})
    path.write_text(buf.getvalue())
    return path


def write_ready_png(photo_folder: str | Path, rec: dict, dest_folder: str | Path) -> Path:
    """The 299x299 PNG the official procedure makes of ``rec``'s photo, saved as
    ``dest_folder/<ImageId>.png`` (what a mirror holding the Kaggle copy serves)."""
    from ..datasets import _nips_crop, _png_bytes

    data = (Path(photo_folder) / rec["file"]).read_bytes()
    im = _nips_crop(data, *(float(rec[k]) for k in ("x1", "y1", "x2", "y2")))
    dest = Path(dest_folder) / f"{rec['ImageId']}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(_png_bytes(im))
    return dest


__all__ = ["FIELDS", "write_csv", "write_photos", "write_ready_png"]
