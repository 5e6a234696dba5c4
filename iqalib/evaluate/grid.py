"""The resumable metric x attack x defense grid: tasks and their scheduling, locally or on Dask.

The grid is a small graph of *tasks* over image chunks (``chunk_size`` images each):

- ``clean`` (chunk x purifier group): every purifier of the group purifies the clean chunk
  once, and every metric scores it (and the clean chunk). purify(clean) depends on neither the
  metric nor the attack, so it is computed once per purifier x image x seed, not once per
  attack. Written to ``<out>/stage/clean/``.
- ``attack`` (metric x attack x chunk): attacks the chunk into the lossless attack cache
  (:class:`~iqalib.attacks.cache.AttackCache`), so every purifier sees the same 8-bit inputs.
- ``rows`` (metric x attack x chunk x purifier group): purifies the attacked chunk, scores it,
  measures PSNR / SSIM against the clean chunk, joins the clean side and writes the rows to
  ``<out>/parts/<task key>.parquet`` (:mod:`iqalib.evaluate.store`). Depends on the two above,
  but computes whatever it finds missing itself, so no result depends on the scheduling.

Purifier *groups* size the tasks so a cluster stays busy: the light purifiers (transforms,
JPEG) share one group; each purifier with a network (registry tag ``network``: DiffPure,
MPRNet, ...) gets its own, together with the compositions that start with it
(``diffpure:t10`` and ``diffpure-unsharp:t10``): in one task a composition reuses the output
of its prefix (same input, same seed) instead of rerunning the sampler (:class:`PrefixMemo`).

Keys are content, never names: a task key hashes the *fingerprints* of its components (code,
settings, weights: :mod:`iqalib.fingerprint`), the images' content ids, the ids and dataset
label, the seed and the batch size (a stochastic purifier's draws depend on the chunking). A
rerun skips finished tasks; a run killed at any moment resumes and loses nothing; editing a
component or an image recomputes exactly what it touches. (Run folders written before
content keys are not recognised as done: they are recomputed.)

What fails is recorded in ``<out>/failures/<task key>.json`` and summarised, never fatal
(``strict=True`` re-raises): a component that cannot be built (missing weights: the message
names ``make weights WEIGHTS=<name>``) costs its rows and is retried on the next run; a bad
image (unreadable file, NaN pixels) or a non-finite score (BRISQUE on a flat image) costs that
image only, and is reported by name.

``scheduler=None`` runs locally; ``scheduler="tcp://HOST:PORT"`` or a ``distributed.Client``
sends the same tasks to a Dask cluster (workers build components from picklable specs, limit
torch's threads to their own, and write their own files; ``out`` and the attack cache must be
on a filesystem the workers share). Local and Dask runs give the same scores.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..attacks.cache import AttackCache, default_root
from ..errors import ImageError, IqalibError
from ..fingerprint import code_digest, object_fingerprint, package_version, sha
from ..imagesets import TensorImages, content_ids, label_of
from ..metrics.base import check_images
from ..paths import results_dir
from . import measures, run, store
from .run import PrefixMemo
from .store import COLUMNS, ROW_KEY, load_results

#: the fingerprint every spelling of the undefended baseline shares
BASELINE = "baseline"
#: registry tags of purifiers that get a task group of their own (they dominate the time)
HEAVY_TAGS = ("network", "diffusion")


class GridError(IqalibError, ValueError):
    """A grid that cannot start (bad argument, unwritable folder, no images); says what to do."""


# -- images ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetRef:
    """A data set by name, loaded where a task runs (``iqalib.datasets.load_dataset``)."""

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


@dataclass(frozen=True)
class Chunk:
    """The images of one task: ids and their content ids, in order."""

    ids: tuple[str, ...]
    contents: tuple[str, ...]

    def digest(self) -> str:
        return sha("chunk", *self.ids, *self.contents)


@dataclass
class Loaded:
    """A chunk's readable images: ``x`` ``[B,3,H,W]``, their ``ids`` and ``contents``, and the
    ``bad`` ones as ``(image id, reason)``."""

    x: torch.Tensor
    ids: list[str]
    contents: list[str]
    bad: list[tuple[str, str]]


def load_chunk(images, chunk: Chunk) -> Loaded:
    """Load a chunk image by image: an unreadable or out-of-contract image is left out and
    reported; its chunk mates go on."""
    xs, ids, contents, bad = [], [], [], []
    current = getattr(images, "content_id", None)
    for image_id, content in zip(chunk.ids, chunk.contents):
        try:
            if callable(current) and current(image_id) != content:
                raise ImageError(f"image {image_id!r} changed on disk after the run was planned; "
                                 "run again")
            x = images.load(image_id)
            check_images(x, f"image {image_id!r}")
        except Exception as exc:  # noqa: BLE001 - a bad image costs that image only
            bad.append((image_id, _describe(exc)))
            continue
        xs.append(x.float().cpu())
        ids.append(image_id)
        contents.append(content)
    if xs and len({tuple(x.shape[-2:]) for x in xs}) > 1:
        sizes = ", ".join(f"{i}: {x.shape[-1]}x{x.shape[-2]}" for i, x in list(zip(ids, xs))[:6])
        raise ImageError(f"images of different sizes cannot be batched ({sizes}); open the set "
                         "with a size, e.g. load_dataset(folder, size=299), or run_grid(..., "
                         "size=299)")
    x = torch.cat(xs) if xs else torch.zeros(0, 3, 1, 1)
    return Loaded(x, ids, contents, bad)


# -- components: picklable specs built where a task runs -------------------------------------
@dataclass(frozen=True)
class Component:
    """A metric / attack / defense as a registry spec (``"jpeg:q30"``) or a pickled object.

    ``fingerprint`` is what keys hash (:mod:`iqalib.fingerprint`): for a spec, the registry's
    fingerprint (code, version, resolved keywords, checkpoints); for an object, its code and
    state. ``group`` is a defense's task group (see the module docstring)."""

    kind: str
    label: str                      # spec string, or the object's name
    fingerprint: str
    spec: str | None = None
    payload: bytes | None = field(default=None, repr=False)
    group: str = "light"
    parts: int = 1                  # a defense's number of composed purifiers

    @property
    def baseline(self) -> bool:
        return self.fingerprint == BASELINE

    @classmethod
    def of(cls, kind: str, item: Any) -> Component:
        if isinstance(item, Component):
            return item
        if isinstance(item, str):
            return _spec_component(kind, item.strip())
        import cloudpickle

        name = getattr(item, "name", None) or getattr(item, "__name__", None)
        if name is None:
            raise TypeError(f"a {kind} must be a name, 'name:preset' or an object with .name; "
                            f"got {type(item).__name__}")
        if kind == "defense":
            from ..defenses import is_baseline

            if is_baseline(item):
                return cls(kind, "identity", BASELINE, spec="identity")
        group, parts = "light", len(getattr(item, "defenses", [item]) or [item])
        first = (getattr(item, "defenses", None) or [item])[0]
        if kind == "defense" and _holds_network(first):
            # a composition shares the task group of its first purifier (prefix reuse)
            group = f"obj:{type(first).__qualname__}:{object_fingerprint(first)[:8]}"
        return cls(kind, str(name), object_fingerprint(item), payload=cloudpickle.dumps(item),
                   group=group, parts=parts)


