"""iqalib.datasets: the offline sample set, folders, and the NIPS 2017 fetcher (offline)."""
from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from iqalib import datasets
from iqalib.datasets import MissingDataError, build_samples, fetch_nips17, load_dataset
from iqalib.errors import ImageError, UnknownNameError
from iqalib.images import load_image


@pytest.fixture(scope="session")
def samples_root(tmp_path_factory):
    """The sample set, built once per session in a temp data dir."""
    data = tmp_path_factory.mktemp("data")
    return build_samples(data / "samples")


@pytest.fixture
def data_env(samples_root, monkeypatch):
    monkeypatch.setenv("IQALIB_DATA", str(samples_root.parent))
    return samples_root.parent


def test_sample_set_contents(samples_root):
    man = pd.read_csv(samples_root / "manifest.csv", dtype=str)
    assert 20 <= len(man) <= 26
    for col in ("image_id", "source_package", "source_file", "licence", "crop_left",
                "crop_top", "crop_right", "crop_bottom", "sha256"):
        assert col in man.columns and (man[col] != "").all(), col
    assert man["image_id"].is_unique
    assert {"scikit-image", "scikit-learn", "matplotlib"} <= set(man["source_package"])
    for _, r in man.iterrows():
        p = samples_root / r["file"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == r["sha256"]
        with Image.open(p) as im:
            assert im.size == (299, 299) and im.mode == "RGB"
    lic = dict(zip(man["image_id"], man["licence"]))
    assert "CC0" in lic["chelsea_l"] and "CC-BY-2.0" in lic["china_l"]
    # nothing is copied into the repository: the sources are the installed packages
    assert all("site-packages" not in f for f in man["source_file"])


def test_sample_crops_match_an_independent_cut(samples_root):
    """astronaut: the whole 512 square; chelsea (451x300): left and right 300 squares."""
    from skimage import data

    def cut(arr, box):
        return np.asarray(Image.fromarray(arr).crop(box).resize((299, 299), Image.LANCZOS))

    got = np.asarray(Image.open(samples_root / "astronaut.png"))
    np.testing.assert_array_equal(got, cut(data.astronaut(), (0, 0, 512, 512)))
    cat = data.chelsea()
    np.testing.assert_array_equal(np.asarray(Image.open(samples_root / "chelsea_l.png")),
                                  cut(cat, (0, 0, 300, 300)))
    np.testing.assert_array_equal(np.asarray(Image.open(samples_root / "chelsea_r.png")),
                                  cut(cat, (151, 0, 451, 300)))


@pytest.mark.slow
def test_sample_build_is_deterministic_and_safe_concurrently(samples_root, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two builders of one folder: one builds, one waits
        roots = list(pool.map(build_samples, [tmp_path / "s2", tmp_path / "s2"]))
    assert roots == [tmp_path / "s2"] * 2
    a = pd.read_csv(samples_root / "manifest.csv", dtype=str)
    b = pd.read_csv(roots[0] / "manifest.csv", dtype=str)
    assert a.equals(b)  # same sha256 for every PNG: byte-identical rebuild
    assert not list((tmp_path / "s2").glob("*.tmp"))


def test_build_samples_reuses_and_rebuilds(samples_root, tmp_path):
    mtime = (samples_root / "manifest.csv").stat().st_mtime_ns
    assert build_samples(samples_root) == samples_root
    assert (samples_root / "manifest.csv").stat().st_mtime_ns == mtime  # not rebuilt


def test_load_dataset_samples(data_env):
    ds = load_dataset("samples")
    assert ds.name == "samples" and len(ds) == len(ds.ids) == len(ds.manifest)
    assert list(ds.manifest["image_id"]) == ds.ids
    x = ds.load(ds.ids[0])
    assert x.shape == (1, 3, 299, 299) and 0 <= x.min() and x.max() <= 1
    b = ds.batch(ds.ids[:3])
    assert b.shape == (3, 3, 299, 299)
    assert torch.equal(b[1:2], ds.load(ds.ids[1]))
    small = load_dataset("samples", n=4, size=64)
    assert small.ids == ds.ids[:4]
    assert small.batch().shape == (4, 3, 64, 64)
    got = list(small)
    assert [i for i, _ in got] == small.ids and got[0][1].shape == (1, 3, 64, 64)
    assert ds.subset(2).ids == ds.ids[:2] and len(ds.subset(2).manifest) == 2
    with pytest.raises(UnknownNameError, match="astronaut"):
        ds.load("astronot")


def test_unknown_name_and_missing_nips(data_env):
    with pytest.raises(UnknownNameError, match="samples"):
        load_dataset("sampels")
    with pytest.raises(MissingDataError, match="make data"):
        load_dataset("nips17")


def _write(p, arr, **kw):
    Image.fromarray(arr).save(p, **kw)


def test_folder_mixed_sizes_and_unreadable(tmp_path):
    from skimage import data

    d = tmp_path / "imgs"
    d.mkdir()
    _write(d / "b.png", data.astronaut()[:64, :80])
    _write(d / "a.jpg", data.coffee()[:70, :70], quality=95)
    (d / "c.png").write_bytes(b"not a png")
    (d / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="c.png"):
        ds = load_dataset(d)
    assert ds.ids == ["a", "b"]
    assert [f for f, _ in ds.skipped] == ["c.png"]
    assert ds.manifest[["width", "height"]].values.tolist() == [[70, 70], [80, 64]]
    with pytest.raises(ImageError, match="size="):
        ds.batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = load_dataset(d, size=48)
    b = fitted.batch()
    assert b.shape == (2, 3, 48, 48)
    # fitting a square image to a square size is a plain resize of the whole image
    ref = torch.nn.functional.interpolate(load_image(d / "a.jpg"), size=(48, 48), mode="bicubic",
                                          antialias=True, align_corners=False).clamp(0, 1)
    assert (b[0:1] - ref).abs().max() < 1e-5
    with pytest.raises(ImageError, match="no readable images"):
        (tmp_path / "empty").mkdir()
        load_dataset(tmp_path / "empty")


def test_folder_manifest_columns_are_merged(tmp_path):
    from skimage import data

    d = tmp_path / "f"
    d.mkdir()
    _write(d / "x1.png", data.astronaut()[:40, :40])
    pd.DataFrame({"image_id": ["x1"], "licence": ["CC0"]}).to_csv(d / "manifest.csv", index=False)
    ds = load_dataset(d)
    assert ds.manifest.loc[0, "licence"] == "CC0"


# --- NIPS 2017 ---------------------------------------------------------------------------------
FIELDS = ["ImageId", "URL", "x1", "y1", "x2", "y2", "TrueLabel", "TargetClass",
          "OriginalLandingURL", "License", "Author", "AuthorProfileURL"]


def _nips_sources(tmp_path):
    from skimage import data

    src = tmp_path / "flickr"
    src.mkdir()
    _write(src / "one.jpg", data.coffee(), quality=92)       # 600x400
    _write(src / "two.png", data.astronaut())                 # 512x512
    lic = "https://creativecommons.org/licenses/by/2.0/"
    rows = [
        {"ImageId": "aaaa000000000001", "URL": (src / "one.jpg").as_uri(), "x1": "0.25",
         "y1": "0.0", "x2": "1.0", "y2": "0.75", "TrueLabel": "968", "TargetClass": "12",
         "License": lic, "Author": "Chemie-Verb\\303\\244nde"},
        {"ImageId": "aaaa000000000002", "URL": (src / "two.png").as_uri(), "x1": "0.0",
         "y1": "0.333333333333", "x2": "0.5", "y2": "1.0", "TrueLabel": "1", "TargetClass": "2",
         "License": lic, "Author": "B"},
        {"ImageId": "aaaa000000000003", "URL": (src / "gone.jpg").as_uri(), "x1": "0", "y1": "0",
         "x2": "1", "y2": "1", "TrueLabel": "3", "TargetClass": "4", "License": "", "Author": "C"},
    ]
    csv_p = tmp_path / "dev_dataset.csv"
    with open(csv_p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, restval="")
        w.writeheader()
        w.writerows(rows)
    return csv_p, src


def _official(path, box):
    """The cleverhans procedure, written out independently for the check."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    im = im.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return np.asarray(im.resize((299, 299), Image.LANCZOS))


def test_nips17_fetch_from_file_urls_resumes_and_reports(tmp_path, monkeypatch, capsys):
    csv_p, src = _nips_sources(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setenv("IQALIB_DATA", str(data))
    rc = datasets.cli(["fetch", "nips17", "--from", str(csv_p), "--no-progress"])
    assert rc == 1  # one image failed
    err = capsys.readouterr().err
    assert "aaaa000000000003" in err and "failed" in err
    root = data / "nips17"
    man = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    assert man["status"].tolist()[:2] == ["ok", "ok"] and man["status"][2].startswith("failed")
    assert man["author"][0] == "Chemie-Verbände"
    got = np.asarray(Image.open(root / "aaaa000000000001.png"))
    np.testing.assert_array_equal(got, _official(src / "one.jpg", (0.25, 0, 1, 0.75)))
    np.testing.assert_array_equal(np.asarray(Image.open(root / "aaaa000000000002.png")),
                                  _official(src / "two.png", (0, 0.333333333333, 0.5, 1)))
    assert man["sha256"][0] == hashlib.sha256((root / "aaaa000000000001.png").read_bytes()
                                              ).hexdigest()
    ds = load_dataset("nips17")
    assert ds.ids == ["aaaa000000000001", "aaaa000000000002"]
    assert ds.batch().shape == (2, 3, 299, 299)
    assert ds.manifest["TrueLabel"].tolist() == ["968", "1"]

    # rerun: finished images are kept as they are, the failed one is retried and now works
    mtime = (root / "aaaa000000000001.png").stat().st_mtime_ns
    _write(src / "gone.jpg", np.zeros((64, 64, 3), np.uint8))
    man2 = fetch_nips17(source=csv_p, progress=False)
    assert (man2["status"] == "ok").all()
    assert (root / "aaaa000000000001.png").stat().st_mtime_ns == mtime
    assert len(load_dataset("nips17")) == 3


def test_nips17_fetch_over_http_and_flickr_placeholder(tmp_path):
    csv_p, src = _nips_sources(tmp_path)
    handler = functools.partial(_QuietHandler, directory=str(src))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        # the CSV and the images both come over HTTP, as from GitHub and Flickr
        text = csv_p.read_text().replace(src.as_uri(), base).replace("/gone.jpg", "/deleted.jpg")
        (src / "dev.csv").write_text(text)
        man = fetch_nips17(tmp_path / "out", csv_url=base + "/dev.csv", progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert man["status"].tolist()[:2] == ["ok", "ok"] and len(man) == 3
    assert "photo_unavailable" in man["status"][2]  # a placeholder is not the photo
    assert not (tmp_path / "out" / "aaaa000000000003.png").exists()
    # the CSV is kept next to the images, as fetched
    assert (tmp_path / "out" / "dev_dataset.csv").read_text() == (src / "dev.csv").read_text()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "aaaa000000000001.png")),
                                  _official(src / "one.jpg", (0.25, 0, 1, 0.75)))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``/deleted.jpg`` redirects to a placeholder, as Flickr does."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/deleted.jpg":
            self.send_response(302)
            self.send_header("Location", "/images/photo_unavailable.png")
            self.end_headers()
            return
        if self.path == "/images/photo_unavailable.png":
            self.path = "/two.png"  # any valid image: it must still be refused
        super().do_GET()


def test_nips17_from_kaggle_folder(tmp_path):
    csv_p, _ = _nips_sources(tmp_path)
    kaggle = tmp_path / "kaggle"
    (kaggle / "images").mkdir(parents=True)
    (kaggle / "images.csv").write_text(csv_p.read_text())
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        _write(kaggle / "images" / f"aaaa00000000000{i}.png",
               rng.integers(0, 256, (299, 299, 3), dtype=np.uint8))
    man = fetch_nips17(tmp_path / "out", source=kaggle, progress=False)
    assert (man["status"] == "ok").all()
    for i in (1, 2, 3):
        a = np.asarray(Image.open(kaggle / "images" / f"aaaa00000000000{i}.png"))
        b = np.asarray(Image.open(tmp_path / "out" / f"aaaa00000000000{i}.png"))
        np.testing.assert_array_equal(a, b)


def test_cli_samples_prints_summary(samples_root, capsys):
    assert datasets.cli_samples(["--root", str(samples_root)]) == 0
    out = capsys.readouterr().out
    assert "299x299" in out and "scikit-image" in out


# --- NIPS 2017 through a mirror; nothing lost, nothing silently wrong (issues 10, 14) -----------
def _serve_nips(srv, tmp_path):
    """The CSV of :func:`_nips_sources` on the server's mirror path, its photos under /flickr."""
    csv_p, src = _nips_sources(tmp_path)
    text = csv_p.read_text().replace(src.as_uri(), srv.url + "/flickr")
    for f in src.iterdir():
        srv.files[f"/flickr/{f.name}"] = f.read_bytes()
    srv.files["/m/nips17/dev_dataset.csv"] = text.encode()
    return text, src


@pytest.fixture
def srv():
    from iqalib.rehearsal.server import FileServer

    with FileServer() as s:
        yield s


def test_nips17_through_a_mirror_uses_its_ready_pngs_then_the_urls(srv, tmp_path, monkeypatch):
    _serve_nips(srv, tmp_path)
    ready = np.random.default_rng(1).integers(0, 256, (299, 299, 3), dtype=np.uint8)
    _write(tmp_path / "ready.png", ready)
    srv.files["/m/nips17/images/aaaa000000000002.png"] = (tmp_path / "ready.png").read_bytes()
    monkeypatch.setenv("IQALIB_MIRROR", srv.url + "/m")
    man = fetch_nips17(tmp_path / "out", progress=False)
    assert man["status"].tolist()[:2] == ["ok", "ok"]
    assert man["fetched_from"][1].endswith("/m/nips17/images/aaaa000000000002.png")
    assert man["fetched_from"][0] == srv.url + "/flickr/one.jpg"
    out = tmp_path / "out"
    assert (out / "aaaa000000000002.png").read_bytes() == (tmp_path / "ready.png").read_bytes()
    assert srv.requests[0][0] == "/m/nips17/dev_dataset.csv"  # the mirror before GitHub


def test_nips17_a_bad_copy_costs_only_itself(srv, tmp_path, monkeypatch, capsys):
    _serve_nips(srv, tmp_path)
    good = (tmp_path / "flickr" / "one.jpg").read_bytes()
    srv.files["/m/nips17/images/aaaa000000000001.png"] = b"\x89PNG\r\n\x1a\n broken"
    srv.files["/flickr/two.png"] = srv.files["/flickr/two.png"][:5000] + b"\0" * 100  # truncated
    monkeypatch.setenv("IQALIB_MIRROR", srv.url + "/m")
    rc = datasets.cli(["fetch", "nips17", "--root", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1
    man = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    # the broken mirror PNG fell back to the photo's URL; the truncated photo failed alone
    assert man["status"][0] == "ok" and man["fetched_from"][0].endswith("/flickr/one.jpg")
    assert man["status"][1].startswith("failed") and man["status"][2].startswith("failed")
    assert not (tmp_path / "out" / "aaaa000000000002.png").exists()
    assert good and "aaaa000000000002" in capsys.readouterr().err


def test_nips17_resume_keeps_only_whole_images_of_the_same_row(srv, tmp_path):
    text, _ = _serve_nips(srv, tmp_path)
    out = tmp_path / "out"
    url = srv.url + "/m/nips17/dev_dataset.csv"
    fetch_nips17(out, csv_url=url, progress=False)
    p1, p2 = out / "aaaa000000000001.png", out / "aaaa000000000002.png"
    mtime1 = p1.stat().st_mtime_ns
    p2.write_bytes(p2.read_bytes()[:3000])  # a damaged file (a copy cut short, a full disk)
    # upstream corrected the first row's crop box: its old image is not that row's image
    srv.files["/m/nips17/dev_dataset.csv"] = text.replace(
        "aaaa000000000001,", "aaaa000000000001,", 1).replace("0.25,0.0,1.0,0.75", "0.0,0.0,1.0,1.0",
                                                             1).encode()
    man = fetch_nips17(out, csv_url=url, progress=False)
    assert man["status"].tolist()[:2] == ["ok", "ok"]
    assert p1.stat().st_mtime_ns != mtime1
    np.testing.assert_array_equal(np.asarray(Image.open(p1)),
                                  _official(tmp_path / "flickr" / "one.jpg", (0, 0, 1, 1)))
    np.testing.assert_array_equal(np.asarray(Image.open(p2)),
                                  _official(tmp_path / "flickr" / "two.png",
                                            (0, 0.333333333333, 0.5, 1)))
    mtime1 = p1.stat().st_mtime_ns
    fetch_nips17(out, csv_url=url, progress=False)  # nothing changed: nothing is fetched again
    assert p1.stat().st_mtime_ns == mtime1


def test_nips17_a_run_that_fetches_nothing_exits_nonzero(srv, tmp_path, capsys):
    header = ",".join(FIELDS) + "\n"
    srv.files["/empty.csv"] = header.encode()
    rc = datasets.cli(["fetch", "nips17", "--root", str(tmp_path / "o"), "--csv-url",
                       srv.url + "/empty.csv", "--no-progress"])
    assert rc == 1 and "lists no images" in capsys.readouterr().err
    srv.files["/gone.csv"] = (header + "bbbb000000000001," + srv.url + "/nothing.jpg,0,0,1,1,1,2,"
                              ",,,\n").encode()
    rc = datasets.cli(["fetch", "nips17", "--root", str(tmp_path / "o"), "--csv-url",
                       srv.url + "/gone.csv", "--no-progress"])
    assert rc == 1 and "no image could be fetched" in capsys.readouterr().err
    assert datasets.cli(["fetch", "nips17", "--limit", "0", "--no-progress"]) == 2
