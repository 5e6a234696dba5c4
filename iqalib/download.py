"""Resumable, verified downloads (HTTP(S) with Range requests, and file:// URLs), and mirrors.

Used by :mod:`iqalib.weights` (checkpoints) and :mod:`iqalib.datasets` (NIPS 2017 images).
Standard library only (urllib), so it also works where ``requests`` is missing.

A partial download lives in ``<file>.part`` with a small record of where its bytes came from
beside it (``<file>.part.json``: the URL and the server's validators, i.e. ETag, Last-Modified
and the full size). A later attempt appends to the ``.part`` only when it asks the same URL and
the server still describes the same file (HTTP ``If-Range`` plus our own check of the validators
in the answer); anything else (another URL, a changed file, a ``.part`` of unknown origin)
starts again from zero. So a resumed download never splices two different files.

Mirrors: ``IQALIB_MIRROR`` holds one or more base URLs (``https://``, ``http://``, ``file://``
or a local folder), separated by spaces or commas, tried in order before the official URLs.
A mirror has the layout ``<mirror>/weights/<checkpoint file>`` and
``<mirror>/nips17/dev_dataset.csv`` (+ optional ready-made ``<mirror>/nips17/images/<ImageId>.png``);
see :func:`mirror_urls`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "iqalib/0.1 (research workbook)"
#: environment variable holding the mirror base URLs
MIRROR_ENV = "IQALIB_MIRROR"


class NotOnServer(DownloadError):
    """The server answered that it does not have the file (HTTP 404/410, or no such local file).

    Expected when probing a mirror that holds only part of the layout."""


# --- mirrors ------------------------------------------------------------------------------------
def mirrors() -> list[str]:
    """The base URLs in ``IQALIB_MIRROR`` (space- or comma-separated), each ending in ``/``.

    A bare local folder (``/srv/iqalib-mirror``) becomes a ``file://`` URL.
    """
    raw = os.environ.get(MIRROR_ENV, "")
    out = []
    for item in raw.replace(",", " ").split():
        if "://" not in item:
            item = Path(item).expanduser().resolve().as_uri()
        out.append(item if item.endswith("/") else item + "/")
    return out


def mirror_urls(relpath: str) -> list[str]:
    """``<mirror>/<relpath>`` for every configured mirror, in order (empty without mirrors).

    The layout a mirror must have::

        <mirror>/weights/<file>                    every checkpoint under its catalogue file name
                                                   (``python -m iqalib weights list`` shows them)
        <mirror>/nips17/dev_dataset.csv            the NIPS 2017 development set's CSV
        <mirror>/nips17/images/<ImageId>.png       optional: ready-made 299x299 PNGs (the Kaggle
                                                   copy's layout); rows without one are fetched
                                                   from the CSV's own URL
    """
    rel = "/".join(urllib.parse.quote(p) for p in relpath.strip("/").split("/"))
    return [m + rel for m in mirrors()]


# --- hashing -----------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, *, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints are up to 2 GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --- the record of a partial download ----------------------------------------------------------
def source_record_path(part: Path) -> Path:
    """Where the origin of ``part`` is recorded (``<file>.part.json``)."""
    return part.with_name(part.name + ".json")


def _read_source(part: Path) -> dict | None:
    try:
        rec = json.loads(source_record_path(part).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("url") else None


def _write_source(part: Path, rec: dict) -> None:
    p = source_record_path(part)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(rec, sort_keys=True) + "\n")
    os.replace(tmp, p)


def discard_part(part: Path) -> None:
    """Delete a partial download and the record of its origin."""
    part.unlink(missing_ok=True)
    source_record_path(part).unlink(missing_ok=True)


def _file_url_path(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(parsed.path))


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not enabled, leave=False)


def _strong_etag(value: str | None) -> str | None:
    """An ETag usable in ``If-Range`` (RFC 9110 13.1.5 allows strong validators only)."""
    return value if value and not value.startswith("W/") else None


def _validators(headers, total: int | None) -> dict:
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified"),
            "size": total}


def _same_file(stored: dict, fresh: dict) -> bool:
    """Whether the server's answer describes the file the stored bytes came from.

    Every validator both sides have must agree; the size must always be known and equal."""
    if stored.get("size") is None or fresh.get("size") != stored.get("size"):
        return False
    for key in ("etag", "last_modified"):
        if stored.get(key) and fresh.get(key) and stored[key] != fresh[key]:
            return False
    return True


# --- downloading -------------------------------------------------------------------------------
def download_to_part(url: str, part: Path, *, progress: bool = True, timeout: float = 60.0,
                     desc: str | None = None) -> Path:
    """Download ``url`` into ``part``, resuming only what came from the same URL and file.

    The origin of ``part`` (URL, ETag, Last-Modified, full size) is kept in
    ``<part>.json``. A ``part`` from another URL, or without such a record, is overwritten from
    byte zero once ``url`` answers (not before: an unreachable URL leaves it alone). HTTP(S):
    a resume sends ``Range`` with ``If-Range`` (the strong ETag, else Last-Modified), so a server
    whose file changed answers with the whole new file (200), which replaces ``part``; a 206
    whose validators or total size differ from the record is refused and the download restarts
    from zero. file:// URLs resume while the source's size and modification time are unchanged.
    A dropped connection leaves ``part`` and its record in place and raises
    :class:`DownloadError` saying that a re-run resumes. A 404 raises :class:`NotOnServer`.
    Returns ``part`` (complete as far as the server's size says; the caller checks the content).
    """
    part = Path(part)
    part.parent.mkdir(parents=True, exist_ok=True)
    desc = desc or part.name.removesuffix(".part")
    rec = _read_source(part)
    if not part.exists() or rec is None or rec.get("url") != url:
        # bytes of unknown or other origin are never appended to; they are replaced only once
        # this URL answers, so an unreachable mirror does not cost another URL's partial file
        rec = None
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme == "file":
        return _copy_file_url(url, part, rec, progress, desc)
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (http, https, file)")
    for _ in range(2):  # a refused resume restarts once from zero
        if _http_download(url, part, rec, progress, timeout, desc):
            return part
        discard_part(part)
        rec = None
    raise DownloadError(f"{url}: the server keeps answering resume requests for another file; "
                        "try again later")  # pragma: no cover - the second pass never resumes


def _copy_file_url(url: str, part: Path, rec: dict | None, progress: bool, desc: str) -> Path:
    src = _file_url_path(url)
    if not src.is_file():
        raise NotOnServer(f"{url}: no such file")
    st = src.stat()
    fresh = {"url": url, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    have = part.stat().st_size if rec is not None else 0
    if have and (rec.get("size") != fresh["size"] or rec.get("mtime_ns") != fresh["mtime_ns"]
                 or have > fresh["size"]):
        have = 0
    if not have:
        _write_source(part, fresh)
    with open(src, "rb") as fin, open(part, "ab" if have else "wb") as fout, \
            _progress_bar(fresh["size"], have, desc, progress) as bar:
        fin.seek(have)
        for block in iter(lambda: fin.read(CHUNK), b""):
            fout.write(block)
            bar.update(len(block))
    return part


def _total_from_content_range(value: str) -> int | None:
    tail = value.rsplit("/", 1)[-1] if "/" in value else ""
    return int(tail) if tail.isdigit() else None


def _http_download(url: str, part: Path, rec: dict | None, progress: bool, timeout: float,
                   desc: str) -> bool:
    """One request. False when a resume was refused (the caller restarts from zero)."""
    have = part.stat().st_size if rec is not None else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = _strong_etag(rec.get("etag")) or rec.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: whole if the total agrees
            total = _total_from_content_range(exc.headers.get("Content-Range", ""))
            return total == have == rec.get("size")
        if exc.code in (404, 410):
            raise NotOnServer(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason}). Check the internet connection "
                            "or the mirror setting (IQALIB_MIRROR), or download the file by "
                            "hand.") from exc

    with resp:
        status = getattr(resp, "status", 200)
        if have and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            total = _total_from_content_range(content_range)
            fresh = _validators(resp.headers, total)
            if not content_range.startswith(f"bytes {have}-") or not _same_file(rec, fresh):
                return False  # another file, or another part of it: never splice
            mode = "ab"
        else:  # 200: the whole file (new, changed upstream, or no Range support)
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
            _write_source(part, {"url": url, **_validators(resp.headers, total)})
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
        except Exception as exc:  # OSError, http.client.IncompleteRead, ConnectionError ...
            raise DownloadError(f"{url}: transfer interrupted after {have + got} bytes "
                                f"({type(exc).__name__}: {exc}); the partial file {part} is "
                                "kept: re-run to resume.") from exc
    if expected_rest is not None and got < expected_rest:
        raise DownloadError(f"{url}: connection closed after {have + got} of {total} bytes; "
                            f"the partial file {part} is kept: re-run to resume.")
    if expected_rest is not None and got > expected_rest:
        discard_part(part)
        raise DownloadError(f"{url}: the server sent {have + got} bytes but announced {total}; "
                            "nothing was kept.")
    return True


def fetch_bytes(url: str, *, timeout: float = 30.0, reject_redirects_to: tuple[str, ...] = ()
                ) -> bytes:
    """Whole body of a small http(s):// or file:// resource (CSV files, single images).

    ``reject_redirects_to``: substrings of a final (redirected) URL that mean "not the file"
    (Flickr answers a deleted photo with a redirect to a placeholder image, status 200).
    A body shorter than the announced Content-Length raises :class:`DownloadError`; a 404 or a
    missing local file raises :class:`NotOnServer`.
    """
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme == "file" or (scheme == "" and Path(url).exists()):
        p = _file_url_path(url) if scheme == "file" else Path(url)
        try:
            return p.read_bytes()
        except FileNotFoundError as exc:
            raise NotOnServer(f"{url}: no such file") from exc
        except OSError as exc:
            raise DownloadError(f"{url}: {exc}") from exc
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL (http, https, file or a local path)")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            final = resp.geturl()
            if any(bad in final for bad in reject_redirects_to):
                raise DownloadError(f"{url}: redirected to {final} (the file is gone)")
            return resp.read()  # http.client raises IncompleteRead on a short body
    except urllib.error.HTTPError as exc:
        cls = NotOnServer if exc.code in (404, 410) else DownloadError
        raise cls(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    except Exception as exc:  # http.client.IncompleteRead and other protocol errors
        raise DownloadError(f"{url}: transfer failed ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def file_lock(target: Path):
    """Serialise work on ``target`` across processes (POSIX advisory lock on a hidden file in
    ``<folder>/.locks/``; on Windows no lock, still correct for a single process)."""
    locks = target.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / (target.name + ".lock"), "a+") as fh:
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


__all__ = [
    "MIRROR_ENV",
    "NotOnServer",
    "discard_part",
    "download_to_part",
    "fetch_bytes",
    "file_lock",
    "mirror_urls",
    "mirrors",
    "sha256_file",
    "source_record_path",
]