def _holds_network(obj: Any) -> bool:
    if isinstance(obj, torch.nn.Module):
        return True
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    return any(isinstance(v, torch.nn.Module) for v in values) or any(
        _holds_network(d) for d in getattr(obj, "defenses", []) or [])


def _spec_component(kind: str, spec: str) -> Component:
    from ..errors import UnknownNameError
    from ..registry import ATTACKS, DEFENSES, METRICS

    _ensure_components()

    try:
        if kind == "metric":
            if spec.partition(":")[0] in METRICS:
                fp = METRICS.fingerprint(spec)
            else:  # a pyiqa name the adapter wraps
                from ..metrics import pyiqa_adapter

                fp = sha("pyiqa", spec.lower(), package_version("pyiqa"),
                         code_digest(pyiqa_adapter.create_pyiqa_metric))
            return Component(kind, spec, fp, spec=spec)
        if kind == "attack":
            return Component(kind, spec, ATTACKS.fingerprint(spec), spec=spec)
        from ..defenses import is_baseline

        if is_baseline(spec):
            return Component(kind, spec, BASELINE, spec=spec)
        parts = [p.strip() for p in spec.split("+")]
        fp = sha("defense", *[DEFENSES.fingerprint(p) for p in parts])
        return Component(kind, spec, fp, spec=spec, group=_defense_group(parts[0]),
                         parts=len(parts))
    except UnknownNameError:
        # building it fails where the task runs and is recorded there, with the suggestion
        return Component(kind, spec, sha("unknown", kind, spec), spec=spec)


def _defense_group(first: str) -> str:
    """The task group of a spec's first purifier: its own for a network purifier (a registered
    composite such as ``diffpure-unsharp`` joins the purifier its name starts with, and the
    preset counts: ``diffpure:t10``), ``light`` for everything else."""
    from ..registry import DEFENSES

    name, _, preset = first.partition(":")
    entry = DEFENSES.entry(name)
    if not set(entry.tags) & set(HEAVY_TAGS):
        return "light"
    family = entry.name
    for other in DEFENSES.names():
        if entry.name.startswith(other + "-") and set(DEFENSES.entry(other).tags) & set(HEAVY_TAGS):
            family = other
            break
    return f"{family}:{preset}"


def attack_fingerprint_for(metric, attack) -> str:
    """The attack-cache fingerprint the grid uses for ``attack`` on ``metric`` (each a spec or
    an object), so other code can reuse the grid's attacked images:
    ``AttackCache(root).get_or_run(atk, label, images, ids, seed, fingerprint=...)``."""
    m, a = Component.of("metric", metric), Component.of("attack", attack)
    return sha("attack-on", m.fingerprint, a.fingerprint)


#: per worker process, the components built last (tasks are ordered metric-major, so a metric
#: is built once per process; purifier networks such as DiffPure load once, not per task)
_BUILT: dict[str, collections.OrderedDict] = {"metric": collections.OrderedDict(),
                                               "defense": collections.OrderedDict()}
_BUILT_MAX = {"metric": 4, "defense": 32}


def _cached(kind: str, key: tuple, make):
    built, limit = _BUILT[kind], _BUILT_MAX[kind]
    if key in built:
        built.move_to_end(key)
        return built[key]
    obj = make()
    built[key] = obj
    while len(built) > limit:
        built.popitem(last=False)
    return obj


