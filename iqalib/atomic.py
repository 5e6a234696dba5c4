"""Atomic file writes: a file appears complete or not at all.

Every writer goes through a temporary file in the destination's folder and ``os.replace``, so a
run killed at any moment (or two processes writing the same file) never leaves half a file
behind. This is the one implementation; every module that writes results, caches or converted
assets uses it.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary path beside ``path``, then rename it into place.

    For writers that want a file name (``torch.save``, ``scipy.io.savemat``, ``np.savez``).
    The temporary file is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write_with(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode())


def atomic_write_parquet(path: str | os.PathLike, df) -> Path:
    """Write a pandas DataFrame as parquet (no index) atomically."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_parquet", "atomic_write_with"]
