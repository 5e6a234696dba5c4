"""The attack cache: every purifier sees exactly the same attacked images.

Attacked images are saved losslessly as 8-bit PNG (attacks quantise to 1/255, so the PNG is
exact) under ``<root>/<key>/<image id>.png``, ``root`` defaulting to ``results_dir()/adv``.
``key`` hashes (metric, attack name, attack params JSON, seed, dataset). Each key folder holds a
``manifest.json`` (metric, attack, attack_params, seed, dataset) and one ``<image id>.json`` per
image (source image id, file, sha256 of the PNG bytes, attack time per image): one small file
per image, so workers of a Dask cluster attacking different chunks of the same key never write
the same file. Every write is atomic (temp file + ``os.replace``); a rerun skips what exists and
re-attacks an image whose PNG is missing or fails its sha256.

>>> cache = AttackCache()
>>> x_adv = cache.get_or_run(attack, "brisque", dataset, ["img0", "img1"], seed=0)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..images import atomic_write_bytes, save_image
from ..paths import results_dir

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, indent=1).encode())


def read_png(path: Path) -> Tensor:
    """An 8-bit RGB PNG as ``[3,H,W]`` float32 in [0,1] (``iqalib.images.load_image``)."""
    from ..images import load_image

    return load_image(path)[0]


def safe_name(image_id: str) -> str:
    """A file name for an image id; ids with other characters get a short hash to stay unique."""
    s = _SAFE.sub("_", str(image_id))
    if s != str(image_id) or not s or s.startswith("."):
        s = f"{s.lstrip('.')}-{hashlib.sha1(str(image_id).encode()).hexdigest()[:8]}"
    return s


def dataset_label(ds, default: str = "images") -> str:
    """The set's name, with its resize when it has one (``samples@128x128``): the cache is
    keyed by it, and the same ids at another size are other images."""
    name = getattr(ds, "name", default)
    size = getattr(ds, "size", None)
    return f"{name}@{size[0]}x{size[1]}" if size else str(name)


def cache_key(metric: str, attack: str, attack_params: str, seed: int, dataset: str) -> str:
    """Hash of everything that determines an attacked image besides the clean image itself."""
    blob = json.dumps([str(metric), str(attack), str(attack_params), int(seed), str(dataset)])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _params_of(attack) -> str:
    fn = getattr(attack, "params_json", None)
    return fn() if callable(fn) else json.dumps({}, sort_keys=True)


class AttackCache:
    """Lossless store of attacked images, keyed by metric x attack x params x seed x dataset.

    ``get_or_run`` attacks only the images not cached yet (in batches of ``batch_size``) and
    returns every requested image read back from its PNG, so a fresh run and a cached rerun give
    bit-identical inputs to the purifiers.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else results_dir() / "adv"

    def key_for(self, attack, metric_name: str, dataset: str, seed: int) -> str:
        return cache_key(metric_name, attack.name, _params_of(attack), seed, dataset)

    def folder(self, key: str) -> Path:
        return self.root / key

    def path(self, key: str, image_id: str) -> Path:
        return self.folder(key) / f"{safe_name(image_id)}.png"

    def _record(self, key: str, image_id: str) -> dict | None:
        meta = self.folder(key) / f"{safe_name(image_id)}.json"
        try:
            return json.loads(meta.read_text())
        except (OSError, ValueError):
            return None

    def lookup(self, key: str, image_id: str) -> dict | None:
        """The image's manifest record if its PNG exists and matches its sha256, else None."""
        rec = self._record(key, image_id)
        png = self.path(key, image_id)
        if rec is None or not png.exists():
            return None
        if hashlib.sha256(png.read_bytes()).hexdigest() != rec.get("sha256"):
            return None  # a damaged file is attacked again
        return rec

    def manifest(self, key: str) -> dict:
        """The key's manifest with an ``images`` mapping of every cached image's record."""
        folder = self.folder(key)
        out = json.loads((folder / "manifest.json").read_text())
        out["images"] = {}
        for meta in sorted(folder.glob("*.json")):
            if meta.name != "manifest.json":
                rec = json.loads(meta.read_text())
                out["images"][rec["image_id"]] = rec
        return out

    def get_or_run(self, attack, metric_name: str, dataset, ids: Sequence[str], seed: int = 0, *,
                   batch_size: int = 4, return_times: bool = False):
        """Attacked images ``[B,3,H,W]`` for ``ids`` of ``dataset`` (an ImageSet with ``.name``
        and ``.batch(ids)``), attacking and caching only the missing ones.

        ``seed`` is recorded in the key; the attack's own seed (in its params) is what it uses.
        With ``return_times=True`` also returns the attack time per image in seconds (``[B]``,
        the time measured when the image was first attacked).
        """
        ds_name = dataset_label(dataset, str(dataset))
        params = _params_of(attack)
        key = cache_key(metric_name, attack.name, params, seed, ds_name)
        folder = self.folder(key)
        if not (folder / "manifest.json").exists():
            atomic_write_json(folder / "manifest.json", {
                "key": key, "metric": str(metric_name), "attack": attack.name,
                "attack_params": params, "seed": int(seed), "dataset": ds_name})
        ids = [str(i) for i in ids]
        missing = [i for i in ids if self.lookup(key, i) is None]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            x = dataset.batch(chunk)
            t0 = time.perf_counter()
            x_adv = attack(x)
            if x_adv.is_cuda:
                torch.cuda.synchronize(x_adv.device)
            per_image = (time.perf_counter() - t0) / len(chunk)
            for image_id, img in zip(chunk, x_adv):
                # PNG first (atomic, lossless: round(x * 255)), record second: a record always
                # points at a complete PNG
                png = save_image(img, self.path(key, image_id))
                atomic_write_json(folder / f"{safe_name(image_id)}.json", {
                    "image_id": image_id, "source_image_id": image_id, "dataset": ds_name,
                    "file": png.name, "sha256": hashlib.sha256(png.read_bytes()).hexdigest(),
                    "time_attack_s": per_image, "shape": list(img.shape)})
        images = torch.stack([read_png(self.path(key, i)) for i in ids])
        if return_times:
            times = torch.tensor([float(self._record(key, i).get("time_attack_s", float("nan")))
                                  for i in ids], dtype=torch.float64)
            return images, times
        return images


__all__ = [
    "AttackCache",
    "atomic_write_bytes",
    "atomic_write_json",
    "cache_key",
    "read_png",
    "safe_name",
]