def _unpickle(c: Component):
    import cloudpickle

    return cloudpickle.loads(c.payload)


def _ensure_components() -> None:
    """Register the built-in components and the user's plugins where a task runs (a Dask
    worker imports nothing else: ``$IQALIB_PLUGINS`` and entry points reach it)."""
    from .. import attacks, defenses, metrics  # noqa: F401

    try:
        from ..plugins import load_plugins
    except ImportError:
        return
    load_plugins()


def build_metric(c: Component, device: torch.device):
    def make():
        _ensure_components()
        if c.spec is not None:
            from ..metrics import create_metric

            return create_metric(c.spec).to(device).eval()
        m = _unpickle(c)
        if isinstance(m, type):  # a metric class: build it here, on the worker
            m = m()
        return m.to(device).eval() if hasattr(m, "to") else m

    return _cached("metric", (c.fingerprint, str(device)), make)


def build_attack(c: Component, metric, seed: int):
    if c.spec is not None:
        _ensure_components()
        from ..registry import ATTACKS

        return ATTACKS.create(c.spec, metric=metric, seed=seed)
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
        if c.baseline:
            from ..defenses import Identity

            return Identity()
        if c.spec is not None:
            _ensure_components()
            from ..defenses import create_defense

            return create_defense(c.spec).to(device)
        d = _unpickle(c)
        return d.to(device) if hasattr(d, "to") else d

    d = _cached("defense", (c.fingerprint, str(device)), make)
    if hasattr(d, "seed"):
        d.seed = seed  # stochastic purifiers draw from a generator seeded with the run's seed
    return d


# -- a composition reuses its prefix ------------------------------------------------------------
_MEMO = PrefixMemo()


def _purify_all(defenses: Sequence[tuple[Component, Any]], x: torch.Tensor, *, like, seed,
                batch_size, strict, failures: list, retry: list) -> dict[str, run.Purified]:
    """Purify ``x`` with each built defense (prefixes shared); failures are recorded."""
    out = {}
    for comp, d in sorted(defenses, key=lambda cd: (cd[0].group, cd[0].parts)):
        try:
            out[comp.fingerprint] = _MEMO.purify(d, x, batch_size=batch_size, seed=seed,
                                                 like=like)
        except Exception as exc:  # recorded; the other purifiers go on
            if strict:
                raise
            failures.append((comp.label, _describe(exc)))
            retry.append(comp.fingerprint)
    return out


def _score_many(metric, batches: list[torch.Tensor], batch_size) -> list[np.ndarray]:
    """Score several batches through the metric in as few forward passes as possible (batches
    of one image size are concatenated); non-finite scores are returned, checked later."""
    out: list[np.ndarray | None] = [None] * len(batches)
    by_shape: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, b in enumerate(batches):
        if isinstance(b, list):  # a size-changing purifier: one image at a time
            out[i] = np.concatenate([run.score(metric, img, batch_size=batch_size,
                                               allow_nonfinite=True) for img in b])
        else:
            by_shape[tuple(b.shape[1:])].append(i)
    for idx in by_shape.values():
        scores = run.score(metric, torch.cat([batches[i] for i in idx]), batch_size=batch_size,
                           allow_nonfinite=True)
        offsets = np.cumsum([0] + [len(batches[i]) for i in idx])
        for k, i in enumerate(idx):
            out[i] = scores[offsets[k]:offsets[k + 1]]
    return out  # type: ignore[return-value]


# -- tasks -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """One task of the grid (``kind`` = ``clean``, ``attack`` or ``rows``; see the module
    docstring). Picklable: components are specs or pickled objects, images a
    :class:`DatasetRef` or an in-memory subset."""

    kind: str
    key: str
    metrics: tuple[Component, ...]
    attack: Component | None
    defenses: tuple[Component, ...]
    chunk: Chunk
    images: Any
    dataset: str
    seed: int
    batch_size: int | str
    device: str
    out: str
    cache_root: str
    git_sha: str
    deps: tuple[str, ...] = ()
    clean_key: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        return self.chunk.ids

    @property
    def metric(self) -> Component:
        return self.metrics[0]

    @property
    def label(self) -> str:
        """The task as a person names it (components as given, images, seed): two runs of
        the same task whose code or weights changed share it, and the newer run's failure
        record replaces the older one's."""
        return "|".join([self.kind, ",".join(m.label for m in self.metrics),
                         self.attack.label if self.attack else "",
                         ",".join(sorted(d.label for d in self.defenses)),
                         self.dataset, ",".join(self.chunk.ids), str(self.seed)])


def _key(kind: str, *parts) -> str:
    return sha("task", kind, *parts)


def _build_each(configs, build, strict: bool, failures: list):
    """Build each component with ``build``. A component that fails to build costs itself
    only: its one-line reason goes to ``failures`` (or the error is raised when ``strict``).
    Returns the ``(config, built)`` pairs and the configs that failed."""
    built, failed = [], []
    for config in configs:
        try:
            built.append((config, build(config)))
        except Exception as exc:
            if strict:
                raise
            failures.append((config.label, _describe(exc)))
            failed.append(config)
    return built, failed


