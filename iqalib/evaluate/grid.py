"""The resumable metric x attack x defense grid: one tidy table, locally or on a Dask cluster.

A *unit* is metric x attack x image chunk: the chunk is attacked once (through the
:class:`~iqalib.attacks.cache.AttackCache`, so every purifier sees the same 8-bit PNG inputs),
then every defense purifies the clean and the attacked images. A unit's rows go to one parquet
part file ``<out>/parts/<unit key>.parquet`` written atomically (temp + ``os.replace``); the key
hashes every spec and parameter, the seed, the dataset and the image ids, so a rerun skips
finished units and a run killed at any moment resumes and loses nothing. ``<out>/results.parquet``
(the concatenation) is written at the end; :func:`load_results` reads the parts of an unfinished run.

One row per image x metric x attack x defense (x preset x seed), columns :data:`COLUMNS`.
Gains, SROCC and Q are computed from it (:mod:`iqalib.evaluate.tables`), never stored.
``"none"`` (or ``"identity"``) as a defense gives the undefended baseline rows.

Failures of a unit (e.g. :class:`~iqalib.errors.MissingWeightsError` for a metric or a defense)
are recorded in ``<out>/failures/<unit key>.json`` and summarised at the end instead of
crashing halfway; a rerun retries only what failed. ``strict=True`` re-raises.

``scheduler=None`` runs locally; ``scheduler="tcp://HOST:PORT"`` or a ``distributed.Client``
sends the same units to a Dask cluster (one task per unit; workers build the metric, attack and
defenses from picklable specs and write their own part files; ``out`` and the attack cache must
be on a filesystem the workers share). Local and Dask runs give the same scores.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..attacks.cache import AttackCache, atomic_write_bytes, atomic_write_json, dataset_label
from ..paths import results_dir
from . import measures

#: the tidy table's columns, in order
COLUMNS = [
    "image_id", "dataset", "metric", "attack", "attack_params", "defense", "defense_params",
    "seed", "score_clean", "score_attacked", "score_def_clean", "score_def_attacked", "psnr",
    "ssim", "time_attack_s", "time_defense_s", "git_sha",
    # additive: what tables need without rebuilding the metric, and the specs as given
    "metric_range_lo", "metric_range_hi", "metric_lower_better", "attack_spec", "defense_spec",
]
#: columns that identify a row (everything else is a measurement)
ROW_KEY = ["dataset", "metric", "attack", "attack_params", "defense", "defense_params", "seed",
           "image_id"]
_IDENTITY = {"none", "identity"}


# -- images ----------------------------------------------------------------------
class TensorImages:
    """A tiny in-memory ImageSet (``.name``, ``.ids``, ``.load(id)``, ``.batch(ids)``)."""

    def __init__(self, images: torch.Tensor, ids: Sequence[str] | None = None, name: str = "tensor"):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B,3,H,W], got {tuple(images.shape)}")
        self.images = images.detach().float().cpu()
        self.ids = [str(i) for i in ids] if ids is not None else [
            f"img{i:04d}" for i in range(images.shape[0])]
        if len(self.ids) != images.shape[0] or len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique and one per image")
        self.name = name
        self._index = {k: i for i, k in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, image_id: str) -> torch.Tensor:
        return self.images[self._index[str(image_id)]][None].clone()

    def batch(self, ids: Sequence[str]) -> torch.Tensor:
        return self.images[[self._index[str(i)] for i in ids]].clone()

    def subset(self, ids: Sequence[str]) -> TensorImages:
        return TensorImages(self.batch(ids), ids, self.name)


@dataclass(frozen=True)
class DatasetRef:
    """A data set by name, loaded where the unit runs (``iqalib.datasets.load_dataset``)."""

    name: str
    n: int | None = None
    size: int | None = None

    def resolve(self):
        return _load_dataset_cached(self.name, self.n, self.size)


_DATASETS: dict[tuple, Any] = {}


def _load_dataset_cached(name, n, size):
    if (name, n, size) not in _DATASETS:
        from ..datasets import load_dataset

        _DATASETS[(name, n, size)] = load_dataset(name, n=n, size=size)
    return _DATASETS[(name, n, size)]


# -- components: picklable specs built where the unit runs --------------------------
@dataclass(frozen=True)
class Component:
    """A metric / attack / defense as a registry spec (``"jpeg:q30"``) or a pickled object."""

    kind: str
    label: str                      # spec string, or the object's name
    ident: str                      # what the unit key hashes
    spec: str | None = None
    payload: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, kind: str, item: Any) -> Component:
        if isinstance(item, Component):
            return item
        if isinstance(item, str):
            return cls(kind, item.strip(), f"spec:{item.strip()}", spec=item.strip())
        import cloudpickle

        name = getattr(item, "name", None) or getattr(item, "__name__", None)
        if name is None:
            raise TypeError(f"a {kind} must be a name, 'name:preset' or an object with .name; "
                            f"got {type(item).__name__}")
        params = item.params_json() if hasattr(item, "params_json") and not isinstance(
            item, type) else ""
        qual = f"{type(item).__module__}.{type(item).__qualname__}" if not isinstance(
            item, type) else f"{item.__module__}.{item.__qualname__}"
        return cls(kind, str(name), f"obj:{qual}:{name}:{params}",
                   payload=cloudpickle.dumps(item))


class Identity:
    """The undefended baseline: returns its input (defense ``"none"`` or ``"identity"``)."""

    name = "identity"
    stochastic = False
    differentiable = True
    changes_size = False
    seed = 0

    def __init__(self):
        self.hparams: dict = {}

    def params_json(self) -> str:
        return "{}"

    def to(self, device):
        return self

    def __call__(self, x, **_):
        return x


#: per worker process, the last few metrics and purifiers built (units are ordered metric-major,
#: so a metric is built once per process; purifier networks such as DiffPure load once, not per
#: unit)
_BUILT: dict[str, collections.OrderedDict] = {"metric": collections.OrderedDict(),
                                               "defense": collections.OrderedDict()}
_BUILT_MAX = {"metric": 2, "defense": 24}


def _cached(key: tuple, make):
    store, limit = _BUILT[key[0]], _BUILT_MAX[key[0]]
    if key in store:
        store.move_to_end(key)
        return store[key]
    obj = make()
    store[key] = obj
    while len(store) > limit:
        store.popitem(last=False)
    return obj


def _payload_id(c: Component) -> str:
    # two objects of one class may differ (weights, settings): never reuse one for the other
    return hashlib.sha1(c.payload).hexdigest() if c.payload is not None else ""


def _unpickle(c: Component):
    import cloudpickle

    return cloudpickle.loads(c.payload)


def build_metric(c: Component, device: torch.device):
    def make():
        if c.spec is not None:
            from ..api import load_metric

            return load_metric(c.spec, device=str(device))
        m = _unpickle(c)
        if isinstance(m, type):  # a metric class: build it here, on the worker
            m = m()
        return m.to(device).eval() if hasattr(m, "to") else m

    return _cached(("metric", c.ident, _payload_id(c), str(device)), make)


def build_attack(c: Component, metric, seed: int):
    if c.spec is not None:
        from ..api import load_attack

        return load_attack(c.spec, metric, seed=seed)
    obj = _unpickle(c)
    if isinstance(obj, type):                      # an Attack subclass
        return obj(metric, seed=seed)
    if hasattr(obj, "hparams") and hasattr(obj, "metric"):  # an Attack instance: rebind
        return type(obj)(metric, **{**obj.hparams, "seed": seed})
    if callable(obj):                              # factory(metric, seed=...)
        return obj(metric, seed=seed)
    raise TypeError(f"cannot build attack {c.label!r} from {type(obj).__name__}")


def build_defense(c: Component, device: torch.device, seed: int):
    def make():
        if c.spec is not None:
            if c.spec.lower() in _IDENTITY:
                # the baseline needs no purifier package (keeps Dask workers light)
                return Identity()
            from ..api import load_defense


            return load_defense(c.spec, device=str(device))
        d = _unpickle(c)
        return d.to(device) if hasattr(d, "to") else d

    d = _cached(("defense", c.ident, _payload_id(c), str(device)), make)
    if hasattr(d, "seed"):
        d.seed = seed  # stochastic purifiers draw from a generator seeded with the run's seed
    return d


# -- units -------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    key: str
    metric: Component
    attack: Component
    defenses: tuple[Component, ...]
    ids: tuple[str, ...]
    images: Any
    dataset: str
    seed: int
    batch_size: int
    device: str
    out: str
    cache_root: str
    git_sha: str


def unit_key(metric: Component, attack: Component, defenses: Sequence[Component],
             ids: Sequence[str], dataset: str, seed: int) -> str:
    blob = json.dumps({"metric": metric.ident, "attack": attack.ident,
                       "defenses": [d.ident for d in defenses], "ids": list(ids),
                       "dataset": dataset, "seed": int(seed)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _parts_dir(out) -> Path:
    return Path(out) / "parts"


def _failure_path(out, key: str) -> Path:
    return Path(out) / "failures" / f"{key}.json"


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def _score(metric, x: torch.Tensor, batch_size: int) -> np.ndarray:
    if hasattr(metric, "score"):
        return metric.score(x, batch_size=batch_size).numpy()
    with torch.no_grad():
        return torch.cat([metric(x[i:i + batch_size]).double().cpu()
                          for i in range(0, len(x), batch_size)]).numpy()


def _purify(defense, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Purified batch (on the CPU) and seconds per image."""
    outs, t = [], 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            t0 = time.perf_counter()
            y = defense(x[i:i + batch_size])
            if y.is_cuda:
                torch.cuda.synchronize(y.device)
            t += time.perf_counter() - t0
            outs.append(y.detach().float().cpu())
    sizes = {tuple(o.shape[-2:]) for o in outs}
    if len(sizes) > 1:  # a size-changing purifier may differ per chunk: match the first
        outs = [measures.match_size(o, outs[0]) for o in outs]
    return torch.cat(outs), t / max(len(x), 1)


