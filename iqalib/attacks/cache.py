"""The attack cache: every purifier sees exactly the same attacked images.

Attacked images are saved losslessly as 8-bit PNG (attacks quantise to 1/255, so the PNG is
exact) under ``<root>/<key>/<content id>.png``. The folder ``key`` hashes the *fingerprint* of
the attack against its metric (code, settings and weights of both; see
:mod:`iqalib.fingerprint`) and the seed; the file name is the clean image's *content id* (a
hash of its pixels, or of its file's bytes and resize). Nothing is keyed by a name alone: two
image folders that share a name, two tensors with the same ids, or an edited metric never
reuse each other's attacked images.

Each key folder holds a ``manifest.json`` (metric label, attack, attack_params, seed,
fingerprint) and one ``<content id>.json`` per image (image id, sha256 of the PNG bytes, attack
time per image): one small file per image, so workers of a Dask cluster attacking different
chunks of the same key never write the same file. Every write is atomic
(:mod:`iqalib.atomic`); a rerun skips what exists and re-attacks an image whose PNG is missing
or fails its sha256.

Where the cache lives is the caller's choice: the grid puts it under ``results_dir()/adv``
for run folders inside the results directory (notebooks share their attacked images, safely,
since keys are content and fingerprints) and under ``<out>/adv`` otherwise (:func:`default_root`).

>>> cache = AttackCache(root)
>>> x_adv = cache.get_or_run(attack, "brisque", images, ["img0", "img1"], seed=0)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_write_json
from ..fingerprint import code_digest, object_fingerprint, sha
from ..images import save_image
from ..paths import results_dir

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


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
    """The set's table label (``samples@128x128`` for a resized set); see
    :func:`iqalib.imagesets.label_of`."""
    from ..imagesets import label_of

    return label_of(ds, default)


def default_root(out: str | os.PathLike | None = None) -> Path:
    """Where the grid keeps attacked images for the run folder ``out``: the shared
    ``results_dir()/adv`` when ``out`` is inside the results directory (or not given), else
    ``<out>/adv``, so a run outside the project never writes into the checkout."""
    shared = results_dir() / "adv"
    if out is None:
        return shared
    out = Path(out).resolve()
    try:
        out.relative_to(results_dir().resolve())
        return shared
    except ValueError:
        return out / "adv"


def attack_fingerprint(attack, metric_fingerprint: str | None = None) -> str:
    """What determines an attack's output besides the image: the attack's code and settings
    and its metric's code, settings and weights. Computed from the objects (hashing the
    metric's tensors) unless the metric's fingerprint is given."""
    metric = getattr(attack, "metric", None)
    m_fp = metric_fingerprint if metric_fingerprint is not None else (
        object_fingerprint(metric) if metric is not None else "")
    params = attack.params_json() if callable(getattr(attack, "params_json", None)) else ""
    return sha("attack", code_digest(type(attack)), getattr(attack, "name", ""), params, m_fp)


def cache_key(fingerprint: str, seed: int) -> str:
    """The key folder of an attack fingerprint (:func:`attack_fingerprint`) and a seed."""
    return sha("adv", str(fingerprint), int(seed), n=20)


def _params_of(attack) -> str:
    fn = getattr(attack, "params_json", None)
    return fn() if callable(fn) else json.dumps({}, sort_keys=True)


class AttackCache:
    """Lossless store of attacked images, keyed by attack fingerprint x seed x image content.

    ``get_or_run`` attacks only the images not cached yet (in batches of ``batch_size``) and
    returns every requested image read back from its PNG, so a fresh run and a cached rerun give
    bit-identical inputs to the purifiers.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()

    def key_for(self, attack, seed: int = 0, *, fingerprint: str | None = None) -> str:
        return cache_key(fingerprint or attack_fingerprint(attack), seed)

    def folder(self, key: str) -> Path:
        return self.root / key

    def path(self, key: str, content_id: str) -> Path:
        return self.folder(key) / f"{safe_name(content_id)}.png"

    def _record_path(self, key: str, content_id: str) -> Path:
        return self.folder(key) / f"{safe_name(content_id)}.json"

    def _record(self, key: str, content_id: str) -> dict | None:
        try:
            return json.loads(self._record_path(key, content_id).read_text())
        except (OSError, ValueError):
            return None

    def lookup(self, key: str, content_id: str) -> dict | None:
        """The image's record if its PNG exists and matches its sha256, else None."""
        rec = self._record(key, content_id)
        png = self.path(key, content_id)
        if rec is None or not png.exists():
            return None
        if hashlib.sha256(png.read_bytes()).hexdigest() != rec.get("sha256"):
            return None  # a damaged file is attacked again
        return rec

    def manifest(self, key: str) -> dict:
        """The key's manifest with an ``images`` mapping (image id -> record) of every image."""
        folder = self.folder(key)
        out = json.loads((folder / "manifest.json").read_text())
        out["images"] = {}
        for meta in sorted(folder.glob("*.json")):
            if meta.name != "manifest.json":
                rec = json.loads(meta.read_text())
                out["images"][rec["image_id"]] = rec
        return out

    def load(self, key: str, content_ids: Sequence[str]) -> tuple[Tensor, np.ndarray]:
        """Cached images ``[B,3,H,W]`` and their attack times (s per image); KeyError if one
        is missing or damaged."""
        recs = [self.lookup(key, c) for c in content_ids]
        if any(r is None for r in recs):
            missing = [c for c, r in zip(content_ids, recs) if r is None]
            raise KeyError(f"not in the attack cache {key}: {missing[:3]}")
        images = torch.stack([read_png(self.path(key, c)) for c in content_ids])
        times = np.array([float(r.get("time_attack_s", float("nan"))) for r in recs])
        return images, times

    def get_or_run_tensor(self, attack, x: Tensor, content_ids: Sequence[str],
                          ids: Sequence[str] | None = None, *, seed: int = 0,
                          batch_size: int | str = 4, fingerprint: str | None = None,
                          metric_label: str = "", dataset: str = "") -> tuple[Tensor, np.ndarray]:
        """Attacked images for the clean batch ``x`` (whose images have ``content_ids``),
        attacking only those not cached; returns the images (read back from their PNGs) and
        the attack time per image (measured when each was first attacked)."""
        from ..evaluate import run

        ids = [str(i) for i in (ids if ids is not None else content_ids)]
        if len(ids) != len(content_ids) or len(x) != len(ids):
            raise ValueError("x, content_ids and ids must have one entry per image")
        fp = fingerprint or attack_fingerprint(attack)
        key = cache_key(fp, seed)
        folder = self.folder(key)
        if not (folder / "manifest.json").exists():
            atomic_write_json(folder / "manifest.json", {
                "key": key, "fingerprint": fp, "metric": str(metric_label),
                "attack": getattr(attack, "name", type(attack).__name__),
                "attack_params": _params_of(attack), "seed": int(seed)})
        todo = [j for j, c in enumerate(content_ids) if self.lookup(key, c) is None]
        # the same image twice in one call is attacked once
        first: dict[str, int] = {}
        todo = [j for j in todo if first.setdefault(content_ids[j], j) == j]
        if todo:
            done = run.attack(attack, x[todo], batch_size=batch_size)
            for j, img, t in zip(todo, done.images, done.seconds_per_image):
                # PNG first (atomic, lossless: round(x * 255)), record second: a record always
                # points at a complete PNG
                png = save_image(img, self.path(key, content_ids[j]))
                atomic_write_json(self._record_path(key, content_ids[j]), {
                    "image_id": ids[j], "content_id": content_ids[j], "dataset": dataset,
                    "file": png.name, "sha256": hashlib.sha256(png.read_bytes()).hexdigest(),
                    "time_attack_s": float(t), "shape": list(img.shape)})
        return self.load(key, content_ids)

    def get_or_run(self, attack, metric_name: str, dataset, ids: Sequence[str], seed: int = 0, *,
                   batch_size: int | str = 4, return_times: bool = False,
                   fingerprint: str | None = None):
        """Attacked images ``[B,3,H,W]`` for ``ids`` of ``dataset`` (an image set,
        :mod:`iqalib.imagesets`), attacking and caching only the missing ones.

        ``metric_name`` labels the manifest; the key is the attack's ``fingerprint`` (computed
        from the attack and its metric when not given) and ``seed``. With
        ``return_times=True`` also returns the attack time per image in seconds (``[B]``
        float64 tensor, the time measured when the image was first attacked).
        """
        from ..imagesets import content_ids as contents
        from ..imagesets import label_of

        ids = [str(i) for i in ids]
        x = dataset.batch(ids)
        images, times = self.get_or_run_tensor(
            attack, x, contents(dataset, ids), ids, seed=seed, batch_size=batch_size,
            fingerprint=fingerprint, metric_label=metric_name, dataset=label_of(dataset))
        if return_times:
            return images, torch.from_numpy(times)
        return images


__all__ = [
    "AttackCache",
    "attack_fingerprint",
    "cache_key",
    "dataset_label",
    "default_root",
    "read_png",
    "safe_name",
]