def _describe(exc: BaseException) -> str:
    from ..errors import MissingWeightsError

    text = str(exc).strip()
    msg = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, MissingWeightsError):
        # the message names its `make weights WEIGHTS=<name>` target: that is what to do next
        target = re.search(r"make weights WEIGHTS=[\w.\-]+", text)
        return f"missing weights: {target.group(0) if target else msg}"
    return f"{type(exc).__name__}: {msg}"


def _limit_threads() -> None:
    """On a Dask worker, torch uses as many intra-op threads as the worker has task threads,
    so workers sharing a machine do not fight over its cores."""
    if "distributed" not in sys.modules:  # not on a worker (and importing it costs seconds)
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    n = max(1, int(getattr(worker.state, "nthreads", 0) or getattr(worker, "nthreads", 1)))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _status(unit: Unit, status: str, rows: int = 0, failures=()) -> dict:
    return {"key": unit.key, "kind": unit.kind, "status": status, "rows": rows,
            "failures": [list(f) for f in failures]}


def _todo(unit: Unit, written: Iterable[Path]) -> tuple[list[str] | None, bool]:
    """``(fingerprints to (re)do or None for all, is_retry)``; ``([], ...)`` when done."""
    written = list(written)
    if not written:
        return None, False
    rec = store.read_failure(unit.out, unit.key)
    retry = list(rec.get("retry", [])) if rec else []
    return retry, True


def _finish(unit: Unit, failures: list, retry: list, *, wrote: bool, is_retry: bool,
            bad_images: list, **extra) -> str:
    """Record or clear the failures of a task; its status."""
    notes = [(f"image {i}", why) for i, why in bad_images]
    if failures or notes or retry:
        store.record_failure(unit.out, unit.key, [*failures, *notes], retry=sorted(set(retry)),
                             kind=unit.kind, label=unit.label, **extra)
    else:
        store.clear_failure(unit.out, unit.key)
    if failures and not wrote and not is_retry:
        return "failed"
    return "partial" if failures or notes else "done"


def _stage_files(unit: Unit) -> list[Path]:
    folder = store.stage_dir(unit.out, "clean")
    return sorted(folder.glob(f"{unit.key}*.parquet")) if folder.exists() else []


def _read_clean(out, key: str) -> pd.DataFrame:
    folder = store.stage_dir(out, "clean")
    frames = [pd.read_parquet(f) for f in sorted(folder.glob(f"{key}*.parquet"))] \
        if folder.exists() else []
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["metric_fp", "defense_fp", "content", "score_clean", "score_def_clean"])


def _images_of(unit: Unit):
    return unit.images.resolve() if isinstance(unit.images, DatasetRef) else unit.images


def run_clean(unit: Unit, strict: bool = False) -> dict:
    """A ``clean`` task: purify the clean chunk with each purifier of the group once and score
    it (and the clean chunk) with every metric."""
    from ..device import resolve_device

    written = _stage_files(unit)
    todo, is_retry = _todo(unit, written)
    if todo is not None and not todo:
        return _status(unit, "skipped")
    device = resolve_device(unit.device)
    loaded = load_chunk(_images_of(unit), unit.chunk)
    failures: list = []
    retry: list = []
    wanted = [m for m in unit.metrics if todo is None or any(
        t.startswith(m.fingerprint + "/") for t in todo)]
    metrics, bad = _build_each(wanted, lambda mc: build_metric(mc, device), strict, failures)
    retry += [f"{mc.fingerprint}/{d.fingerprint}" for mc in bad for d in unit.defenses]
    wanted = [d for d in unit.defenses if not d.baseline and (todo is None or any(
        t.endswith("/" + d.fingerprint) for t in todo))]
    built, bad = _build_each(wanted, lambda dc: build_defense(dc, device, unit.seed), strict,
                             failures)
    retry += [f"{m.fingerprint}/{dc.fingerprint}" for dc in bad for m in unit.metrics]
    frames = []
    if len(loaded.x) and metrics:
        d_fail: list = []
        d_retry: list = []
        purified = _purify_all(built, loaded.x, like=loaded.x, seed=unit.seed,
                               batch_size=unit.batch_size, strict=strict, failures=d_fail,
                               retry=d_retry)
        failures += d_fail
        retry += [f"{m.fingerprint}/{d}" for m in unit.metrics for d in d_retry]
        fps = list(purified)
        for mc, metric in metrics:
            try:
                scores = _score_many(metric, [loaded.x] + [purified[f].raw for f in fps],
                                     unit.batch_size)
            except Exception as exc:
                if strict:
                    raise
                failures.append((mc.label, _describe(exc)))
                retry += [f"{mc.fingerprint}/{d.fingerprint}" for d in unit.defenses]
                continue
            s_clean = scores[0]
            for fp, s, secs in [(BASELINE, s_clean, 0.0)] + [
                    (f, scores[k + 1], purified[f].seconds_per_image) for k, f in enumerate(fps)]:
                frames.append(pd.DataFrame({
                    "metric_fp": mc.fingerprint, "defense_fp": fp, "content": loaded.contents,
                    "image_id": loaded.ids, "score_clean": s_clean, "score_def_clean": s,
                    "time_defense_clean_s": secs}))
    wrote = False
    if frames or (not failures and not is_retry):
        # with no frame (every image bad) an empty stage file marks the task done
        from ..atomic import atomic_write_parquet

        name = unit.key if not is_retry else f"{unit.key}+{sha(*(todo or []), n=8)}"
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["metric_fp", "defense_fp", "content", "image_id", "score_clean",
                     "score_def_clean", "time_defense_clean_s"])
        atomic_write_parquet(store.stage_dir(unit.out, "clean") / f"{name}.parquet", table)
        wrote = True
    status = _finish(unit, failures, retry, wrote=wrote, is_retry=is_retry,
                     bad_images=loaded.bad)
    return _status(unit, status, failures=failures)  # bad images: the rows tasks report them


