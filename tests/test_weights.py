"""The checkpoint catalogue and downloader, against a local HTTP server and file:// URLs.

No test touches the internet: a test-only catalogue entry points at a server on 127.0.0.1
(with HTTP Range support, and a mode that drops the connection halfway) or at a file:// URL.
"""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from iqalib import weights
from iqalib.errors import DownloadError, MissingWeightsError, UnknownNameError

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # > 3 chunks, so resuming crosses chunk borders
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; can cut a reply halfway."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_next:
            srv.cut_next = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/ckpt.pth": PAYLOAD}
    srv.requests = []
    srv.ranges = True
    srv.cut_next = False
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setenv("IQALIB_WEIGHTS", str(d))
    return d


def _entry(monkeypatch, url, sha256=None, **kw):
    spec = weights.WeightSpec(name="test-ckpt", filename="test.pth", url=url, sha256=sha256,
                              sha256_source="published" if sha256 else "not yet recorded",
                              licence="test licence", **kw)
    monkeypatch.setitem(weights.CATALOGUE, "test-ckpt", spec)
    return spec


def test_catalogue_has_every_checkpoint_of_weights_md():
    names = {"linearity-p1q2", "spaq-baseline", "metaiqa", "dists", "lpips-alex", "lpips-vgg",
             "torchvision-vgg16", "torchvision-alexnet", "guided-diffusion-256-uncond",
             "realesr-general-x4v3", "realesr-general-wdn-x4v3", "mprnet-denoise",
             "mprnet-deblur", "mprnet-derain"}
    assert names <= set(weights.CATALOGUE)
    for name, s in weights.CATALOGUE.items():
        assert s.name == name and s.filename and s.licence and s.used_by
        assert s.url or s.manual, f"{name}: neither a URL nor manual instructions"
        assert s.sha256_source in {"published", "recorded by us", "not yet recorded"}
        for u in s.urls:
            assert u.startswith("https://") and u.endswith(s.filename), u
        # torchvision / pyiqa file names carry the first 8 hex digits of the sha256
        m = re.search(r"-([0-9a-f]{8})\.pth$", s.filename)
        if m:
            assert s.sha256_prefix == m.group(1)
    assert "drive.google.com/file/d/1QwQUVbk6YVOJViCsOKYNykCsdJSVGRtb" in \
        weights.CATALOGUE["mprnet-deblur"].manual


