"""A small HTTP file server on 127.0.0.1 that stands in for the internet.

Used by ``make rehearse`` (a mirror of checkpoints and the NIPS'17 data) and by the download
tests. It behaves like the servers the real downloads meet (GitHub releases, Hugging Face, Azure
blob storage, Flickr): ``Range: bytes=a-`` / ``a-b`` answered with 206 and ``Content-Range``,
strong ``ETag`` and ``Last-Modified`` validators, ``If-Range`` (a changed file is sent whole
with 200), 404, 416 and redirects. Faults are switched on per path: drop the connection after
n bytes (:attr:`FileServer.cut`), ignore ``If-Range`` or Range altogether, omit validators.

>>> with FileServer(root="mirror/") as srv:       # doctest: +SKIP
...     srv.files["/weights/x.pth"] = b"..."      # in-memory files win over the folder
...     srv.cut["/weights/x.pth"] = 1000           # the next reply stops after 1000 bytes
...     url = srv.url + "/weights/x.pth"
"""
from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Entry:
    """What the server knows about one served file: its bytes (or path) and validators."""

    def __init__(self, size: int, etag: str, mtime: float, data: bytes | None = None,
                 path: Path | None = None):
        self.size, self.etag, self.mtime, self.data, self.path = size, etag, mtime, data, path

    def read(self, start: int, end: int):
        """Yield the bytes ``start..end`` (inclusive) in chunks."""
        if self.data is not None:
            for i in range(start, end + 1, _CHUNK):
                yield self.data[i:min(i + _CHUNK, end + 1)]
            return
        with open(self.path, "rb") as fh:
            fh.seek(start)
            left = end + 1 - start
            while left > 0:
                block = fh.read(min(_CHUNK, left))
                if not block:
                    return
                left -= len(block)
                yield block


class _MemoryFiles(dict):
    """``path -> bytes``; every assignment is a new version (new ETag, later Last-Modified)."""

    def __init__(self):
        super().__init__()
        self.versions: dict[str, float] = {}
        self._clock = time.time() - 3600.0

    def __setitem__(self, key: str, value: bytes) -> None:
        self._clock += 2.0  # HTTP dates have 1 s resolution: every version gets a later one
        self.versions[key] = self._clock
        super().__setitem__(key, bytes(value))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer._HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test and rehearsal output clean
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        owner.requests.append((path, self.headers.get("Range"), self.headers.get("If-Range")))
        if path in owner.redirects:
            self.send_response(302)
            self.send_header("Location", owner.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        entry = owner.entry(path)
        if entry is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end, status = 0, entry.size - 1, 200
        rng = self.headers.get("Range") if owner.ranges else None
        if rng and self._if_range_holds(entry):
            m = _RANGE.match(rng.strip())
            if m and m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), entry.size - 1) if m.group(2) else entry.size - 1
                if start >= entry.size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{entry.size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        if owner.validators:
            self.send_header("ETag", entry.etag)
            self.send_header("Last-Modified", email.utils.formatdate(entry.mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes" if owner.ranges else "none")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start))
        self.end_headers()
        if not body:
            return
        budget = owner.cut.pop(path, None) if body else None
        sent = 0
        for block in entry.read(start, end):
            if budget is not None and sent + len(block) >= budget:
                self.wfile.write(block[:max(0, budget - sent)])
                self.wfile.flush()
                self.close_connection = True  # the client sees a short body: a dropped transfer
                return
            self.wfile.write(block)
            sent += len(block)

    def _if_range_holds(self, entry: _Entry) -> bool:
        """RFC 9110 13.1.5: with ``If-Range`` the range applies only to the same file."""
        cond = self.headers.get("If-Range")
        if cond is None or not self.server.owner.honour_if_range:
            return True
        if cond.startswith(('"', "W/")):
            return cond == entry.etag
        try:
            when = email.utils.parsedate_to_datetime(cond).timestamp()
        except (TypeError, ValueError):
            return False
        return int(when) == int(entry.mtime)


class FileServer:
    """Serve ``files`` (URL path -> bytes) and the folder ``root`` on 127.0.0.1, in a thread.

    Attributes you may change while it runs: ``files`` (in-memory files; assigning a path again
    changes its ETag and Last-Modified, as an upstream edit would), ``cut`` (path -> n: the next
    reply on that path stops after n body bytes and closes the connection), ``redirects``
    (path -> location, answered with 302), ``ranges`` (False: ignore Range, always 200),
    ``honour_if_range`` (False: a server that ignores If-Range), ``validators`` (False: send no
    ETag / Last-Modified). ``requests`` lists ``(path, Range, If-Range)`` of every request.
    ``port=0`` picks a free port; :attr:`url` is the base URL without a trailing slash.
    """

    class _HTTPServer(http.server.ThreadingHTTPServer):
        daemon_threads = True
        owner: FileServer

    def __init__(self, root: str | os.PathLike | None = None, *, port: int = 0):
        self.root = Path(root).resolve() if root is not None else None
        self.files: _MemoryFiles = _MemoryFiles()
        self.cut: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.ranges = True
        self.honour_if_range = True
        self.validators = True
        self._httpd = self._HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def entry(self, path: str) -> _Entry | None:
        """The served file at URL ``path`` (in-memory first, then under ``root``), or None."""
        if path in self.files:
            data = self.files[path]
            etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
            return _Entry(len(data), etag, self.files.versions[path], data=data)
        if self.root is None:
            return None
        f = (self.root / path.lstrip("/")).resolve()
        if not f.is_file() or self.root not in f.parents:
            return None
        st = f.stat()
        return _Entry(st.st_size, f'"{st.st_size:x}-{st.st_mtime_ns:x}"', st.st_mtime, path=f)

    def start(self) -> FileServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["FileServer"]
