"""Resumable, verified downloads (HTTP(S) with Range requests, and file:// URLs).

Used by :mod:`iqalib.weights` (checkpoints) and :mod:`iqalib.datasets` (NIPS 2017 images).
Standard library only (urllib), so it also works where ``requests`` is missing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "iqalib/0.1 (+https://github.com/; research workbook)"


def sha256_file(path: str | os.PathLike, *, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints are up to 2 GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _file_url_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(parsed.path))


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not enabled, leave=False)


def download_to_part(url: str, part: Path, *, progress: bool = True, timeout: float = 60.0,
                     desc: str | None = None) -> Path:
    """Download ``url`` into ``part``, resuming from what ``part`` already holds.

    HTTP(S): sends ``Range: bytes=<have>-``; a 206 answer is appended, a 200 answer (server
    without Range support) restarts from zero, 416 means ``part`` is already complete. file://
    URLs are copied from the same offset. A dropped connection leaves ``part`` in place and
    raises :class:`DownloadError` saying to re-run (which resumes). Returns ``part``.
    """
    part = Path(part)
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    desc = desc or part.name.removesuffix(".part")
    scheme = urllib.parse.urlparse(url).scheme.lower()

    if scheme == "file":
        src = _file_url_path(url)
        if not src.is_file():
            raise DownloadError(f"{url}: no such file")
        total = src.stat().st_size
        if have > total:  # a stale .part from another file: start over
            have = 0
        with open(src, "rb") as fin, open(part, "ab" if have else "wb") as fout, \
                _progress_bar(total, have, desc, progress) as bar:
            fin.seek(have)
            for block in iter(lambda: fin.read(CHUNK), b""):
                fout.write(block)
                bar.update(len(block))
        return part

    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https, file)")

    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the .part is whole
            return part
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason}). Check the internet connection "
                            "(our CI machines have none) or download the file by hand.") from exc

    with resp:
        status = getattr(resp, "status", 200)
        if have and status == 206:
            mode = "ab"
            content_range = resp.headers.get("Content-Range", "")
            total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range and \
                content_range.rsplit("/", 1)[1].isdigit() else None
            if not content_range.startswith(f"bytes {have}-"):
                raise DownloadError(f"{url}: server answered the resume request with range "
                                    f"{content_range!r}; delete {part} and re-run.")
        else:
            mode, have = "wb", 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        expected_rest = None if total is None else total - have
        got = 0
        try:
            with open(part, mode) as fout, _progress_bar(total, have, desc, progress) as bar:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    fout.write(block)
                    got += len(block)
                    bar.update(len(block))
        except (OSError, urllib.error.URLError, ConnectionError) as exc:
            raise DownloadError(f"{url}: connection lost after {have + got} bytes ({exc}); "
                                f"the partial file {part} is kept: re-run to resume.") from exc
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise DownloadError(f"{url}: transfer interrupted after {have + got} bytes ({exc}); "
                                f"the partial file {part} is kept: re-run to resume.") from exc
    if expected_rest is not None and got < expected_rest:
        raise DownloadError(f"{url}: connection closed after {have + got} of {total} bytes; "
                            f"the partial file {part} is kept: re-run to resume.")
    return part


def fetch_bytes(url: str, *, timeout: float = 30.0, reject_redirects_to: tuple[str, ...] = ()
                ) -> bytes:
    """Whole body of a small http(s):// or file:// resource (CSV files, single images).

    ``reject_redirects_to``: substrings of a final (redirected) URL that mean "not the file"
    (Flickr answers a deleted photo with a redirect to a placeholder image, status 200).
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme == "file":
        return _file_url_path(url).read_bytes()
    if scheme == "" and Path(url).exists():
        return Path(url).read_bytes()
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            final = resp.geturl()
            if any(bad in final for bad in reject_redirects_to):
                raise DownloadError(f"{url}: redirected to {final} (the file is gone)")
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def finish(part: Path, dest: Path, *, check: Callable[[Path], None] | None = None) -> Path:
    """Run ``check(part)`` (raise to reject; the part is then deleted), then rename atomically."""
    try:
        if check is not None:
            check(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def copy_file(src: Path, dest: Path) -> None:
    """Copy through a temp name so ``dest`` is complete or absent."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
