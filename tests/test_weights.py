"""The checkpoint catalogue and downloader, against a local HTTP server and file:// URLs.

No test touches the internet: a test-only catalogue entry points at a server on 127.0.0.1
(:class:`iqalib.rehearsal.server.FileServer`: Range, ETag, dropped connections) or at a file://
URL. The downloads' no-lost-work guarantees and the mirrors are tested in test_download.py.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from iqalib import weights
from iqalib.errors import DownloadError, MissingWeightsError, UnknownNameError
from iqalib.rehearsal.server import FileServer

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # > 3 chunks, so resuming crosses chunk borders
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    """A local HTTP server with Range / ETag support (the one ``make rehearse`` uses)."""
    with FileServer() as srv:
        srv.files["/ckpt.pth"] = PAYLOAD
        yield srv


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
            assert u.startswith("https://") and u.endswith(s.filenames), u
        # torchvision / pyiqa file names carry the first 8 hex digits of the sha256
        m = re.search(r"-([0-9a-f]{8})\.pth$", s.filename)
        if m:
            assert s.sha256_prefix == m.group(1)
    assert "drive.google.com/file/d/1QwQUVbk6YVOJViCsOKYNykCsdJSVGRtb" in \
        weights.CATALOGUE["mprnet-deblur"].manual


def test_catalogue_sources_stated_upstream():
    """Facts from the upstream READMEs (LinearityIQA, swz30/MPRNet test scripts,
    katiashh/certified-iqa-defenses 'Used weights')."""
    cat = weights.CATALOGUE
    assert "drive.google.com/drive/folders/1H79ptqjcR4NH6HP4wLsEmqwhNqNNqXwh" in \
        cat["linearity-p1q2"].manual
    assert "pan.baidu.com" in cat["linearity-p1q2"].manual
    msu_drive = {"linearity-p1q2": "1fwP7rhwdWwUtV92kkdLx88SXq3SvxfRs",
                 "metaiqa": "19U_gHdK3Ld9uI23MABC14Pin9Vfw8AQM",
                 "spaq-baseline": "1mR6c8UfFaryZNXX-Wy1d0NHDOJl5vQX_",
                 "guided-diffusion-256-uncond": "1QrccFT48o2hEYsdpfLfsfPkNmIlYvvDz"}
    for name, file_id in msu_drive.items():
        assert f"drive.google.com/file/d/{file_id}" in cat[name].manual, name
    assert [cat[f"mprnet-{t}"].filename for t in ("denoise", "deblur", "derain")] == \
        ["model_denoising.pth", "model_deblurring.pth", "model_deraining.pth"]


def test_official_mprnet_name_and_msu_name_are_both_accepted(tmp_path, wdir, monkeypatch):
    wdir.mkdir(parents=True)
    (wdir / "mprnet_denoise.pth").write_bytes(b"from the MSU mirror")
    assert weights.path("mprnet-denoise") == wdir / "mprnet_denoise.pth"
    assert weights.verify(["mprnet-denoise"]) == {"mprnet-denoise": "ok (sha256 recorded now)"}
    (wdir / "model_deblurring.pth").write_bytes(b"from Google Drive")
    assert weights.path("mprnet-deblur") == wdir / "model_deblurring.pth"


def test_approximate_sizes_match_torchvision():
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    for name, w in (("torchvision-vgg16", VGG16_Weights), ("torchvision-alexnet", AlexNet_Weights)):
        mib = weights.CATALOGUE[name].approx_size / (1 << 20)
        assert abs(mib - w.IMAGENET1K_V1.meta["_file_size"]) < 0.01


def test_guided_diffusion_approx_size_is_its_parameter_count():
    from iqalib.defenses.guided_unet import build_unet

    n = sum(t.numel() for t in build_unet(device="meta").state_dict().values())
    assert weights.CATALOGUE["guided-diffusion-256-uncond"].approx_size == 4 * n


def test_list_shows_sizes_and_what_each_file_unlocks(tmp_path, wdir, monkeypatch, capsys):
    wdir.mkdir(parents=True)
    (wdir / "p1q2.pth").write_bytes(b"x" * 2_000_000)
    assert weights.cli(["list", "--no-unlocks"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and line.split()[0]
            in weights.CATALOGUE}
    assert "?" not in out
    assert "2.0 MB" in rows["linearity-p1q2"] and " yes " in rows["linearity-p1q2"]
    assert "~553.4 MB" in rows["torchvision-vgg16"] and " no " in rows["torchvision-vgg16"]
    assert "unknown" in rows["spaq-baseline"] and "browser" in rows["mprnet-deblur"]


def test_unlocks_reads_the_components_declarations():
    u = weights.unlocks()
    assert u["linearity-p1q2"] == ["metric linearity"]
    assert u["spaq-baseline"] == ["metric spaq"] and u["metaiqa"] == ["metric metaiqa"]
    assert set(u) >= set(weights.CATALOGUE)


class _Plain:
    weights = ("a", "b")


class _PerPreset:
    weights: ClassVar[dict] = {None: ("x",), "deblur": ("y",)}


def _factory(**kw) -> _Plain:
    return _Plain()


def test_unlocks_declaration_shapes():
    Plain, PerPreset, factory = _Plain, _PerPreset, _factory
    assert weights._declared_names(Plain.weights) == {None: ("a", "b")}
    assert weights._declared_names(PerPreset.weights) == {None: ("x",), "deblur": ("y",)}
    assert weights._declared_names(property(lambda self: 1)) is None
    assert Plain in weights._component_classes(factory)


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
    assert wrong in msg and SHA in msg and "discarded" in msg
    assert not (wdir / "test.pth").exists() and not (wdir / "test.pth.part").exists()


def test_recorded_sha256_is_enforced_on_later_fetch(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth")
    weights.fetch("test-ckpt", progress=False)
    server.files["/ckpt.pth"] = PAYLOAD[:-1] + b"x"  # upstream silently changed the file
    with pytest.raises(DownloadError, match="recorded by us"):
        weights.fetch("test-ckpt", progress=False, force=True)
    assert (wdir / "test.pth").read_bytes() == PAYLOAD  # the verified copy stays
    assert weights.forget("test-ckpt")
    assert weights.fetch("test-ckpt", progress=False, force=True).read_bytes() == \
        PAYLOAD[:-1] + b"x"


def test_sha256_prefix_checked(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256_prefix="deadbeef")
    with pytest.raises(DownloadError, match="deadbeef"):
        weights.fetch("test-ckpt", progress=False)
    monkeypatch.setitem(weights.CATALOGUE, "test-ckpt", weights.CATALOGUE["test-ckpt"].__class__(
        **{**weights.CATALOGUE["test-ckpt"].__dict__, "sha256_prefix": SHA[:8]}))
    assert weights.fetch("test-ckpt", progress=False).read_bytes() == PAYLOAD


def test_interrupted_download_resumes_with_range(server, wdir, monkeypatch):
    _entry(monkeypatch, server.url + "/ckpt.pth", sha256=SHA)
    server.cut["/ckpt.pth"] = len(PAYLOAD) // 2
    with pytest.raises(DownloadError, match="re-run to resume"):
        weights.fetch("test-ckpt", progress=False)
    part = wdir / "test.pth.part"
    assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert not (wdir / "test.pth").exists()
    have = part.stat().st_size
    p = weights.fetch("test-ckpt", progress=False)
    assert p.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1][:2] == ("/ckpt.pth", f"bytes={have}-")


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
    assert weights.cli(["list", "--no-unlocks"]) == 0
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