def _pyiqa_arch_source(name: str) -> str:
    """Text of an installed pyiqa arch file (read, not imported: importing pyiqa takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("pyiqa")
    return (Path(next(iter(spec.submodule_search_locations))) / "archs" / name).read_text()


def test_pyiqa_file_names_match_installed_pyiqa():
    src = _pyiqa_arch_source("metaiqa_arch.py")
    m = re.search(r"'meta-infer-ready':\s*get_url_from_name\('([^']+)'\)", src)
    assert m and m.group(1) == weights.CATALOGUE["metaiqa"].filename
    assert weights.CATALOGUE["dists"].filename in _pyiqa_arch_source("dists_arch.py")
    lp = _pyiqa_arch_source("lpips_arch.py")
    assert weights.CATALOGUE["lpips-alex"].filename in lp
    assert weights.CATALOGUE["lpips-vgg"].filename in lp


def test_http_fetch_success_records_sha256(server, wdir, monkeypatch, capsys):
    _entry(monkeypatch, server.url + "/ckpt.pth")
    p = weights.fetch("test-ckpt", progress=False)
    assert p == wdir / "test.pth" and p.read_bytes() == PAYLOAD
    assert not (wdir / "test.pth.part").exists()
    assert weights.expected_sha256("test-ckpt") == (SHA, "recorded by us")
    assert "test licence" in capsys.readouterr().out
    assert weights.path("test-ckpt") == p and weights.is_available("test-ckpt")
    # a second fetch is a no-op (no new request)
    n = len(server.requests)
    weights.fetch("test-ckpt", progress=False)
    assert len(server.requests) == n


def test_published_sha256_mismatch_keeps_nothing(server, wdir, monkeypatch):
    wrong = "0" * 64
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=wrong)
    with pytest.raises(DownloadError) as ei:
        weights.fetch("test-ckpt", progress=False)
    msg = str(ei.value)
    assert wrong in msg and SHA in msg and "Nothing was kept" in msg
    assert not (wdir / "test.pth").exists() and not (wdir / "test.pth.part").exists()


def test_recorded_sha256_is_enforced_on_later_fetch(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth")
    weights.fetch("test-ckpt", progress=False)
    server.files["/ckpt.pth"] = PAYLOAD[:-1] + b"x"  # upstream silently changed the file
    with pytest.raises(DownloadError, match="recorded by us"):
        weights.fetch("test-ckpt", progress=False, force=True)
    assert not (wdir / "test.pth").exists()


def test_sha256_prefix_checked(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256_prefix="deadbeef")
    with pytest.raises(DownloadError, match="deadbeef"):
        weights.fetch("test-ckpt", progress=False)
    monkeypatch.setitem(weights.CATALOGUE, "test-ckpt", weights.CATALOGUE["test-ckpt"].__class__(
        **{**weights.CATALOGUE["test-ckpt"].__dict__, "sha256_prefix": SHA[:8]}))
    assert weights.fetch("test-ckpt", progress=False).read_bytes() == PAYLOAD


def test_interrupted_download_resumes_with_range(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=SHA)
    server.cut_next = True
    with pytest.raises(DownloadError, match="re-run to resume"):
        weights.fetch("test-ckpt", progress=False)
    part = wdir / "test.pth.part"
    assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert not (wdir / "test.pth").exists()
    have = part.stat().st_size
    p = weights.fetch("test-ckpt", progress=False)
    assert p.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/ckpt.pth", f"bytes={have}-")


def test_precreated_part_is_completed_by_range_request(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=SHA)
    wdir.mkdir(parents=True)
    half = len(PAYLOAD) // 2
    (wdir / "test.pth.part").write_bytes(PAYLOAD[:half])
    weights.fetch("test-ckpt", progress=False)
    assert (wdir / "test.pth").read_bytes() == PAYLOAD
    assert server.requests == [("/ckpt.pth", f"bytes={half}-")]


def test_server_without_range_support_restarts(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=SHA)
    server.ranges = False
    wdir.mkdir(parents=True)
    (wdir / "test.pth.part").write_bytes(b"garbage from another attempt")
    assert weights.fetch("test-ckpt", progress=False).read_bytes() == PAYLOAD


def test_file_url_fetch_and_resume(tmp_path, wdir, monkeypatch):
    src = tmp_path / "src.pth"
    src.write_bytes(PAYLOAD)
    _entry(monkeypatch, src.as_uri(), sha256=SHA)
    wdir.mkdir(parents=True)
    (wdir / "test.pth.part").write_bytes(PAYLOAD[:1000])
    assert weights.fetch("test-ckpt", progress=False).read_bytes() == PAYLOAD


def test_url_override_and_unreachable_url(tmp_path, wdir, monkeypatch):
    _entry(monkeypatch, "http://127.0.0.1:9/nothing-listens-here.pth")
    with pytest.raises(DownloadError, match="every URL failed"):
        weights.fetch("test-ckpt", progress=False)
    src = tmp_path / "x.pth"
    src.write_bytes(b"abc")
    assert weights.fetch("test-ckpt", progress=False, url=src.as_uri()).read_bytes() == b"abc"


def test_missing_file_error_names_make_target(wdir):
    with pytest.raises(MissingWeightsError) as ei:
        weights.path("spaq-baseline")
    msg = str(ei.value)
    assert "make weights WEIGHTS=spaq-baseline" in msg
    assert "drive.google.com/file/d/1pXjXAIItViTFs7qUBY-b11WY50mzoVM2" in msg
    assert not weights.is_available("spaq-baseline")
    with pytest.raises(MissingWeightsError, match="browser"):
        weights.path("mprnet-derain")


def test_browser_only_entry_fetch_says_what_to_do(wdir):
    with pytest.raises(DownloadError, match="drive.google.com"):
        weights.fetch("mprnet-deblur", progress=False)


def test_unknown_name_suggests(wdir):
    with pytest.raises(UnknownNameError, match="lpips-alex"):
        weights.path("lpips-alx")


def test_corrupted_local_file_detected_after_recording(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth")
    p = weights.fetch("test-ckpt", progress=False)
    with open(p, "r+b") as fh:  # flip one byte, keep size; mtime changes so cache is bypassed
        fh.seek(10)
        b = fh.read(1)
        fh.seek(10)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS=test-ckpt"):
        weights.path("test-ckpt")
    # fetch notices and replaces the bad copy
    assert weights.fetch("test-ckpt", progress=False).read_bytes() == PAYLOAD


def test_verification_is_cached_by_mtime_and_size(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=SHA)
    weights.fetch("test-ckpt", progress=False)
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        weights.path("test-ckpt")
    assert calls == []
    os.utime(wdir / "test.pth", ns=(0, 10**9))
    weights.path("test-ckpt")
    assert len(calls) == 1


def test_load_state_roundtrip_and_key(tmp_path, wdir, monkeypatch):
    sd = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "k": torch.tensor([1.0, 2, 3])}
    src = tmp_path / "good.pth"
    torch.save(sd, src)
    _entry(monkeypatch, src.as_uri())
    weights.fetch("test-ckpt", progress=False)
    got = weights.load_state("test-ckpt")
    assert torch.equal(got["state_dict"]["w"], sd["state_dict"]["w"])
    assert torch.equal(weights.load_state("test-ckpt", key="k"), sd["k"])
    with pytest.raises(KeyError, match="state_dict"):
        weights.load_state("test-ckpt", key="params")


def test_load_state_accepts_numpy_arrays_but_not_arbitrary_objects(tmp_path, wdir, monkeypatch):
    import numpy as np

    src = tmp_path / "np.pth"
    torch.save({"k": np.array([1.5, 2.0]), "model": {"w": torch.ones(2)}}, src)
    _entry(monkeypatch, src.as_uri())
    weights.fetch("test-ckpt", progress=False)
    got = weights.load_state("test-ckpt")
    assert np.allclose(got["k"], [1.5, 2.0])


def test_corrupt_checkpoint_load_state_error(tmp_path, wdir, monkeypatch):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated zip
    _entry(monkeypatch, bad.as_uri())
    weights.fetch("test-ckpt", progress=False)
    with pytest.raises(MissingWeightsError) as ei:
        weights.load_state("test-ckpt")
    assert "test.pth" in str(ei.value) and "make weights WEIGHTS=test-ckpt" in str(ei.value)


def test_verify_records_hand_placed_file(wdir, monkeypatch):
    _entry(monkeypatch, None, manual="download it by hand")
    wdir.mkdir(parents=True)
    (wdir / "test.pth").write_bytes(PAYLOAD)
    assert weights.verify(["test-ckpt"]) == {"test-ckpt": "ok (sha256 recorded now)"}
    assert weights.expected_sha256("test-ckpt")[0] == SHA
    (wdir / "test.pth").write_bytes(PAYLOAD[::-1])
    assert weights.verify(["test-ckpt"])["test-ckpt"].startswith("BAD")


def test_cli_fetch_all_keeps_going_and_fails_at_end(tmp_path, wdir, monkeypatch, capsys):
    src = tmp_path / "s.pth"
    src.write_bytes(b"payload")
    small = {"a-ok": weights.WeightSpec("a-ok", "a.pth", src.as_uri(), licence="L", used_by="t"),
             "b-manual": weights.WeightSpec("b-manual", "b.pth", None, licence="L",
                                            manual="open the Drive page", used_by="t"),
             "c-ok": weights.WeightSpec("c-ok", "c.pth", src.as_uri(), licence="L", used_by="t")}
    monkeypatch.setattr(weights, "CATALOGUE", small)
    rc = weights.cli(["fetch", "all", "--no-progress"])
    out = capsys.readouterr()
    assert rc == 1
    assert (wdir / "a.pth").exists() and (wdir / "c.pth").exists()
    assert "open the Drive page" in out.err and "b-manual" in out.err
    assert weights.cli(["list"]) == 0
    assert "a-ok" in capsys.readouterr().out
    assert weights.cli(["verify"]) == 0


@pytest.mark.slow
def test_python_m_iqalib_weights_list_runs(wdir):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "iqalib", "weights", "list"], check=False,
                       capture_output=True,
                       text=True, timeout=120, env={**os.environ, "IQALIB_WEIGHTS": str(wdir)},
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert "guided-diffusion-256-uncond" in r.stdout


def test_load_state_refuses_arbitrary_python_objects(tmp_path, wdir, monkeypatch):
    import datetime

    from iqalib.errors import IqalibError

    src = tmp_path / "obj.pth"
    torch.save({"when": datetime.date(2020, 1, 2)}, src)
    _entry(monkeypatch, src.as_uri())
    weights.fetch("test-ckpt", progress=False)
    with pytest.raises(IqalibError, match="cannot be loaded safely"):
        weights.load_state("test-ckpt")


def test_torchvision_urls_match_installed_torchvision():
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    assert weights.CATALOGUE["torchvision-vgg16"].url == VGG16_Weights.IMAGENET1K_V1.url
    assert weights.CATALOGUE["torchvision-alexnet"].url == AlexNet_Weights.IMAGENET1K_V1.url
