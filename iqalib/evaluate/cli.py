"""The command lines of the evaluation: ``python -m iqalib run`` and ``python -m iqalib table``.

Both check every argument before any work starts (names and presets against the registries,
sizes, the image set, the folders they write) and answer a mistake with one line that says
what to do, and a non-zero exit status: 2 for a bad argument, 1 for a run that produced no
rows (what was skipped, and why, is printed above it).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from ..errors import IqalibError

EXIT_BAD_ARGUMENT = 2
EXIT_NOTHING_DONE = 1


class ArgumentError(IqalibError, ValueError):
    """A command-line argument that cannot work; the message says what to do."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake answered in one line (and --help pointed at), exit status 2."""

    def error(self, message: str):  # argparse's hook
        self.exit(EXIT_BAD_ARGUMENT, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _positive(kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a whole number, got {text!r}") \
                from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{kind} must be at least 1, got {value}")
        return value

    return parse


def _batch(text: str):
    return "auto" if text == "auto" else _positive("--batch-size")(text)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be a whole number, got {text!r}") from None


def check_specs(kind: str, specs: list[str]) -> None:
    """Raise :class:`~iqalib.errors.UnknownNameError` (with a did-you-mean) for an unknown
    name or preset, without building anything."""
    from .. import attacks, defenses, metrics  # noqa: F401  (registers every component)
    from ..registry import ATTACKS, DEFENSES, METRICS

    for spec in specs:
        if kind == "metric":
            if spec.partition(":")[0] in METRICS:
                METRICS.split_spec(spec)
                continue
            from ..metrics import pyiqa_adapter

            if pyiqa_adapter._resolve_pyiqa_name(spec) is None:
                pyiqa_adapter.create_pyiqa_metric(spec)  # raises the did-you-mean error
        elif kind == "attack":
            ATTACKS.split_spec(spec)
        else:
            for part in spec.split("+"):
                DEFENSES.split_spec(part.strip())


def run_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m iqalib run",
        description="Run the metric x attack x defense grid into a run folder (resumable: a "
                    "rerun skips what is done) and print the paper's table. Names and presets: "
                    "`python -m iqalib list metrics|attacks|defenses`.",
        epilog="example: python -m iqalib run --metrics brisque --attacks ifgsm --defenses "
               "none flip jpeg:q30 --images samples --n 8 --out runs/quick")
    p.add_argument("--metrics", nargs="+", required=True, metavar="SPEC",
                   help="metrics under attack (name or name:preset; pyiqa names work too)")
    p.add_argument("--attacks", nargs="+", required=True, metavar="SPEC",
                   help="attacks (name or name:preset)")
    p.add_argument("--defenses", nargs="+", default=["none"], metavar="SPEC",
                   help="purifiers (name, name:preset, a+b composes); 'none' is the undefended "
                        "baseline (default: none)")
    p.add_argument("--images", default="samples",
                   help="data set name (samples, nips17) or a folder of images (default samples)")
    p.add_argument("--n", type=_positive("--n"), default=None,
                   help="use the first N images (default: all)")
    p.add_argument("--size", type=_positive("--size"), default=None,
                   help="resize and centre-crop every image to SIZE x SIZE pixels (default: "
                        "keep; needed for folders of mixed sizes)")
    p.add_argument("--out", default=None,
                   help="run folder: parts/, failures/, results.parquet (default "
                        "data/results/grid)")
    p.add_argument("--cache", default=None,
                   help="attack cache folder (default: data/results/adv for run folders under "
                        "data/results, else OUT/adv)")
    p.add_argument("--seed", type=_integer, default=0,
                   help="seeds attacks and stochastic purifiers (default 0)")
    p.add_argument("--batch-size", type=_batch, default=4,
                   help="images per forward pass, or 'auto' from free GPU memory (default 4)")
    p.add_argument("--chunk-size", type=_positive("--chunk-size"), default=16,
                   help="images per task: the unit of resuming and of Dask work (default 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address tcp://HOST:PORT (default: run here)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first failure with its traceback instead of recording it")
    return p