def _describe(exc: BaseException) -> str:
    from ..errors import MissingWeightsError

    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, MissingWeightsError):
        # the message names its `make weights WEIGHTS=<name>` target: that is what to do next
        target = re.search(r"make weights WEIGHTS=[\w.\-]+", text)
        return f"missing weights: {target.group(0) if target else msg}"
    return f"{type(exc).__name__}: {msg}"


def run_unit(unit: Unit, strict: bool = False) -> dict:
    """Run one unit (or the part of it that failed before) and write its part file.

    Returns ``{"key", "status": "done"|"skipped"|"partial"|"failed", "rows", "failures"}``,
    where ``failures`` is a list of ``(label, message)``.
    """
    from ..device import resolve_device, seed_everything

    part = _parts_dir(unit.out) / f"{unit.key}.parquet"
    fail_path = _failure_path(unit.out, unit.key)
    defenses = list(unit.defenses)
    retry_of_failed = False
    if part.exists():
        if not fail_path.exists():
            return {"key": unit.key, "status": "skipped", "rows": 0, "failures": []}
        # an earlier run wrote the defenses that worked: retry only the failed ones
        failed_before = set(json.loads(fail_path.read_text()).get("defenses", []))
        defenses = [d for d in defenses if d.ident in failed_before]
        retry_of_failed = True

    def fail(label: str, exc: BaseException, defense_idents: list[str]) -> dict:
        if strict:
            raise exc
        record = {"unit": unit.key, "failures": [[label, _describe(exc)]],
                  "defenses": defense_idents, "whole_unit": not retry_of_failed,
                  "traceback": traceback.format_exc()}
        atomic_write_json(fail_path, record)
        return {"key": unit.key, "status": "failed", "rows": 0, "failures": record["failures"]}

    device = resolve_device(unit.device)
    images = unit.images.resolve() if isinstance(unit.images, DatasetRef) else unit.images
    try:
        metric = build_metric(unit.metric, device)
    except Exception as exc:  # noqa: BLE001 - recorded, summarised, re-raised if strict
        return fail(unit.metric.label, exc, [d.ident for d in defenses])
    try:
        seed_everything(unit.seed)
        attack = build_attack(unit.attack, metric, unit.seed)
        x = images.batch(list(unit.ids)).float()
        cache = AttackCache(unit.cache_root)
        x_adv, t_adv = cache.get_or_run(attack, unit.metric.label, images, unit.ids, unit.seed,
                                        batch_size=unit.batch_size, return_times=True)
        s_clean = _score(metric, x, unit.batch_size)
        s_adv = _score(metric, x_adv, unit.batch_size)
    except Exception as exc:  # noqa: BLE001
        return fail(f"{unit.attack.label} on {unit.metric.label}", exc,
                    [d.ident for d in defenses])

    lo, hi = (float(v) for v in getattr(metric, "score_range", (float("nan"), float("nan"))))
    base = {
        "dataset": unit.dataset, "metric": unit.metric.label, "attack": attack.name,
        "attack_params": attack.params_json(), "seed": int(unit.seed), "git_sha": unit.git_sha,
        "metric_range_lo": lo, "metric_range_hi": hi,
        "metric_lower_better": bool(getattr(metric, "lower_better", False)),
        "attack_spec": unit.attack.label,
    }
    frames, failures, failed_idents = [], [], []
    for dc in defenses:
        try:
            defense = build_defense(dc, device, unit.seed)
            seed_everything(unit.seed)
            p_clean, _ = _purify(defense, x, unit.batch_size)
            seed_everything(unit.seed)
            p_adv, t_def = _purify(defense, x_adv, unit.batch_size)
            s_pc = _score(metric, p_clean, unit.batch_size)
            s_pa = _score(metric, p_adv, unit.batch_size)
            p_adv_m = measures.match_size(p_adv, x)
            frames.append(pd.DataFrame({
                **base, "image_id": list(unit.ids), "defense": defense.name,
                "defense_params": defense.params_json(), "defense_spec": dc.label,
                "score_clean": s_clean, "score_attacked": s_adv, "score_def_clean": s_pc,
                "score_def_attacked": s_pa, "psnr": measures.psnr(p_adv_m, x).numpy(),
                "ssim": measures.ssim(p_adv_m, x).numpy(), "time_attack_s": t_adv.numpy(),
                "time_defense_s": t_def,
            }))
        except Exception as exc:
            if strict:
                raise
            failures.append([dc.label, _describe(exc)])
            failed_idents.append(dc.ident)

    rows = 0
    if frames:
        df = pd.concat(frames, ignore_index=True)[COLUMNS]
        rows = len(df)
        name = unit.key if not retry_of_failed else (
            f"{unit.key}+{hashlib.sha256(''.join(d.ident for d in defenses).encode()).hexdigest()[:8]}")
        _atomic_parquet(df, _parts_dir(unit.out) / f"{name}.parquet")
    if failures:
        if not frames and not retry_of_failed:
            # nothing worked: no part file, the whole unit is retried next time
            atomic_write_json(fail_path, {"unit": unit.key, "failures": failures,
                                          "defenses": [d.ident for d in unit.defenses],
                                          "whole_unit": True})
            return {"key": unit.key, "status": "failed", "rows": 0, "failures": failures}
        atomic_write_json(fail_path, {"unit": unit.key, "failures": failures,
                                      "defenses": failed_idents, "whole_unit": False})
        return {"key": unit.key, "status": "partial", "rows": rows, "failures": failures}
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fail_path)
    return {"key": unit.key, "status": "done", "rows": rows, "failures": []}


