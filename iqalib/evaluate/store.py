"""The results store: the tidy table's columns, its row key and the files of a run folder.

A *run folder* (``out``) holds::

    parts/<task key>[+<retry>].parquet   rows of one finished grid task (columns COLUMNS)
    failures/<task key>.json             what a task could not do, and why (retried next time)
    stage/clean/..., stage/attack/...    intermediate results shared by the tasks of one run
    results.parquet                      every part's rows, written when a run ends

Every file is written atomically (:mod:`iqalib.atomic`), so a run killed at any moment leaves
complete files or none, and two processes writing into one folder lose nothing. A part file's
name starts with its task key, a hash of everything that determines its rows (component
fingerprints, image content, seed): a rerun skips what exists.

One row per image x metric x attack x defense x seed; :data:`ROW_KEY` identifies a row and
includes ``image_sha`` (the image's content), so two different images that share a name never
stand for each other. Gains, SROCC and Q are derived from the table
(:mod:`iqalib.evaluate.tables`), never stored.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..atomic import atomic_write_json, atomic_write_parquet

#: the tidy table's columns, in order
COLUMNS = [
    "image_id", "dataset", "metric", "attack", "attack_params", "defense", "defense_params",
    "seed", "score_clean", "score_attacked", "score_def_clean", "score_def_attacked", "psnr",
    "ssim", "time_attack_s", "time_defense_s", "git_sha",
    # additive: what tables need without rebuilding the metric, and the specs as given
    "metric_range_lo", "metric_range_hi", "metric_lower_better", "attack_spec", "defense_spec",
    # the image's content fingerprint (sha256 of its pixels or file bytes, with its resize)
    "image_sha",
]
#: columns that identify a row (everything else is a measurement)
ROW_KEY = ["dataset", "metric", "attack", "attack_params", "defense", "defense_params", "seed",
           "image_id", "image_sha"]
#: the columns of :func:`skipped`
SKIPPED_COLUMNS = ["run", "what", "why"]


# -- layout --------------------------------------------------------------------------------
def parts_dir(out) -> Path:
    return Path(out) / "parts"


def failures_dir(out) -> Path:
    return Path(out) / "failures"


def stage_dir(out, kind: str) -> Path:
    """Intermediate results of one run folder (``clean``: purified clean images' scores,
    ``attack``: attacked images' scores); the grid's tasks share them."""
    return Path(out) / "stage" / kind


def part_path(out, key: str, retry: str | None = None) -> Path:
    return parts_dir(out) / (f"{key}+{retry}.parquet" if retry else f"{key}.parquet")


def failure_path(out, key: str) -> Path:
    return failures_dir(out) / f"{key}.json"


def results_path(out) -> Path:
    return Path(out) / "results.parquet"


def key_of_part(path: Path) -> str:
    """The task key a part file's name starts with (``<key>[+<retry>].parquet``)."""
    return path.name.removesuffix(".parquet").split("+")[0]


# -- writing -------------------------------------------------------------------------------
def write_part(out, key: str, df: pd.DataFrame, retry: str | None = None) -> Path:
    """Write one task's rows (ordered as :data:`COLUMNS`) atomically; returns the path."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"a part needs the columns {missing}")
    return atomic_write_parquet(part_path(out, key, retry), df[COLUMNS].reset_index(drop=True))


def record_failure(out, key: str, failures: Iterable[tuple[str, str]], **extra) -> Path:
    """Record what task ``key`` could not do: ``failures`` is ``[(what, why), ...]``; ``extra``
    (e.g. ``defenses=[...]`` to retry, ``traceback=``) is stored beside it."""
    record = {"unit": key, "failures": [[str(a), str(b)] for a, b in failures], **extra}
    return atomic_write_json(failure_path(out, key), record)


def read_failure(out, key: str) -> dict | None:
    try:
        return json.loads(failure_path(out, key).read_text())
    except (OSError, ValueError):
        return None


def clear_failure(out, key: str) -> None:
    failure_path(out, key).unlink(missing_ok=True)


# -- reading -------------------------------------------------------------------------------
def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """One row per :data:`ROW_KEY` (the last one in ``df`` wins), sorted by it."""
    if df.empty:
        return empty_table()
    if "image_sha" not in df.columns:  # tables written before content keys
        df = df.assign(image_sha="")
    df = df.drop_duplicates(subset=ROW_KEY, keep="last")
    return df.sort_values(ROW_KEY, kind="stable").reset_index(drop=True)


def part_frames(out) -> dict[str, pd.DataFrame]:
    """Every part file of a run folder, read once, by file name, oldest first: where two parts
    hold the same row key (a component edited between two runs into one folder) the newer
    rows win in :func:`select`."""
    files = []
    for f in parts_dir(out).glob("*.parquet"):
        try:
            files.append((f.stat().st_mtime_ns, f.name, f))
        except FileNotFoundError:  # replaced by another writer meanwhile
            continue
    return {name: pd.read_parquet(f) for _, name, f in sorted(files)}


def select(parts: dict[str, pd.DataFrame], keys: set[str] | None = None) -> pd.DataFrame:
    """The tidy table of the parts whose task key is in ``keys`` (all parts when None)."""
    frames = [f for name, f in parts.items()
              if keys is None or key_of_part(Path(name)) in keys]
    frames = [f for f in frames if len(f)]
    return tidy(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())


def write_results(out, parts: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Write the folder's whole table (every run made into it) as ``results.parquet``."""
    df = select(parts if parts is not None else part_frames(out))
    atomic_write_parquet(results_path(out), df)
    return df


def load_results(out) -> pd.DataFrame:
    """The tidy table of a run folder: ``results.parquet`` if the run finished, else its parts."""
    out = Path(out)
    if results_path(out).exists():
        return tidy(pd.read_parquet(results_path(out)))
    if not parts_dir(out).exists():
        raise FileNotFoundError(f"no results under {out}: run `python -m iqalib run --out {out}` "
                                "first")
    return select(part_frames(out))


def run_folders(root) -> list[Path]:
    """Every run folder (a folder with ``parts/``) at or below ``root``, in name order."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted({p.parent for p in root.rglob("parts") if p.is_dir()})


def _rel(folder: Path, root: Path) -> str:
    rel = folder.relative_to(root).as_posix()
    return "" if rel == "." else rel


def collect(root, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Every run folder below ``root`` as one tidy table with a ``run`` column (the folder
    relative to ``root``). ``runs`` keeps only folders whose first path part is in it.

    A row that two run folders both computed (the same :data:`ROW_KEY`, e.g. the undefended
    baseline) is kept once, from the first folder in name order."""
    root = Path(root)
    keep = None if runs is None else {str(r) for r in runs}
    frames = []
    for folder in run_folders(root):
        rel = _rel(folder, root)
        if keep is not None and rel.split("/")[0] not in keep:
            continue
        df = load_results(folder)
        if len(df):
            frames.append(df.assign(run=rel))
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "run"])
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(subset=ROW_KEY, keep="first").reset_index(drop=True)


def skipped(root) -> pd.DataFrame:
    """What the grid recorded as not done below ``root``: columns ``run``, ``what``, ``why``,
    one row per distinct cause per run folder (e.g. a purifier whose weights are missing, with
    the ``make weights WEIGHTS=<name>`` target in ``why``; an image that could not be read)."""
    root = Path(root)
    rows = []
    for folder in run_folders(root):
        for f in sorted(failures_dir(folder).glob("*.json")):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            for what, why in rec.get("failures", []):
                rows.append({"run": _rel(folder, root), "what": what, "why": why})
    out = pd.DataFrame(rows, columns=SKIPPED_COLUMNS)
    return out.drop_duplicates().reset_index(drop=True)


__all__ = [
    "COLUMNS",
    "ROW_KEY",
    "SKIPPED_COLUMNS",
    "clear_failure",
    "collect",
    "empty_table",
    "failure_path",
    "failures_dir",
    "key_of_part",
    "load_results",
    "part_frames",
    "part_path",
    "parts_dir",
    "read_failure",
    "record_failure",
    "results_path",
    "run_folders",
    "select",
    "skipped",
    "stage_dir",
    "tidy",
    "write_part",
    "write_results",
]
