"""Downloads that lose nothing (issue 14) and mirrors (issue 10), against a local HTTP server.

The server (:class:`iqalib.rehearsal.server.FileServer`, 127.0.0.1) speaks Range / ETag /
Last-Modified / If-Range like the real hosts, and can drop a connection mid-transfer, change a
file between requests, or ignore If-Range. Every test in the "lost work" section fails on the
downloader before this change (it deleted the verified file before a --force download, appended
to a .part whatever URL or upstream version it came from, and stopped at the first checksum
mismatch).
"""
from __future__ import annotations

import hashlib
import os

import pytest

from iqalib import download, weights
from iqalib.errors import DownloadError
from iqalib.rehearsal.server import FileServer

MB = 1 << 20
OLD = bytes(range(256)) * (3 * MB // 256) + b"old tail"     # > 3 chunks: resumes cross chunks
NEW = bytes(reversed(range(256))) * (3 * MB // 256) + b"new tail!"
SHA_OLD = hashlib.sha256(OLD).hexdigest()
SHA_NEW = hashlib.sha256(NEW).hexdigest()


@pytest.fixture
def srv():
    with FileServer() as s:
        yield s


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setenv("IQALIB_WEIGHTS", str(d))
    monkeypatch.delenv("IQALIB_MIRROR", raising=False)
    monkeypatch.delenv("IQALIB_CATALOGUE_OVERRIDES", raising=False)
    return d


def _entry(monkeypatch, url, *mirrors, sha256=None, **kw):
    s = weights.WeightSpec(name="t", filename="t.pth", url=url, mirrors=tuple(mirrors),
                           sha256=sha256, sha256_source="published" if sha256 else
                           "not yet recorded", licence="test", **kw)
    monkeypatch.setitem(weights.CATALOGUE, "t", s)
    return s


def _leftovers(d):
    """Partial files and their origin records left in the weights folder."""
    return sorted(p.name for p in d.glob("*.part*"))


# --- lost work (issue 14) ----------------------------------------------------------------------
def test_force_keeps_the_verified_file_when_the_new_download_fails(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth")
    p = weights.fetch("t", progress=False)
    srv.cut["/t.pth"] = MB  # the forced re-download breaks off halfway
    with pytest.raises(DownloadError, match="is kept"):
        weights.fetch("t", force=True, progress=False)
    assert p.read_bytes() == OLD and weights.path("t") == p


def test_force_keeps_the_verified_file_when_upstream_changed(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth")
    p = weights.fetch("t", progress=False)
    srv.files["/t.pth"] = NEW  # not what we recorded at the first download
    with pytest.raises(DownloadError, match="recorded by us") as ei:
        weights.fetch("t", force=True, progress=False)
    assert "weights forget t" in str(ei.value)
    assert p.read_bytes() == OLD and weights.is_available("t")
    assert _leftovers(wdir) == []


def test_force_replaces_only_after_the_new_file_verifies(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth", sha256=SHA_OLD)
    p = weights.fetch("t", progress=False)
    during = []
    real = weights.download_to_part

    def spy(*args, **kwargs):
        during.append(p.is_file() and p.read_bytes() == OLD)  # still there while downloading
        return real(*args, **kwargs)

    monkeypatch.setattr(weights, "download_to_part", spy)
    assert weights.fetch("t", force=True, progress=False).read_bytes() == OLD
    assert during == [True]


def test_resume_after_upstream_change_restarts_instead_of_splicing(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth")  # first download: no hash to catch a splice
    srv.cut["/t.pth"] = MB + 7
    with pytest.raises(DownloadError, match="re-run to resume"):
        weights.fetch("t", progress=False)
    srv.files["/t.pth"] = NEW  # upstream replaced the file between the two attempts
    p = weights.fetch("t", progress=False)
    assert p.read_bytes() == NEW
    assert weights.expected_sha256("t") == (SHA_NEW, "recorded by us")
    # the resume was conditional on the first version's ETag; the server sent the new file whole
    assert srv.requests[-1][1] == f"bytes={MB + 7}-" and srv.requests[-1][2].startswith('"')


def test_resume_against_a_server_that_ignores_if_range(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    srv.honour_if_range = False  # answers 206 with the new file's tail: we must notice
    _entry(monkeypatch, srv.url + "/t.pth")
    srv.cut["/t.pth"] = MB
    with pytest.raises(DownloadError):
        weights.fetch("t", progress=False)
    srv.files["/t.pth"] = NEW
    assert weights.fetch("t", progress=False).read_bytes() == NEW


def test_resume_against_the_same_file_appends(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth", sha256=SHA_OLD)
    srv.cut["/t.pth"] = 2 * MB + 3
    with pytest.raises(DownloadError, match="re-run to resume"):
        weights.fetch("t", progress=False)
    part = wdir / "t.pth.part"
    assert part.stat().st_size == 2 * MB + 3 and download.source_record_path(part).is_file()
    assert weights.fetch("t", progress=False).read_bytes() == OLD
    assert srv.requests[-1][1] == f"bytes={2 * MB + 3}-"
    assert _leftovers(wdir) == []


def test_a_mirror_never_finishes_another_urls_part(wdir, monkeypatch):
    with FileServer() as a, FileServer() as b:
        a.files["/t.pth"] = OLD  # an outdated copy that drops the connection
        a.cut["/t.pth"] = MB
        b.files["/t.pth"] = NEW
        _entry(monkeypatch, a.url + "/t.pth", b.url + "/t.pth")
        p = weights.fetch("t", progress=False)
        assert p.read_bytes() == NEW  # b's file from byte 0, not a's first MB + b's rest
        assert b.requests[-1][1] is None


def test_a_part_of_unknown_origin_is_not_resumed(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = NEW
    _entry(monkeypatch, srv.url + "/t.pth")
    wdir.mkdir(parents=True)
    (wdir / "t.pth.part").write_bytes(OLD[:MB])  # left by an older iqalib, or by hand
    assert weights.fetch("t", progress=False).read_bytes() == NEW
    assert srv.requests[-1][1] is None


def test_checksum_mismatch_tries_the_next_url(wdir, monkeypatch, capsys):
    with FileServer() as bad, FileServer() as good:
        bad.files["/t.pth"] = OLD[:-1] + b"X"  # corrupt on the first server
        good.files["/t.pth"] = OLD
        _entry(monkeypatch, bad.url + "/t.pth", good.url + "/t.pth", sha256=SHA_OLD)
        assert weights.fetch("t", progress=False).read_bytes() == OLD
        assert good.requests


# --- a corrupt file on the server (issue 10) ---------------------------------------------------
def test_corrupt_file_on_the_only_server_fails_clearly_and_leaves_nothing(srv, wdir, monkeypatch,
                                                                          capsys):
    srv.files["/t.pth"] = OLD[:-1] + b"X"
    _entry(monkeypatch, srv.url + "/t.pth", sha256=SHA_OLD)
    assert weights.cli(["fetch", "t", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "t: FAILED" in err and "fails its sha256 check" in err and SHA_OLD in err
    assert "discarded" in err
    assert not (wdir / "t.pth").exists() and _leftovers(wdir) == []


# --- mirrors -----------------------------------------------------------------------------------
def test_mirror_is_tried_before_the_official_url(srv, wdir, monkeypatch):
    srv.files["/m/weights/t.pth"] = OLD
    monkeypatch.setenv("IQALIB_MIRROR", srv.url + "/m")
    _entry(monkeypatch, "http://127.0.0.1:9/official/t.pth")  # nothing listens there
    assert weights.fetch("t", progress=False).read_bytes() == OLD
    assert weights.recorded_sha256()["t"]["origin"] == srv.url + "/m/weights/t.pth"


def test_several_mirrors_a_folder_and_a_browser_only_entry(srv, tmp_path, wdir, monkeypatch):
    folder = tmp_path / "lab-mirror"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "official-name.pth").write_bytes(NEW)  # only under the alias name
    monkeypatch.setenv("IQALIB_MIRROR", f"{srv.url}/empty/, {folder}")  # comma and space
    _entry(monkeypatch, None, manual="needs a browser", aliases=("official-name.pth",))
    assert weights.candidate_urls("t")[:2] == [srv.url + "/empty/weights/t.pth",
                                               srv.url + "/empty/weights/official-name.pth"]
    p = weights.fetch("t", progress=False)
    assert p.name == "t.pth" and p.read_bytes() == NEW  # saved under the catalogue's name
    assert [r[0] for r in srv.requests] == ["/empty/weights/t.pth",
                                            "/empty/weights/official-name.pth"]


def test_browser_only_entry_without_mirror_says_how(wdir, monkeypatch):
    _entry(monkeypatch, None, manual="open the Drive page")
    with pytest.raises(DownloadError, match="open the Drive page.*IQALIB_MIRROR"):
        weights.fetch("t", progress=False)


def test_mirror_urls_layout(monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_MIRROR", f"https://lab.example/iqalib {tmp_path}")
    assert download.mirror_urls("nips17/dev_dataset.csv") == [
        "https://lab.example/iqalib/nips17/dev_dataset.csv",
        tmp_path.resolve().as_uri() + "/nips17/dev_dataset.csv"]
    monkeypatch.delenv("IQALIB_MIRROR")
    assert download.mirror_urls("weights/x.pth") == []


# --- the downloader itself ---------------------------------------------------------------------
def test_file_url_resume_only_while_the_source_is_unchanged(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(OLD)
    part = tmp_path / "out" / "x.part"
    download.download_to_part(src.as_uri(), part, progress=False)
    assert part.read_bytes() == OLD
    part.write_bytes(OLD[:1000])  # as if interrupted after 1000 bytes
    assert download.download_to_part(src.as_uri(), part, progress=False).read_bytes() == OLD
    part.write_bytes(OLD[:1000])
    src.write_bytes(NEW)  # the source changed meanwhile
    os.utime(src, ns=(0, 10**9))
    assert download.download_to_part(src.as_uri(), part, progress=False).read_bytes() == NEW


def test_server_without_validators_resumes_by_size_only(srv, tmp_path):
    srv.validators = False
    srv.files["/x"] = OLD
    part = tmp_path / "x.part"
    srv.cut["/x"] = MB
    with pytest.raises(DownloadError):
        download.download_to_part(srv.url + "/x", part, progress=False)
    download.download_to_part(srv.url + "/x", part, progress=False)
    assert part.read_bytes() == OLD and srv.requests[-1][1] == f"bytes={MB}-"


def test_404_is_not_on_server(srv, tmp_path):
    with pytest.raises(download.NotOnServer):
        download.download_to_part(srv.url + "/nothing", tmp_path / "p.part", progress=False)
    with pytest.raises(download.NotOnServer):
        download.fetch_bytes(srv.url + "/nothing")
    with pytest.raises(download.NotOnServer):
        download.fetch_bytes((tmp_path / "nothing").as_uri())


def test_fetch_bytes_refuses_a_short_body(srv):
    srv.files["/img.jpg"] = OLD
    srv.cut["/img.jpg"] = 5000
    with pytest.raises(DownloadError, match="IncompleteRead|transfer failed"):
        download.fetch_bytes(srv.url + "/img.jpg")
    assert download.fetch_bytes(srv.url + "/img.jpg") == OLD


def test_an_unreachable_url_does_not_cost_another_urls_part(srv, wdir, monkeypatch):
    srv.files["/t.pth"] = OLD
    _entry(monkeypatch, srv.url + "/t.pth", "http://127.0.0.1:9/unreachable/t.pth")
    srv.cut["/t.pth"] = MB  # the first URL breaks off, the second cannot be reached
    with pytest.raises(DownloadError, match="every URL failed"):
        weights.fetch("t", progress=False)
    assert (wdir / "t.pth.part").stat().st_size == MB
    assert weights.fetch("t", progress=False).read_bytes() == OLD  # resumed from the first
    assert srv.requests[-1][1] == f"bytes={MB}-"