# -- the grid ----------------------------------------------------------------------
_GIT_SHA: str | None = None


def git_sha() -> str:
    """The checkout's HEAD commit ("unknown" outside a git checkout)."""
    global _GIT_SHA
    if _GIT_SHA is None:
        try:
            _GIT_SHA = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                capture_output=True, text=True, timeout=10, check=True).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            _GIT_SHA = "unknown"
    return _GIT_SHA


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


def _images_arg(images, dataset, n, size):
    if isinstance(images, (str, os.PathLike)):
        ref = DatasetRef(str(images), n, size)
        ds = ref.resolve()
        return ref, list(ds.ids), dataset or dataset_label(ds, str(images))
    if torch.is_tensor(images):
        ds = TensorImages(images, name=dataset or "tensor")
        return ds, list(ds.ids), ds.name
    ids = list(images.ids)[:n] if n else list(images.ids)
    return images, ids, dataset or dataset_label(images, "images")


def plan_units(metrics, attacks, defenses, images, *, seed: int = 0, batch_size: int = 4,
               chunk_size: int = 16, device: str = "auto", out=None, cache=None,
               dataset: str | None = None, n: int | None = None,
               size: int | None = None) -> list[Unit]:
    """The grid's units in a deterministic order (metric, attack, chunk)."""
    images, ids, ds_name = _images_arg(images, dataset, n, size)
    if not ids:
        raise ValueError("no images to run on")
    m_c = [Component.of("metric", m) for m in _as_list(metrics)]
    a_c = [Component.of("attack", a) for a in _as_list(attacks)]
    d_c = [Component.of("defense", d) for d in _as_list(defenses)] or [Component.of("defense", "none")]
    if not m_c or not a_c:
        raise ValueError("give at least one metric and one attack")
    out = str(Path(out) if out is not None else results_dir() / "grid")
    cache_root = str(Path(cache) if cache is not None else results_dir() / "adv")
    sha = git_sha()
    units = []
    for m in m_c:
        for a in a_c:
            for start in range(0, len(ids), chunk_size):
                chunk = tuple(ids[start:start + chunk_size])
                imgs = images.subset(chunk) if isinstance(images, TensorImages) else images
                units.append(Unit(unit_key(m, a, d_c, chunk, ds_name, seed), m, a, tuple(d_c),
                                  chunk, imgs, ds_name, int(seed), int(batch_size), str(device),
                                  out, cache_root, sha))
    return units


