"""``make lab`` / ``python -m iqalib lab``: JupyterLab on copies of the notebooks.

JupyterLab autosaves a notebook with its outputs. The tracked notebooks in ``notebooks/`` must
stay without outputs (``make strip-check``), so the lab works on copies in ``build/lab/``:

- a missing copy is made;
- a copy is refreshed when its tracked notebook changed (a ``git pull``) and the copy's cells
  are still the ones it was made from (outputs do not count);
- a copy whose cells you edited is kept, and the command says so: diff it against
  ``notebooks/`` and carry your change over by hand, or delete the copy to get a fresh one.

Under root (a Docker container) JupyterLab needs ``--allow-root``; the command adds it. Extra
arguments go to ``jupyter lab`` unchanged (``python -m iqalib lab --port 8890``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import paths

#: where the copies live, relative to the checkout
LAB_SUBDIR = Path("build") / "lab"
_RECORD = ".copied-from.json"


def checkout() -> Path:
    """The checkout this package runs from (``make lab`` is a checkout feature)."""
    if paths._CHECKOUT is None:
        raise RuntimeError("`iqalib lab` works inside a checkout of the repository (it copies "
                           "notebooks/); with an installed package run `jupyter lab` yourself.")
    return paths._CHECKOUT


def cells_digest(path: Path) -> str:
    """sha256 of a notebook's cell types and sources: what a person edits (not outputs)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    cells = [(c.get("cell_type"), "".join(c.get("source", ""))) for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def sync_copies(source: Path, target: Path) -> dict[str, str]:
    """Copy ``source/*.ipynb`` to ``target`` as described in the module docstring; return
    ``{notebook: "copied" | "refreshed" | "kept (edited)" | "unchanged"}``."""
    target.mkdir(parents=True, exist_ok=True)
    record_path = target / _RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    status = {}
    for nb in sorted(source.glob("*.ipynb")):
        copy, now = target / nb.name, cells_digest(nb)
        if not copy.exists():
            state = "copied"
        elif record.get(nb.name) == now:
            state = "unchanged"
        elif cells_digest(copy) in (record.get(nb.name), now):
            state = "refreshed"
        else:
            status[nb.name] = "kept (edited)"
            continue
        if state != "unchanged":
            shutil.copyfile(nb, copy)
            record[nb.name] = now
        status[nb.name] = state
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True))
    return status


def command(notebook_dir: Path, extra: list[str] | None = None) -> list[str]:
    """The ``jupyter lab`` command line: on 127.0.0.1, ``--allow-root`` when run as root."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebook_dir}",
           "--ServerApp.ip=127.0.0.1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd + list(extra or [])


def cli(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    root = checkout()
    target = root / LAB_SUBDIR
    status = sync_copies(root / "notebooks", target)
    kept = [n for n, s in status.items() if s.startswith("kept")]
    fresh = [n for n, s in status.items() if s in ("copied", "refreshed")]
    print(f"JupyterLab on copies in {LAB_SUBDIR}/: the tracked notebooks stay clean.")
    if fresh:
        print(f"  copied or refreshed from notebooks/: {', '.join(fresh)}")
    for n in kept:
        print(f"  kept your edited {LAB_SUBDIR / n}: notebooks/{n} changed since; compare the "
              "two, or delete the copy to get a fresh one")
    return subprocess.call(command(target, argv))


__all__ = ["LAB_SUBDIR", "cells_digest", "cli", "command", "sync_copies"]