def _cache_fingerprint(unit: Unit) -> str:
    return sha("attack-on", unit.metric.fingerprint, unit.attack.fingerprint)


def _attacked(unit: Unit, loaded: Loaded, metric, attack=None):
    """The attacked chunk from the cache, attacking what is missing."""
    cache = AttackCache(unit.cache_root)
    if attack is None:
        attack = build_attack(unit.attack, metric, unit.seed)
    return cache.get_or_run_tensor(
        attack, loaded.x, loaded.contents, loaded.ids, seed=unit.seed, batch_size=unit.batch_size,
        fingerprint=_cache_fingerprint(unit), metric_label=unit.metric.label,
        dataset=unit.dataset)


def run_attack(unit: Unit, strict: bool = False) -> dict:
    """An ``attack`` task: attack the chunk into the attack cache (what is cached is skipped)."""
    from ..device import resolve_device, seed_everything

    cache = AttackCache(unit.cache_root)
    key = cache.key_for(None, unit.seed, fingerprint=_cache_fingerprint(unit))
    if all(cache.lookup(key, c) is not None for c in unit.chunk.contents):
        return _status(unit, "skipped")
    device = resolve_device(unit.device)
    try:
        loaded = load_chunk(_images_of(unit), unit.chunk)
        if len(loaded.x):
            metric = build_metric(unit.metric, device)
            seed_everything(unit.seed)
            _attacked(unit, loaded, metric)
    except Exception:  # the rows task retries and records it
        if strict:
            raise
        # the rows tasks that need these images try again and record why they could not
        return _status(unit, "failed")
    return _status(unit, "done")