def _client(scheduler):
    from distributed import Client

    if isinstance(scheduler, str):
        return Client(scheduler), True
    return scheduler, False


def run_grid(metrics, attacks, defenses, images, *, seed: int = 0, batch_size: int = 4,
             chunk_size: int = 16, device: str = "auto", out=None, cache=None, scheduler=None,
             progress: bool = True, dataset: str | None = None, n: int | None = None,
             size: int | None = None, strict: bool = False) -> pd.DataFrame:
    """Run the metric x attack x defense grid and return the tidy table (:data:`COLUMNS`).

    Parameters
    ----------
    metrics, attacks, defenses:
        Names or ``name:preset`` specs (strings), or objects with ``.name`` (a metric module;
        an Attack subclass, instance or ``factory(metric, seed=)``; a Defense). Strings are what
        a Dask cluster should get: objects are cloudpickled into every unit. ``"none"`` as a
        defense gives the undefended baseline rows.
    images:
        A data set name (``iqalib.datasets.load_dataset(images, n=n, size=size)``), an
        ImageSet-like object (``.name``, ``.ids``, ``.batch(ids)``) or a tensor ``[B,3,H,W]``.
    seed: seeds the attacks, stochastic purifiers and torch/numpy (default 0).
    batch_size: images per forward pass (default 4); chunk_size: images per unit (default 16).
    out: folder of ``parts/``, ``failures/`` and ``results.parquet`` (default results_dir()/grid).
    cache: attack-cache root (default results_dir()/adv).
    scheduler: None (local), ``"tcp://host:port"`` or a ``distributed.Client``.
    strict: re-raise the first failure instead of recording it.

    The returned frame's ``attrs["failures"]`` holds the summary lines of what was skipped.
    """
    units = plan_units(metrics, attacks, defenses, images, seed=seed, batch_size=batch_size,
                       chunk_size=chunk_size, device=device, out=out, cache=cache,
                       dataset=dataset, n=n, size=size)
    out = Path(units[0].out)
    _parts_dir(out).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out / "results.parquet")  # stale until this run finishes

    from tqdm.auto import tqdm

    bar = tqdm(total=len(units), desc="grid", unit="unit", disable=not progress)
    results: list[dict] = []

    def record(res: dict) -> None:
        results.append(res)
        bar.update(1)
        nfail = sum(1 for r in results if r["failures"])
        bar.set_postfix(done=sum(r["status"] != "skipped" for r in results), failed=nfail,
                        refresh=False)

    try:
        if scheduler is None:
            for u in units:
                record(run_unit(u, strict))
        else:
            from distributed import as_completed

            client, own = _client(scheduler)
            try:
                futures = [client.submit(run_unit, u, strict, key=f"iqalib-unit-{u.key}",
                                         pure=False) for u in units]
                for fut in as_completed(futures):
                    record(fut.result())
            finally:
                if own:
                    client.close()
    finally:
        bar.close()

    keys = {u.key for u in units}
    parts = _part_frames(out)
    df = _select(parts, keys)
    summary = summarise_failures(results)
    # the folder's table holds every run made into it, not only this call's units
    _atomic_parquet(_select(parts), out / "results.parquet")
    df.attrs["failures"] = summary
    if summary and progress:
        print("\n".join(summary), file=sys.stderr)
    return df