def _check_run_arguments(a: argparse.Namespace):
    """Everything that can be checked before work starts; returns the run folder."""
    from ..device import resolve_device
    from .grid import check_writable

    for kind, specs in (("metric", a.metrics), ("attack", a.attacks), ("defense", a.defenses)):
        check_specs(kind, specs)
    try:
        resolve_device(a.device)
    except (RuntimeError, ValueError) as exc:
        raise ArgumentError(f"--device {a.device!r}: {exc}") from None
    if a.scheduler is not None and "://" not in a.scheduler:
        raise ArgumentError(f"--scheduler {a.scheduler!r} is not an address; give "
                            "tcp://HOST:PORT (the address a dask scheduler prints)")
    from .grid import DatasetRef

    images = DatasetRef(a.images, a.n, a.size).resolve()
    if not len(images):
        raise ArgumentError(f"--images {a.images!r} holds no readable images")
    from ..attacks.cache import default_root
    from ..paths import results_dir

    # last: these create the folders
    out = Path(a.out) if a.out else results_dir() / "grid"
    check_writable(out, "run folder (--out)")
    check_writable(Path(a.cache) if a.cache else default_root(out), "attack cache (--cache)")
    return out


def run_cli(argv: list[str] | None = None) -> int:
    """``python -m iqalib run ...`` (see ``--help``); returns the exit status."""
    a = run_parser().parse_args(argv)
    try:
        out = _check_run_arguments(a)
    except (IqalibError, KeyError, ValueError, OSError) as exc:
        return _fail(exc)
    from .grid import run_grid

    try:
        df = run_grid(a.metrics, a.attacks, a.defenses, a.images, seed=a.seed, n=a.n,
                      size=a.size, batch_size=a.batch_size, chunk_size=a.chunk_size,
                      device=a.device, out=out, cache=a.cache, scheduler=a.scheduler,
                      strict=a.strict)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume into {out}", file=sys.stderr)
        return 130
    except IqalibError as exc:
        return _fail(exc)
    if df.empty:
        print(f"error: no rows were produced in {out}; see the skipped lines above for why",
              file=sys.stderr)
        return EXIT_NOTHING_DONE
    print(f"{len(df)} rows -> {out}")
    _print_tables(df)
    return 0  # what was skipped went to stderr already


def _fail(exc: BaseException) -> int:
    text = str(exc).strip().splitlines()
    print(f"error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
    return EXIT_BAD_ARGUMENT


def _print_tables(df: pd.DataFrame, *, by: str | None = None, value: str = "srocc",
                  clean: bool = False) -> pd.DataFrame:
    from . import tables

    t = tables.paper_table(df)
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        print(f"{df['metric'].nunique()} metrics, {df['attack'].nunique()} attacks; mean over "
              "metrics and attacks (Gain divides by f(clean); Gain/range by the range)")
        print(t.round(4).to_string())
        if by:
            print(f"\n{value} by defense x {by}")
            print(tables.pivot(df, value, columns=by).round(4).to_string())
        if clean:
            print("\nclean-image cost: f(clean) vs f(purify(clean))")
            print(tables.clean_cost_table(df).round(4).to_string(index=False))
    return t


def table_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m iqalib table",
        description="Summarise a run folder's results (or a parquet file) as the paper's table.")
    p.add_argument("run", help="a run folder (with results.parquet or parts/) or a parquet file")
    p.add_argument("--by", choices=["attack", "metric"], default=None,
                   help="also print a defense x attack|metric pivot of --value")
    p.add_argument("--value", default="srocc",
                   help="the measure of the pivot (srocc, gain, abs_gain_norm, q, psnr, ssim, "
                        "robustness, time_s; default srocc)")
    p.add_argument("--clean", action="store_true", help="also print the clean-image cost table")
    p.add_argument("--csv", default=None, help="write the paper table to this CSV file")
    return p


def table_cli(argv: list[str] | None = None) -> int:
    """``python -m iqalib table RUN [--by attack|metric --value srocc] [--clean] [--csv F]``."""
    from .store import load_results

    a = table_parser().parse_args(argv)
    path = Path(a.run)
    try:
        if path.is_file():
            df = pd.read_parquet(path)
        elif path.is_dir():
            df = load_results(path)
        else:
            raise ArgumentError(f"{path}: no such run folder or parquet file")
        if a.csv:
            parent = Path(a.csv).resolve().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ArgumentError(f"--csv {a.csv}: cannot write into {parent}")
    except (IqalibError, OSError, ValueError) as exc:
        return _fail(exc)
    if df.empty:
        print(f"error: no rows in {path}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    print(f"{len(df)} rows")
    try:
        t = _print_tables(df, by=a.by, value=a.value, clean=a.clean)
    except KeyError as exc:
        return _fail(ArgumentError(str(exc).strip("'\"")))
    if a.csv:
        t.to_csv(a.csv)
    return 0


__all__ = ["ArgumentError", "check_specs", "run_cli", "run_parser", "table_cli", "table_parser"]
