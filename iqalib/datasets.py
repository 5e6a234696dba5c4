"""Image sets: the offline sample set, the NIPS 2017 development set, any folder of images.

- ``load_dataset("samples")``: about two dozen 299x299 photos cut from images that installed
  packages ship (scikit-image, scikit-learn, matplotlib, pyiqa), built on first use into
  ``data/samples`` (:func:`build_samples`). Works with no internet.
- ``load_dataset("nips17")``: the 1000-image NIPS 2017 adversarial competition development
  set (the paper's data), fetched by ``make data`` (:func:`fetch_nips17`).
- ``load_dataset("/some/folder")``: every readable image in a folder.

An :class:`ImageSet` yields ``[1,3,H,W]`` tensors in [0,1] per id, or same-size batches.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import paths
from .errors import DownloadError, ImageError, IqalibError, UnknownNameError
from .images import IMAGE_SUFFIXES, atomic_write_bytes, load_image, probe

#: side of the NIPS'17 images, which the sample set imitates
SIDE = 299
_NIPS17_CSV_PATH = ("cleverhans_v3.1.0/examples/nips17_adversarial_competition/dataset/"
                    "dev_dataset.csv")
#: dev_dataset.csv pinned to a cleverhans commit (reproducible), then the same path on master
NIPS17_CSV_URLS = (
    "https://raw.githubusercontent.com/cleverhans-lab/cleverhans/"
    "72d9c1fc49c846d841ad08bbe0585b31f6550b26/" + _NIPS17_CSV_PATH,
    "https://raw.githubusercontent.com/cleverhans-lab/cleverhans/master/" + _NIPS17_CSV_PATH,
)
NIPS17_CSV_URL = NIPS17_CSV_URLS[0]
#: where Flickr redirects a deleted photo (a placeholder PNG served with status 200)
FLICKR_PLACEHOLDERS = ("photo_unavailable",)
KNOWN = ("samples", "nips17")


class MissingDataError(IqalibError, FileNotFoundError):
    """A data set that has not been fetched yet; the message names the command that fetches it."""


# --- ImageSet ----------------------------------------------------------------------------------
def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (antialiased bicubic) so the image covers ``size``, then centre-crop to it."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[..., top:top + th, left:left + tw].clamp(0, 1).contiguous()


class ImageSet:
    """An ordered, named collection of images on disk.

    Implements the image-set protocol (:class:`iqalib.imagesets.Images`): ``.name``,
    ``.label`` (``name@HxW`` when resized), ``.ids`` (list of str), ``len()``,
    ``load(id) -> [1,3,H,W]``, ``batch(ids) -> [B,3,H,W]``, ``subset(ids)`` (a list of ids, or
    an int n: the first n), ``content_id(id)`` (sha256 of the file's bytes, with the resize) and
    ``fingerprint()``; also ``.root``, ``.manifest`` (DataFrame, one row per image, first column
    ``image_id``) and iteration over ``(image_id, [1,3,H,W])``. With ``size=`` every image is
    resized to cover it and centre-cropped (so mixed sizes batch); without it a batch of mixed
    sizes is an error. ``skipped`` lists ``(file, reason)`` of unreadable files.
    """

    def __init__(self, name: str, root: Path, files: dict[str, Path], manifest: pd.DataFrame,
                 *, size: int | tuple[int, int] | None = None,
                 skipped: Sequence[tuple[str, str]] = ()):
        self.name = name
        self.root = Path(root)
        self._files = dict(files)
        self.ids: list[str] = list(files)
        self.manifest = manifest.reset_index(drop=True)
        if isinstance(size, int):
            size = (size, size)
        self.size: tuple[int, int] | None = tuple(size) if size is not None else None
        self.skipped = list(skipped)
        self._digests: dict[tuple, str] = {}  # (file, size, mtime) -> sha256 of its bytes

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        s = f", size={self.size}" if self.size else ""
        return f"ImageSet({self.name!r}, {len(self)} images, root={str(self.root)!r}{s})"

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for image_id in self.ids:
            yield image_id, self.load(image_id)

    def path(self, image_id: str) -> Path:
        """The file behind ``image_id``."""
        try:
            return self._files[image_id]
        except KeyError:
            close = difflib.get_close_matches(str(image_id), self.ids, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(f"no image {image_id!r} in {self.name!r}.{hint}") from None

    def load(self, image_id: str) -> torch.Tensor:
        """``[1,3,H,W]`` float32 in [0,1] (fitted to ``size`` when the set has one)."""
        x = load_image(self.path(image_id))
        return _fit(x, self.size) if self.size else x

    def batch(self, ids: Sequence[str] | None = None) -> torch.Tensor:
        """``[B,3,H,W]`` of ``ids`` (default: all). Same-size images only unless ``size=``."""
        ids = self.ids if ids is None else list(ids)
        if not ids:
            raise ImageError(f"{self.name}: batch() got no ids")
        xs = [self.load(i) for i in ids]
        shapes = {tuple(x.shape[-2:]) for x in xs}
        if len(shapes) > 1:
            sizes = ", ".join(f"{i}: {x.shape[-1]}x{x.shape[-2]}" for i, x in list(zip(ids, xs))[:6])
            raise ImageError(f"{self.name}: images of different sizes cannot be batched ({sizes}"
                             f"{', ...' if len(ids) > 6 else ''}). Open the set with a size, "
                             f"e.g. load_dataset({str(self.root)!r}, size={SIDE}), or batch "
                             "images one by one.")
        return torch.cat(xs, dim=0)

    @property
    def label(self) -> str:
        """The table's ``dataset`` label: the name, with ``@HxW`` when the set is resized
        (the same ids at another size are other images)."""
        if self.size and "@" not in self.name:
            return f"{self.name}@{self.size[0]}x{self.size[1]}"
        return self.name

    def subset(self, ids: Sequence[str] | int) -> ImageSet:
        """The images ``ids`` (in that order), or the first ``ids`` images when it is an int."""
        from .imagesets import subset_ids

        keep = subset_ids(self.ids, ids, self.name)
        man = self.manifest[self.manifest["image_id"].isin(keep)]
        sub = ImageSet(self.name, self.root, {i: self._files[i] for i in keep}, man,
                       size=self.size, skipped=self.skipped)
        sub._digests = self._digests
        return sub

    def content_id(self, image_id: str) -> str:
        """sha256 of the image file's bytes, with the resize (``@HxW``) when the set has one;
        cached per file by its size and modification time."""
        path = self.path(image_id)
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        digest = self._digests.get(key)
        if digest is None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self._digests[key] = digest
        size = f"@{self.size[0]}x{self.size[1]}" if self.size else ""
        return hashlib.sha256(f"file:{digest}{size}".encode()).hexdigest()[:24]

    def fingerprint(self) -> str:
        """One digest of every image's content, in order."""
        h = hashlib.sha256()
        for i in self.ids:
            h.update(self.content_id(i).encode())
        return h.hexdigest()[:24]


# --- folders -----------------------------------------------------------------------------------
def _read_manifest(p: Path) -> pd.DataFrame | None:
    if not p.is_file():
        return None
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    if "image_id" not in df.columns and "ImageId" in df.columns:
        df.insert(0, "image_id", df["ImageId"])
    return df if "image_id" in df.columns else None


def _open_folder(root: Path, name: str | None = None,
                 size: int | tuple[int, int] | None = None) -> ImageSet:
    if not root.is_dir():
        raise MissingDataError(f"{root}: no such folder.")
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    stems = [p.stem for p in files]
    dup = {s for s in stems if stems.count(s) > 1}
    good: dict[str, Path] = {}
    rows, skipped = [], []
    for p in files:
        try:
            w, h = probe(p)
        except ImageError as exc:
            skipped.append((p.name, str(exc).split(": ", 1)[-1]))
            continue
        image_id = p.name if p.stem in dup else p.stem  # a.png + a.jpg: keep both, by name
        good[image_id] = p
        rows.append({"image_id": image_id, "file": p.name, "width": w, "height": h})
    if skipped:
        lines = "; ".join(f"{f} ({why})" for f, why in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(f"{len(skipped)} of {len(files)} files in {root} could not be read and are "
                      f"left out: {lines}{more}. See ImageSet.skipped.", stacklevel=3)
    if not good:
        raise ImageError(f"{root}: no readable images (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)}; {len(skipped)} unreadable).")
    man = pd.DataFrame(rows)
    extra = _read_manifest(root / "manifest.csv")
    if extra is not None:  # keep licences / labels from a manifest that came with the folder
        extra = extra.drop(columns=[c for c in ("file", "width", "height") if c in extra.columns])
        man = man.merge(extra, on="image_id", how="left")
    return ImageSet(name or root.name, root, good, man, size=size, skipped=skipped)


def load_dataset(name_or_path: str | os.PathLike = "samples", *, n: int | None = None,
                 size: int | tuple[int, int] | None = None) -> ImageSet:
    """Open an image set: ``"samples"`` (built offline on first use), ``"nips17"`` (after
    ``make data``) or a folder path. ``n`` keeps the first n images; ``size`` (int or (h, w))
    resizes + centre-crops every image so that mixed sizes batch.
    """
    key = str(name_or_path)
    if key == "samples":
        root = build_samples()
        ds = _open_folder(root, "samples", size)
    elif key == "nips17":
        root = paths.data_dir() / "nips17"
        man = _read_manifest(root / "manifest.csv")
        if man is None:
            raise MissingDataError(
                f"the NIPS 2017 development set is not in {root}. Fetch it with `make data` "
                "(= `python -m iqalib data fetch nips17`; needs the internet, about 1000 Flickr "
                "downloads), or from a Kaggle copy: `python -m iqalib data fetch nips17 --from "
                "DIR`. Offline, use load_dataset('samples').")
        ok = man[man.get("status", "ok").eq("ok")] if "status" in man else man
        files = {i: root / f"{i}.png" for i in ok["image_id"] if (root / f"{i}.png").is_file()}
        if not files:
            raise MissingDataError(f"{root}/manifest.csv lists no downloaded images; re-run "
                                   "`make data`.")
        ds = ImageSet("nips17", root, files, ok[ok["image_id"].isin(list(files))], size=size)
    else:
        root = Path(name_or_path).expanduser()
        if not root.exists():
            close = difflib.get_close_matches(key, KNOWN, n=1, cutoff=0.5)
            if close or (os.sep not in key and "/" not in key):
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UnknownNameError(f"unknown data set {key!r} and no such folder.{hint} "
                                       f"Known: {', '.join(KNOWN)}, or a folder of images.")
            raise MissingDataError(f"{root}: no such folder.")
        ds = _open_folder(root, None, size)
    if n is not None:
        if n > len(ds):
            warnings.warn(f"{ds.name}: asked for {n} images, it has {len(ds)}", stacklevel=2)
        ds = ds.subset(n)
    return ds


# --- the offline sample set --------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    key: str            # id prefix
    package: str        # distribution that ships the file
    file: str           # path inside the package (or inside site-packages for pyiqa extras)
    licence: str
    two_crops: bool     # wide photos: a left and a right square instead of the centre one


_SK = "public domain (scikit-image data docstring: no known copyright restrictions)"
_SOURCES = (
    _Source("astronaut", "scikit-image", "skimage/data/astronaut.png",
            "public domain (NASA; scikit-image data docstring)", False),
    _Source("chelsea", "scikit-image", "skimage/data/chelsea.png",
            "CC0 (Stefan van der Walt; scikit-image data docstring)", True),
    _Source("coffee", "scikit-image", "skimage/data/coffee.png",
            "CC0 (Rachel Michetti; scikit-image data docstring)", True),
    _Source("rocket", "scikit-image", "skimage/data/rocket.jpg",
            "public domain (SpaceX; scikit-image data docstring)", True),
    # a stereo pair of one scene: one centre crop each, else four near-duplicates
    _Source("motorcycle_left", "scikit-image", "skimage/data/motorcycle_left.png",
            "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014): cite on use", False),
    _Source("motorcycle_right", "scikit-image", "skimage/data/motorcycle_right.png",
            "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014): cite on use", False),
    _Source("china", "scikit-learn", "sklearn/datasets/images/china.jpg",
            "CC-BY-2.0, danielbuechele on Flickr (scikit-learn images/README.txt)", True),
    _Source("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg",
            "CC-BY-2.0, vultilion on Flickr (scikit-learn images/README.txt)", True),
    _Source("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
            "public domain (US Navy photograph; matplotlib ships no separate notice)", False),
)
_PYIQA_LICENCE = ("research use only (pyiqa test/calibration image; terms of the source "
                  "IQA data set)")


def _package_file(package: str, rel: str) -> Path | None:
    """A file inside an installed distribution, found without importing it."""
    top = rel.split("/", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:
        p = Path(next(iter(spec.submodule_search_locations))).parent / rel
        if p.is_file():
            return p
    try:  # files installed next to the package (pyiqa's ResultsCalibra/, tests/)
        for f in importlib.metadata.files(package) or []:
            if str(f).replace("\\", "/") == rel:
                p = Path(f.locate())
                return p if p.is_file() else None
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def _pyiqa_sources() -> list[_Source]:
    try:
        files = importlib.metadata.files("pyiqa") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out = []
    for f in sorted(str(f).replace("\\", "/") for f in files):
        if (f.startswith("ResultsCalibra/ref_dir/") and f.lower().endswith(".bmp")) or \
                (f.startswith("tests/test_efficiency_img_dir/") and f.lower().endswith(".jpg")):
            stem = Path(f).stem
            out.append(_Source(f"pyiqa_{stem}", "pyiqa", f, _PYIQA_LICENCE, False))
    return out


def _crop_boxes(w: int, h: int, two: bool) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Largest centred square; or, for wide/tall photos marked two_crops, both end squares."""
    s = min(w, h)
    if two and w > h:
        top = (h - s) // 2
        return [("_l", (0, top, s, top + s)), ("_r", (w - s, top, w, top + s))]
    if two and h > w:
        left = (w - s) // 2
        return [("_t", (left, 0, left + s, s)), ("_b", (left, h - s, left + s, h))]
    left, top = (w - s) // 2, (h - s) // 2
    return [("", (left, top, left + s, top + s))]


def _png_bytes(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)  # fixed settings, no metadata: same bytes
    return buf.getvalue()


@contextlib.contextmanager
def _dir_lock(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)  # other processes (parallel tests) wait, then reuse
        except ImportError:
            pass
        yield


def _samples_complete(root: Path) -> bool:
    man = _read_manifest(root / "manifest.csv")
    return man is not None and len(man) > 0 and all((root / f).is_file() for f in man["file"])


def build_samples(root: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Build the offline sample set (about 23 images, 299x299 PNG) and return its folder.

    Sources are read from the installed packages, never copied into the repository:
    scikit-image (astronaut, chelsea, coffee, rocket, motorcycle_left/right), scikit-learn
    (china, flower), matplotlib (grace_hopper) and pyiqa (the 5 reference BMPs of
    ``ResultsCalibra/ref_dir`` and the JPEGs of ``tests/test_efficiency_img_dir`` when
    installed). Each is cut like the NIPS'17 images: the largest centred square (two end
    squares for the wide single-subject photos), resized to 299x299 with Lanczos, saved as PNG.
    ``manifest.csv`` records image_id, file, source package + version + file, licence, crop box
    and the PNG's sha256. Deterministic: the same installed packages give the same bytes.
    Built once (under a lock, so concurrent callers wait); ``force=True`` rebuilds.
    """
    from PIL import Image

    root = Path(root) if root is not None else paths.data_dir() / "samples"
    if not force and _samples_complete(root):
        return root
    with _dir_lock(root):
        if not force and _samples_complete(root):  # built by another process meanwhile
            return root
        rows, missing = [], []
        for src in (*_SOURCES, *_pyiqa_sources()):
            f = _package_file(src.package, src.file)
            if f is None:
                missing.append(f"{src.package}:{src.file}")
                continue
            try:
                version = importlib.metadata.version(src.package)
            except importlib.metadata.PackageNotFoundError:
                version = ""
            with Image.open(f) as im:
                im = im.convert("RGB")
                for suffix, box in _crop_boxes(*im.size, src.two_crops):
                    out = im.crop(box).resize((SIDE, SIDE), Image.LANCZOS)
                    data = _png_bytes(out)
                    image_id = src.key + suffix
                    atomic_write_bytes(root / f"{image_id}.png", data)
                    rows.append({"image_id": image_id, "file": f"{image_id}.png",
                                 "source_package": src.package, "source_version": version,
                                 "source_file": src.file, "licence": src.licence,
                                 "crop_left": box[0], "crop_top": box[1], "crop_right": box[2],
                                 "crop_bottom": box[3], "width": SIDE, "height": SIDE,
                                 "sha256": hashlib.sha256(data).hexdigest()})
        if not rows:
            raise ImageError("cannot build the sample set: none of its source images is "
                             f"installed ({', '.join(missing)}). Install scikit-image.")
        if missing:
            warnings.warn(f"sample set built without {', '.join(missing)} (not installed)",
                          stacklevel=2)
        buf = io.StringIO()
        pd.DataFrame(rows).to_csv(buf, index=False, lineterminator="\n")
        atomic_write_bytes(root / "manifest.csv", buf.getvalue().encode())  # written last
    return root


def cli_samples(argv: list[str]) -> int:
    """``python -m iqalib samples [--force] [--root DIR]``: build the sample set, summarise it."""
    ap = argparse.ArgumentParser(prog="python -m iqalib samples",
                                 description="build the offline sample set (data/samples)")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    ap.add_argument("--root", default=None, help="output folder (default data/samples)")
    args = ap.parse_args(argv)
    root = build_samples(args.root, force=args.force)
    man = pd.read_csv(root / "manifest.csv", dtype=str)
    print(f"{len(man)} images, {SIDE}x{SIDE} PNG, in {root}")
    for (pkg, lic), grp in man.groupby(["source_package", "licence"], sort=False):
        print(f"  {len(grp):>2}  {pkg:<13} {lic}")
    return 0


# --- NIPS 2017 development set -----------------------------------------------------------------
def _nips_crop(data: bytes, x1: float, y1: float, x2: float, y2: float):
    """The official procedure (cleverhans download_images.py): RGB, crop by the fractional box
    with int() truncation, resize to 299x299 with Lanczos."""
    from PIL import Image

    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    im = im.crop((int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h)))
    return im.resize((SIDE, SIDE), Image.LANCZOS)


def _unescape(text: str) -> str:
    """The CSV writes non-ASCII author names as octal UTF-8 escapes (``Verb\\303\\244nde``)."""
    if "\\" not in text:
        return text
    try:
        import codecs

        return codecs.escape_decode(text.encode("ascii"))[0].decode("utf-8")
    except (UnicodeError, ValueError):
        return text


def _read_nips_csv(data: bytes) -> list[dict]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    rows = list(reader)
    need = {"ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel"}
    if not need <= set(reader.fieldnames or ()):
        raise IqalibError(f"not a NIPS 2017 dev_dataset.csv: need columns {sorted(need)}")
    return rows


def _nips_png(data: bytes, image_id: str) -> bytes:
    """Bytes of a ready-made NIPS'17 PNG (a mirror's or Kaggle's copy), checked to decode to
    299x299; kept as they are when they are plain 8-bit RGB, else re-encoded as such."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every byte: a truncated file fails here
            if im.size != (SIDE, SIDE):
                raise ImageError(f"{image_id}.png is {im.size[0]}x{im.size[1]}, not {SIDE}x{SIDE}")
            if im.format == "PNG" and im.mode == "RGB":
                return data
            return _png_bytes(im.convert("RGB"))
    except ImageError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageError(f"{image_id}.png cannot be decoded "
                         f"({type(exc).__name__}: {exc})") from exc


def _complete_png(path: Path) -> bool:
    """Whether a saved image decodes completely to 299x299 (a kept file must)."""
    try:
        _nips_png(path.read_bytes(), path.stem)
        return True
    except (ImageError, OSError):
        return False


def _read_csv_source(source, csv_url, timeout) -> tuple[bytes, list[Path], str]:
    """The CSV's bytes, folders holding ready-made PNGs, and where the CSV came from."""
    from .download import fetch_bytes, mirror_urls

    if source is not None:
        src = Path(source).expanduser()
        if src.is_dir():
            cands = [src / "dev_dataset.csv", src / "images.csv"]
            csv_path = next((c for c in cands if c.is_file()), None)
            if csv_path is None:
                raise MissingDataError(f"{src}: no dev_dataset.csv or images.csv in it")
            return csv_path.read_bytes(), [src / "images", src], str(csv_path)
        if src.is_file():
            return src.read_bytes(), [], str(src)
        raise MissingDataError(f"{src}: no such file or folder")
    urls = [csv_url] if csv_url else [*mirror_urls("nips17/dev_dataset.csv"), *NIPS17_CSV_URLS]
    errs = []
    for u in urls:
        try:
            return fetch_bytes(u, timeout=timeout), [], u
        except DownloadError as exc:
            errs.append(str(exc))
    raise DownloadError("cannot download dev_dataset.csv (" + "; ".join(errs) + "). Without the "
                        "internet use a mirror (IQALIB_MIRROR) or a Kaggle copy: --from DIR.")


def fetch_nips17(root: str | os.PathLike | None = None, *, limit: int | None = None,
                 source: str | os.PathLike | None = None, csv_url: str | None = None,
                 workers: int = 8, timeout: float = 30.0, progress: bool = True) -> pd.DataFrame:
    """Fetch the NIPS 2017 adversarial competition development set into ``root``.

    Reads ``dev_dataset.csv`` from ``source`` if given, else from ``csv_url`` if given, else
    from the ``IQALIB_MIRROR`` mirrors (``<mirror>/nips17/dev_dataset.csv``) and then the
    cleverhans v3.1.0 copy. Each image comes from the first place that has it: a ready-made
    ``<ImageId>.png`` in ``source``'s folder (``images/`` or beside the CSV: Kaggle's layout) or
    on a mirror (``<mirror>/nips17/images/<ImageId>.png``), used as is after checking that it
    decodes to 299x299; else the row's URL (Flickr), cropped and resized as the official script
    does (:func:`_nips_crop`), saved as ``<ImageId>.png``.

    Resumable: an image saved by an earlier run is kept when it decodes completely and the
    earlier manifest row (if any) names the same URL and crop box; otherwise it is fetched
    again. Every write is atomic, so a killed run leaves whole images only. Each image fails on
    its own: its status in ``manifest.csv`` says why, and the others are unaffected. Returns the
    manifest; raises :class:`~iqalib.errors.IqalibError` when the CSV lists no images.
    """
    from .download import NotOnServer, fetch_bytes, mirror_urls

    root = Path(root) if root is not None else paths.data_dir() / "nips17"
    root.mkdir(parents=True, exist_ok=True)
    csv_data, local_dirs, csv_from = _read_csv_source(source, csv_url, timeout)
    rows = _read_nips_csv(csv_data)
    atomic_write_bytes(root / "dev_dataset.csv", csv_data)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise IqalibError(f"{csv_from} lists no images (limit={limit}): nothing to fetch.")
    previous = _read_manifest(root / "manifest.csv")
    before = {} if previous is None else {r["image_id"]: r for _, r in previous.iterrows()}
    box_keys = ("x1", "y1", "x2", "y2")

    def one(row: dict) -> dict:
        image_id = row["ImageId"].strip()
        out = root / f"{image_id}.png"
        box = ",".join(row.get(k, "").strip() for k in box_keys)
        rec = {"image_id": image_id, "ImageId": image_id, "URL": row.get("URL", ""),
               "box": box, "author": _unescape(row.get("Author", "")),
               "licence": row.get("License", ""), "TrueLabel": row.get("TrueLabel", ""),
               "TargetClass": row.get("TargetClass", ""), "fetched_from": "", "sha256": "",
               "status": ""}
        try:
            old = before.get(image_id)
            same_row = old is None or (old.get("URL", "") == rec["URL"]
                                       and old.get("box", box) == box)
            if out.is_file() and same_row and _complete_png(out):
                rec["fetched_from"] = (old.get("fetched_from", "") if old is not None
                                       else "") or "kept from an earlier run"
            else:
                rec["fetched_from"] = _fetch_one(image_id, row, out)
            rec["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
            rec["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 (one bad URL must not stop the other 999)
            rec["status"] = f"failed: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        return rec

    def _fetch_one(image_id: str, row: dict, out: Path) -> str:
        """Save the image from the first source that has a good copy; return that source."""
        problems = []
        ready = [str(d / f"{image_id}.png") for d in local_dirs
                 if (d / f"{image_id}.png").is_file()]
        for where in ready + mirror_urls(f"nips17/images/{image_id}.png"):
            try:
                data = fetch_bytes(where, timeout=timeout)
                atomic_write_bytes(out, _nips_png(data, image_id))
                return where
            except NotOnServer:
                continue  # a mirror may hold only the CSV: the row's URL comes next
            except (DownloadError, ImageError) as exc:  # a bad copy costs only this source
                problems.append(f"{where}: {exc}")
        try:
            data = fetch_bytes(row["URL"], timeout=timeout,
                               reject_redirects_to=FLICKR_PLACEHOLDERS)
            im = _nips_crop(data, *(float(row[k]) for k in box_keys))
        except Exception as exc:
            if not problems:
                raise
            raise ImageError("; ".join([*problems, f"{row['URL']}: {exc}"])) from exc
        atomic_write_bytes(out, _png_bytes(im))
        return row["URL"]

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        recs = list(tqdm(pool.map(one, rows), total=len(rows), desc="nips17",
                         disable=not progress))
    man = pd.DataFrame(recs)
    buf = io.StringIO()
    man.to_csv(buf, index=False, lineterminator="\n")
    atomic_write_bytes(root / "manifest.csv", buf.getvalue().encode())
    failed = man[man["status"] != "ok"]
    print(f"nips17: {len(man) - len(failed)}/{len(man)} images in {root} (CSV from {csv_from})")
    for _, r in failed.iterrows():
        print(f"  {r['ImageId']}: {r['status']} ({r['URL']})", file=sys.stderr)
    if len(failed):
        print(f"{len(failed)} failed (listed in {root / 'manifest.csv'}); re-run to retry them, "
              "or fetch the missing ones from a Kaggle copy (--from DIR) or a mirror "
              "(IQALIB_MIRROR).", file=sys.stderr)
    return man


def cli(argv: list[str]) -> int:
    """``python -m iqalib data fetch nips17 [--root DIR] [--limit N] [--from SRC]``.

    Exit status 0 when every listed image is present, 1 when any failed (or none was fetched),
    2 on bad arguments."""
    ap = argparse.ArgumentParser(prog="python -m iqalib data", description="fetch a data set")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pf = sub.add_parser("fetch", help="download a data set")
    pf.add_argument("dataset", choices=["nips17"])
    pf.add_argument("--root", default=None, help="output folder (default data/nips17)")
    pf.add_argument("--limit", type=int, default=None, help="only the first N images")
    pf.add_argument("--from", dest="source", default=None,
                    help="a local dev_dataset.csv, or a folder (Kaggle copy) with the CSV + PNGs")
    pf.add_argument("--csv-url", default=None,
                    help="the CSV's URL (default: the IQALIB_MIRROR mirrors, then cleverhans)")
    pf.add_argument("--workers", type=int, default=8)
    pf.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print(f"data fetch: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"data fetch: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        man = fetch_nips17(args.root, limit=args.limit, source=args.source,
                           csv_url=args.csv_url, workers=args.workers,
                           progress=not args.no_progress)
    except IqalibError as exc:
        print(f"data fetch {args.dataset}: {exc}", file=sys.stderr)
        return 1
    n_ok = int((man["status"] == "ok").sum())
    if n_ok == 0:
        print(f"data fetch {args.dataset}: no image could be fetched (see above).",
              file=sys.stderr)
    return 0 if n_ok == len(man) else 1


__all__ = [
    "NIPS17_CSV_URL",
    "NIPS17_CSV_URLS",
    "SIDE",
    "ImageSet",
    "MissingDataError",
    "build_samples",
    "cli",
    "cli_samples",
    "fetch_nips17",
    "load_dataset",
]