def summarise_failures(results: Sequence[dict]) -> list[str]:
    """``["skipped: linearity (missing weights: ...) in 3 units", ...]``, one line per cause."""
    counts: collections.Counter = collections.Counter()
    for r in results:
        for label, msg in r.get("failures", []):
            counts[(label, msg)] += 1
    return [f"skipped: {label} ({msg})" + (f" in {k} units" if k > 1 else "")
            for (label, msg), k in counts.items()]


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    df = df.drop_duplicates(subset=ROW_KEY, keep="last")
    return df.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def _part_frames(out) -> dict[str, pd.DataFrame]:
    """Every part file of a run folder, read once, by the unit key its name starts with."""
    return {f.name: pd.read_parquet(f) for f in sorted(_parts_dir(out).glob("*.parquet"))}


def _select(parts: dict[str, pd.DataFrame], keys: set[str] | None = None) -> pd.DataFrame:
    """The tidy table of the parts whose unit key is in ``keys`` (all parts when None)."""
    frames = [f for name, f in parts.items()
              if keys is None or name.split("+")[0].removesuffix(".parquet") in keys]
    return _tidy(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())


def _read_parts(out, keys: set[str] | None = None) -> pd.DataFrame:
    return _select(_part_frames(out), keys)


def load_results(out) -> pd.DataFrame:
    """The tidy table of a run folder: ``results.parquet`` if the run finished, else its parts."""
    out = Path(out)
    if (out / "results.parquet").exists():
        return pd.read_parquet(out / "results.parquet")
    if not _parts_dir(out).exists():
        raise FileNotFoundError(f"no results under {out}: run `python -m iqalib run --out {out}` first")
    return _read_parts(out)