def run_rows(unit: Unit, strict: bool = False) -> dict:
    """A ``rows`` task: purify the attacked chunk with the group's purifiers, score, measure,
    join the clean side and write the part file."""
    from ..device import resolve_device, seed_everything

    written = sorted(store.parts_dir(unit.out).glob(f"{unit.key}*.parquet"))
    todo, is_retry = _todo(unit, written)
    if todo is not None and not todo:
        return _status(unit, "skipped")
    defenses = [d for d in unit.defenses if todo is None or d.fingerprint in todo]
    failures: list = []
    device = resolve_device(unit.device)

    def whole(label: str, exc: BaseException) -> dict:
        if strict:
            raise exc
        store.record_failure(unit.out, unit.key, [(label, _describe(exc))],
                             retry=[d.fingerprint for d in defenses], whole=not is_retry,
                             kind="rows", label=unit.label, traceback=traceback.format_exc())
        return _status(unit, "failed", failures=[(label, _describe(exc))])

    try:
        loaded = load_chunk(_images_of(unit), unit.chunk)
    except Exception as exc:  # noqa: BLE001
        return whole(unit.dataset, exc)
    try:
        metric = build_metric(unit.metric, device)
    except Exception as exc:  # noqa: BLE001
        return whole(unit.metric.label, exc)
    try:
        seed_everything(unit.seed)
        attack = build_attack(unit.attack, metric, unit.seed)
        if len(loaded.x):
            x_adv, t_adv = _attacked(unit, loaded, metric, attack)
        else:
            x_adv, t_adv = loaded.x, np.zeros(0)
    except Exception as exc:  # noqa: BLE001
        return whole(f"{unit.attack.label} on {unit.metric.label}", exc)

    clean = _read_clean(unit.out, unit.clean_key) if unit.clean_key else _read_clean(unit.out, "")
    clean = clean[clean["metric_fp"] == unit.metric.fingerprint] if len(clean) else clean
    clean_fail = store.read_failure(unit.out, unit.clean_key or "") or {}
    clean_retry = {t.split("/", 1)[1] for t in clean_fail.get("retry", [])
                   if t.startswith(unit.metric.fingerprint + "/")}
    lookup = {(r.defense_fp, r.content): (r.score_clean, r.score_def_clean)
              for r in clean.itertuples()} if len(clean) else {}

    # a purifier whose clean side failed was recorded there: retried with it on the next run
    retry = [dc.fingerprint for dc in defenses if dc.fingerprint in clean_retry]
    built, bad = _build_each([dc for dc in defenses if dc.fingerprint not in clean_retry],
                             lambda dc: build_defense(dc, device, unit.seed), strict, failures)
    retry += [dc.fingerprint for dc in bad]
    n = len(loaded.x)
    rows = 0
    frames = []
    if n:
        # the clean side the clean task did not leave (it failed, or ran elsewhere): compute it
        need_clean = [(dc, d) for dc, d in built
                      if not dc.baseline and any((dc.fingerprint, c) not in lookup
                                                 for c in loaded.contents)]
        base_missing = any((BASELINE, c) not in lookup for c in loaded.contents)
        if need_clean or base_missing:
            lookup.update(_clean_side(unit, metric, loaded, need_clean, failures, retry, strict))
        purifiers = [(dc, d) for dc, d in built if not dc.baseline]
        seed_everything(unit.seed)
        purified = _purify_all(purifiers, x_adv, like=loaded.x, seed=unit.seed,
                               batch_size=unit.batch_size, strict=strict, failures=failures,
                               retry=retry)
        order = [dc for dc, _ in built if dc.baseline or dc.fingerprint in purified]
        batches = [x_adv] + [purified[dc.fingerprint].raw for dc in order if not dc.baseline]
        try:
            scores = _score_many(metric, batches, unit.batch_size)
        except Exception as exc:  # noqa: BLE001
            return whole(unit.metric.label, exc)
        s_adv = scores[0]
        k = 1
        base = {
            "dataset": unit.dataset, "metric": unit.metric.label, "attack": attack.name,
            "attack_params": attack.params_json(), "seed": int(unit.seed),
            "git_sha": unit.git_sha, "attack_spec": unit.attack.label,
            "metric_range_lo": float(getattr(metric, "score_range", (np.nan, np.nan))[0]),
            "metric_range_hi": float(getattr(metric, "score_range", (np.nan, np.nan))[1]),
            "metric_lower_better": bool(getattr(metric, "lower_better", False)),
        }
        objects = {dc.fingerprint: d for dc, d in built}
        for dc in order:
            d = objects[dc.fingerprint]
            if dc.baseline:
                s_pa, images, t_def = s_adv, x_adv, 0.0
            else:
                p = purified[dc.fingerprint]
                s_pa, images, t_def = scores[k], p.images, p.seconds_per_image
                k += 1
            s_c = np.array([lookup.get((BASELINE, c), (np.nan, np.nan))[1] for c in loaded.contents])
            s_pc = s_c if dc.baseline else np.array(
                [lookup.get((dc.fingerprint, c), (np.nan, np.nan))[1] for c in loaded.contents])
            frame = pd.DataFrame({
                **base, "image_id": loaded.ids, "image_sha": loaded.contents,
                "defense": d.name, "defense_params": d.params_json(), "defense_spec": dc.label,
                "score_clean": s_c, "score_attacked": s_adv, "score_def_clean": s_pc,
                "score_def_attacked": s_pa,
                "psnr": measures.psnr(images, loaded.x).numpy(),
                "ssim": measures.ssim(images, loaded.x).numpy(),
                "time_attack_s": t_adv, "time_defense_s": t_def})
            frames.append(_drop_nonfinite(frame, dc.label, unit.metric.label, failures))
        frames = [f for f in frames if len(f)]
    image_failures = [f for f in failures if f[0].startswith("image ")]
    other = [f for f in failures if not f[0].startswith("image ")]
    wrote = False
    if frames:
        df = pd.concat(frames, ignore_index=True)
        rows = len(df)
        store.write_part(unit.out, unit.key, df,
                         retry=sha(*sorted(todo), n=8) if is_retry else None)
        wrote = True
    elif not other and not retry and not is_retry:
        # no row survived (bad images, non-finite scores): an empty part marks the task done;
        # its failure record says why
        store.write_part(unit.out, unit.key, store.empty_table())
        wrote = True
    status = _finish(unit, other, retry, wrote=wrote, is_retry=is_retry,
                     bad_images=[*loaded.bad, *[(f[0][6:], f[1]) for f in image_failures]])
    return _status(unit, status, rows, [*other, *[(f"image {i}", w) for i, w in loaded.bad],
                                        *image_failures])


def _clean_side(unit: Unit, metric, loaded: Loaded, defenses, failures, retry, strict) -> dict:
    """Scores of the clean chunk and of its purified versions, for the rows task's metric."""
    d_fail: list = []
    purified = _purify_all(defenses, loaded.x, like=loaded.x, seed=unit.seed,
                           batch_size=unit.batch_size, strict=strict, failures=d_fail,
                           retry=retry)
    failures += d_fail
    fps = list(purified)
    scores = _score_many(metric, [loaded.x] + [purified[f].raw for f in fps], unit.batch_size)
    out = {(BASELINE, c): (s, s) for c, s in zip(loaded.contents, scores[0])}
    for k, f in enumerate(fps):
        out.update({(f, c): (s0, s) for c, s0, s in zip(loaded.contents, scores[0], scores[k + 1])})
    return out


def _drop_nonfinite(frame: pd.DataFrame, defense: str, metric: str, failures: list) -> pd.DataFrame:
    """Rows whose scores are all finite; each image with a NaN/Inf score is a failure."""
    cols = ["score_clean", "score_attacked", "score_def_clean", "score_def_attacked"]
    bad = ~np.isfinite(frame[cols].to_numpy(dtype=float)).all(axis=1)
    for _, row in frame[bad].iterrows():
        which = [c.removeprefix("score_") for c in cols if not np.isfinite(row[c])]
        failures.append((f"image {row['image_id']}",
                         f"non-finite {metric} score ({', '.join(which)}) with {defense}"))
    return frame[~bad]


def run_unit(unit: Unit, strict: bool = False, *_deps) -> dict:
    """Run one task (or the part of it that failed before); returns
    ``{"key", "kind", "status": done|skipped|partial|failed, "rows", "failures"}``.
    Extra arguments (the results of the tasks it depends on, under Dask) are ignored."""
    _limit_threads()
    fn = {"clean": run_clean, "attack": run_attack, "rows": run_rows}[unit.kind]
    return fn(unit, strict)