# -- command line --------------------------------------------------------------------
def cli(argv: list[str] | None = None) -> int:
    """``python -m iqalib run --metrics brisque --attacks ifgsm --defenses flip jpeg --images
    samples --n 8 --out data/results/quick [--scheduler tcp://...]``"""
    p = argparse.ArgumentParser(prog="python -m iqalib run", description=cli.__doc__)
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--attacks", nargs="+", required=True)
    p.add_argument("--defenses", nargs="+", default=["none"])
    p.add_argument("--images", default="samples", help="data set name or folder")
    p.add_argument("--n", type=int, default=None, help="number of images")
    p.add_argument("--size", type=int, default=None, help="resize images (pixels)")
    p.add_argument("--out", default=None, help="run folder (default data/results/grid)")
    p.add_argument("--cache", default=None, help="attack cache (default data/results/adv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address tcp://HOST:PORT")
    p.add_argument("--strict", action="store_true", help="stop at the first failure")
    a = p.parse_args(argv)
    df = run_grid(a.metrics, a.attacks, a.defenses, a.images, seed=a.seed, n=a.n, size=a.size,
                  batch_size=a.batch_size, chunk_size=a.chunk_size, device=a.device, out=a.out,
                  cache=a.cache, scheduler=a.scheduler, strict=a.strict)
    from .tables import paper_table

    out = a.out or str(results_dir() / "grid")
    print(f"{len(df)} rows -> {out}")
    if len(df):
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(paper_table(df).round(4).to_string())
    return 0  # what was skipped went to stderr already


__all__ = [
    "COLUMNS",
    "ROW_KEY",
    "Component",
    "DatasetRef",
    "Identity",
    "TensorImages",
    "Unit",
    "cli",
    "git_sha",
    "load_results",
    "plan_units",
    "run_grid",
    "run_unit",
]