# -- the grid ---------------------------------------------------------------------------------
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
    """``(image set or DatasetRef, the set itself, ids, label)``."""
    if isinstance(images, (str, os.PathLike)):
        ref = DatasetRef(str(images), n, size)
        ds = ref.resolve()
        ids = list(ds.ids)
        return ref, ds, ids, dataset or label_of(ds, str(images))
    if torch.is_tensor(images):
        if not images.is_floating_point():
            check_images(images, "the images given to run_grid")  # says: divide by 255
        ds = TensorImages(images, name=dataset or "tensor")
        if n:
            ds = ds.subset(int(n))
        return ds, ds, list(ds.ids), ds.name
    if not hasattr(images, "ids") or not hasattr(images, "load"):
        raise GridError(f"images must be a data set name, a folder, an image set (.ids, .load) "
                        f"or a tensor [B,3,H,W]; got {type(images).__name__}")
    ids = list(images.ids)[:n] if n else list(images.ids)
    return images, images, ids, dataset or label_of(images, "images")


def _check_arguments(seed, batch_size, chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise GridError(f"chunk_size must be a positive integer (images per task), got "
                        f"{chunk_size!r}")
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise GridError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise GridError(f"seed must be an integer, got {seed!r}")


def check_writable(folder: Path, what: str) -> None:
    """Raise :class:`GridError` unless ``folder`` can be created and written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GridError(f"cannot write the {what} {folder}: {exc.strerror or exc}; choose "
                        f"another folder") from None


def plan_units(metrics, attacks, defenses, images, *, seed: int = 0,
               batch_size: int | str = 4, chunk_size: int = 16, device: str = "auto", out=None,
               cache=None, dataset: str | None = None, n: int | None = None,
               size: int | None = None) -> list[Unit]:
    """The grid's tasks in a deterministic order that respects their dependencies (for each
    metric, attack and chunk: the chunk's clean tasks, the attack, the rows)."""
    _check_arguments(seed, batch_size, chunk_size)
    source, ds, ids, label = _images_arg(images, dataset, n, size)
    if not ids:
        raise GridError("no images to run on: the set is empty (check the folder, --images, --n)")
    m_c = [Component.of("metric", m) for m in _as_list(metrics)]
    a_c = [Component.of("attack", a) for a in _as_list(attacks)]
    d_c = [Component.of("defense", d) for d in _as_list(defenses)] or [
        Component.of("defense", "none")]
    if not m_c or not a_c:
        raise GridError("give at least one metric and one attack")
    d_c = list({d.fingerprint: d for d in d_c}.values())  # "none" and "identity" once
    out = str(Path(out) if out is not None else results_dir() / "grid")
    cache_root = str(Path(cache) if cache is not None else default_root(out))
    sha_ = git_sha()
    contents = content_ids(ds, ids)
    groups: dict[str, list[Component]] = {}
    for d in d_c:
        groups.setdefault("light" if d.baseline else d.group, []).append(d)
    if "light" in groups:  # the baseline and the light purifiers first
        groups = {"light": groups.pop("light"), **groups}

    common = {"dataset": label, "seed": int(seed), "batch_size": batch_size,
              "device": str(device), "out": out, "cache_root": cache_root, "git_sha": sha_}
    units: list[Unit] = []
    clean_keys: dict[tuple[int, str], str] = {}
    for start in range(0, len(ids), chunk_size):
        chunk = Chunk(tuple(ids[start:start + chunk_size]),
                      tuple(contents[start:start + chunk_size]))
        imgs = source.subset(list(chunk.ids)) if isinstance(source, TensorImages) else source
        for g, members in groups.items():
            key = _key("clean", [m.fingerprint for m in m_c], [d.fingerprint for d in members],
                       chunk.digest(), int(seed), str(batch_size))
            clean_keys[(start, g)] = key
            units.append(Unit("clean", key, tuple(m_c), None, tuple(members), chunk, imgs,
                              **common))
    clean_units = {u.key: u for u in units}
    ordered: list[Unit] = []
    emitted: set[str] = set()
    for m in m_c:
        for a in a_c:
            for start in range(0, len(ids), chunk_size):
                chunk = Chunk(tuple(ids[start:start + chunk_size]),
                              tuple(contents[start:start + chunk_size]))
                imgs = source.subset(list(chunk.ids)) if isinstance(source, TensorImages) \
                    else source
                akey = _key("attack", m.fingerprint, a.fingerprint, chunk.digest(), int(seed))
                attack_unit = Unit("attack", akey, (m,), a, (), chunk, imgs, **common)
                for g, members in groups.items():
                    ckey = clean_keys[(start, g)]
                    if ckey not in emitted:
                        ordered.append(clean_units[ckey])
                        emitted.add(ckey)
                    if akey not in emitted:
                        ordered.append(attack_unit)
                        emitted.add(akey)
                    rkey = _key("rows", m.fingerprint, a.fingerprint,
                                [d.fingerprint for d in members], chunk.digest(), label,
                                int(seed), str(batch_size))
                    ordered.append(Unit("rows", rkey, (m,), a, tuple(members), chunk, imgs,
                                        deps=(ckey, akey), clean_key=ckey, **common))
    return ordered


#: Dask priorities (higher runs first among ready tasks): the attacks, the longest tasks and the
#: ones every rows task waits for, before the clean sides, so that the short tasks fill the
#: end of the run instead of one worker finishing a long attack while the others wait
_PRIORITY = {"attack": 2, "clean": 1, "rows": 0}


def _client(scheduler):
    from distributed import Client

    if isinstance(scheduler, str):
        return Client(scheduler), True
    return scheduler, False


def run_grid(metrics, attacks, defenses, images, *, seed: int = 0, batch_size: int | str = 4,
             chunk_size: int = 16, device: str = "auto", out=None, cache=None, scheduler=None,
             progress: bool = True, dataset: str | None = None, n: int | None = None,
             size: int | None = None, strict: bool = False) -> pd.DataFrame:
    """Run the metric x attack x defense grid and return the tidy table (:data:`COLUMNS`).

    Parameters
    ----------
    metrics, attacks, defenses:
        Names or ``name:preset`` specs (strings), or objects with ``.name`` (a metric module;
        an Attack subclass, instance or ``factory(metric, seed=)``; a Defense). Strings are what
        a Dask cluster should get: objects are cloudpickled into every task. ``"none"`` (or
        any alias of ``"identity"``) as a defense gives the undefended baseline rows.
    images:
        A data set name (``iqalib.datasets.load_dataset(images, n=n, size=size)``), an image
        set (:mod:`iqalib.imagesets`: ``ImageSet``, ``TensorImages``) or a float tensor
        ``[B,3,H,W]`` in [0,1] (a uint8 or 0..255 tensor is refused: divide by 255).
    seed: seeds the attacks, stochastic purifiers and torch/numpy (default 0).
    batch_size: images per forward pass (default 4; ``"auto"`` sizes it from free GPU memory);
    chunk_size: images per task (default 16).
    out: the run folder (default ``results_dir()/grid``); see :mod:`iqalib.evaluate.store`.
    cache: the attack cache (default: ``results_dir()/adv`` when ``out`` is inside the results
    directory, else ``<out>/adv``).
    scheduler: None (local), ``"tcp://host:port"`` or a ``distributed.Client``.
    strict: re-raise the first failure instead of recording it.

    The returned frame's ``attrs["failures"]`` holds the summary lines of what was not done,
    ``attrs["tasks"]`` the status counts.
    """
    units = plan_units(metrics, attacks, defenses, images, seed=seed, batch_size=batch_size,
                       chunk_size=chunk_size, device=device, out=out, cache=cache,
                       dataset=dataset, n=n, size=size)
    out = Path(units[0].out)
    check_writable(store.parts_dir(out), "run folder")
    check_writable(Path(units[0].cache_root), "attack cache")
    store.results_path(out).unlink(missing_ok=True)  # stale until this run finishes

    from tqdm.auto import tqdm

    rows_units = [u for u in units if u.kind == "rows"]
    bar = tqdm(total=len(units), desc="grid", unit="task", disable=not progress)
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
                futures: dict[str, Any] = {}
                for u in units:
                    deps = [futures[k] for k in u.deps]
                    futures[u.key] = client.submit(run_unit, u, strict, *deps,
                                                   key=f"iqalib-{u.kind}-{u.key}", pure=False,
                                                   priority=_PRIORITY[u.kind])
                for fut in as_completed(list(futures.values())):
                    record(fut.result())
            finally:
                if own:
                    client.close()
    finally:
        bar.close()

    _drop_superseded_failures(out, units)
    keys = {u.key for u in rows_units}
    parts = store.part_frames(out)
    df = store.select(parts, keys)
    summary = summarise_failures(results)
    # the folder's table holds every run made into it, not only this call's tasks
    store.write_results(out, parts)
    df.attrs["failures"] = summary
    df.attrs["tasks"] = dict(collections.Counter(f"{r['kind']} {r['status']}" for r in results))
    if summary and progress:
        print("\n".join(summary), file=sys.stderr)
    return df


def _drop_superseded_failures(out: Path, units: Sequence[Unit]) -> None:
    """Failure records of an earlier version of a task of this run (same label, other key:
    its code, weights or settings changed since) no longer say anything: remove them."""
    current = {u.label: u.key for u in units}
    for f in sorted(store.failures_dir(out).glob("*.json")):
        rec = store.read_failure(out, f.stem) or {}
        key = current.get(rec.get("label"))
        if key is not None and key != f.stem:
            f.unlink(missing_ok=True)


def summarise_failures(results: Sequence[dict]) -> list[str]:
    """``["skipped: linearity (missing weights: ...) in 3 units", ...]``, one line per cause."""
    counts: collections.Counter = collections.Counter()
    for r in results:
        for label, msg in r.get("failures", []):
            counts[(label, msg)] += 1
    return [f"skipped: {label} ({msg})" + (f" in {k} units" if k > 1 else "")
            for (label, msg), k in counts.items()]


__all__ = [
    "BASELINE",
    "COLUMNS",
    "ROW_KEY",
    "Chunk",
    "Component",
    "DatasetRef",
    "GridError",
    "PrefixMemo",
    "TensorImages",
    "Unit",
    "attack_fingerprint_for",
    "check_writable",
    "git_sha",
    "load_chunk",
    "load_results",
    "plan_units",
    "run_grid",
    "run_unit",
    "summarise_failures",
]
