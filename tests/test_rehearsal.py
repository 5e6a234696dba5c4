"""The fast part of ``make rehearse`` (issue 10): stand-in checkpoints in their official layouts
fetched through a mirror on 127.0.0.1 (a corrupt copy, a dropped transfer) and loaded by
iqalib's own loaders; the NIPS'17 stand-in fetched by ``make data``'s code; one notebook under
the rehearsal (paper) profile on one NIPS'17 image. The whole rehearsal (2.2 GB guided-diffusion
file, every notebook) is ``make rehearse``, not part of the tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iqalib import datasets, weights
from iqalib.rehearsal import checkpoints, nips17
from iqalib.rehearsal.server import FileServer

#: the header of cleverhans v3.1.0's dev_dataset.csv (cleverhans-lab/cleverhans, commit 72d9c1f)
REAL_HEADER = ("ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,"
               "AuthorProfileURL")


@pytest.fixture
def env(tmp_path, monkeypatch):
    for k in ("IQALIB_MIRROR", weights.OVERRIDES_ENV):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("IQALIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path / "data" / "weights"))
    return tmp_path


def test_guided_diffusion_layout_inverts_the_converter():
    """The stand-in's ADM keys, shapes and legacy qkv order are exactly what
    ``convert_guided_diffusion`` reads: converting them gives the diffusers tensors back."""
    from iqalib.defenses import guided_unet as gu

    cfg = gu.GuidedConfig(image_size=32, model_channels=32, channel_mult=(1, 2),
                          attention_resolutions=(16,), num_head_channels=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sd = gu.build_unet(cfg).state_dict()
    adm = checkpoints.adm_from_diffusers(sd.__getitem__, cfg)
    assert any(k.endswith("qkv.weight") and v.shape[-1] == 1 for k, v in adm.items())
    assert "input_blocks.0.0.weight" in adm and "out.2.weight" in adm
    back = gu.convert_guided_diffusion(adm, cfg)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    drawn = checkpoints.guided_diffusion_state(cfg, seed=1)
    assert set(drawn) == set(adm) and all(drawn[k].shape == adm[k].shape for k in adm)


def test_mirror_fetch_of_stand_ins_with_a_corrupt_copy_and_a_dropped_transfer(env, monkeypatch,
                                                                              capsys):
    from iqalib.defenses.restorers import MPRNetDefense, RealESRGANDefense

    good, bad = env / "good", env / "bad"
    names = ["realesr-general-x4v3", "realesr-general-wdn-x4v3", "mprnet-derain"]
    files = checkpoints.write_all(good / "weights", names, log=lambda *a: None)
    # the official MPRNet file name, as a lab mirror filled from Google Drive would hold it
    assert files["mprnet-derain"].name == "model_deraining.pth"
    wdn = files["realesr-general-wdn-x4v3"]
    corrupt = bytearray(wdn.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (bad / "weights").mkdir(parents=True)
    (bad / "weights" / wdn.name).write_bytes(bytes(corrupt))
    from iqalib.download import sha256_file

    over = env / "over.json"  # as if upstream published the wdn file's sha256
    over.write_text(json.dumps({"realesr-general-wdn-x4v3": {"sha256": sha256_file(wdn)}}))
    monkeypatch.setenv(weights.OVERRIDES_ENV, str(over))
    with FileServer(root=bad) as s_bad, FileServer(root=good) as s_good:
        monkeypatch.setenv("IQALIB_MIRROR", f"{s_bad.url}/ {s_good.url}/")
        s_good.cut["/weights/model_deraining.pth"] = files["mprnet-derain"].stat().st_size // 2
        assert weights.cli(["fetch", *names, "--no-progress"]) == 1  # MPRNet dropped halfway
        assert "mprnet-derain: FAILED" in capsys.readouterr().err
        assert weights.cli(["fetch", *names, "--no-progress"]) == 0  # ... and resumed
        resumed = [r for r in s_good.requests if r[0].endswith("model_deraining.pth") and r[1]]
        assert resumed and resumed[-1][2]  # a Range request conditional on the ETag
    wd = env / "data" / "weights"
    assert (wd / wdn.name).read_bytes() == wdn.read_bytes()  # the corrupt copy was passed over
    assert not list(wd.glob("*.part*"))
    x = torch.rand(1, 3, 24, 24)
    for d in (RealESRGANDefense(), MPRNetDefense(task="derain")):  # official layouts, strict
        y = d(x)
        assert y.shape[:2] == x.shape[:2] and torch.isfinite(y).all()


def test_nips17_stand_in_goes_through_make_data(env, monkeypatch):
    mirror = env / "mirror"
    photos = nips17.write_photos(mirror / "flickr", n=8)
    assert len(photos) == 8
    with FileServer(root=mirror) as srv:
        csv_p = nips17.write_csv(mirror / "nips17" / "dev_dataset.csv", photos,
                                 srv.url + "/flickr")
        assert csv_p.read_text().splitlines()[0] == REAL_HEADER
        nips17.write_ready_png(mirror / "flickr", photos[1], mirror / "nips17" / "images")
        monkeypatch.setenv("IQALIB_MIRROR", srv.url)
        assert datasets.cli(["fetch", "nips17", "--no-progress", "--workers", "2"]) == 0
    man = pd.read_csv(env / "data" / "nips17" / "manifest.csv", dtype=str,
                      keep_default_na=False)
    assert man["status"].eq("ok").all() and len(man) == 8
    assert man["fetched_from"].str.contains("/nips17/images/").sum() == 1
    assert "iqalib répétition" in set(man["author"])  # octal escapes decoded
    assert "U.S. Navy, Naval History and Heritage Command" in set(man["author"])  # quoted comma
    ds = datasets.load_dataset("nips17", n=2)
    x = ds.batch()
    assert x.shape == (2, 3, 299, 299) and 0 <= float(x.min()) and float(x.max()) <= 1
    # the crop the official procedure makes, image by image
    first = np.asarray(__import__("PIL.Image").Image.open(ds.path(ds.ids[0])))
    ref = datasets._nips_crop((mirror / "flickr" / photos[0]["file"]).read_bytes(),
                              *(float(photos[0][k]) for k in ("x1", "y1", "x2", "y2")))
    np.testing.assert_array_equal(first, np.asarray(ref))



@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.extended   # ~1-2 min: make test-extended
def test_a_paper_profile_notebook_runs_on_one_nips17_image(env, monkeypatch):
    """Notebook 10 under the rehearsal profile (the paper's MetaIQA on NIPS'17 data) on one
    image, with the MetaIQA and NIPS'17 stand-ins fetched through the mirror as ``make weights
    WEIGHTS=metaiqa`` and ``make data`` fetch them and every other route to the network shut."""
    import papermill as pm
    import yaml

    from iqalib import study

    root = Path(__file__).resolve().parents[1]
    closed = "http://127.0.0.1:9"  # a download that bypasses the mirror fails at once
    for k, v in {"IQALIB_RESULTS": env / "results", "IQALIB_FIGURES": env / "figures",
                 "IQALIB_CACHE": env / "cache", "TORCH_HOME": env / "torch-home",
                 "HF_HUB_OFFLINE": "1", "http_proxy": closed, "https_proxy": closed,
                 "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "MPLBACKEND": "Agg",
                 "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}.items():
        monkeypatch.setenv(k, str(v))
    mirror = env / "mirror"
    checkpoints.write_checkpoint("metaiqa", mirror / "weights")
    photos = nips17.write_photos(mirror / "flickr", n=2)
    with FileServer(root=mirror) as srv:
        nips17.write_csv(mirror / "nips17" / "dev_dataset.csv", photos, srv.url + "/flickr")
        monkeypatch.setenv("IQALIB_MIRROR", srv.url)
        assert weights.cli(["fetch", "metaiqa", "--no-progress"]) == 0
        assert datasets.cli(["fetch", "nips17", "--no-progress", "--workers", "2"]) == 0
    assert study.settings("rehearsal", "10_interactive")["compare"]["metric"] in \
        study.PAPER_METRICS
    params = yaml.safe_load((root / "notebooks/params/rehearsal.yaml").read_text())
    nb = root / "notebooks" / "10_interactive.ipynb"
    pm.execute_notebook(str(nb), str(env / nb.name), parameters={**params, "N_IMAGES": 1},
                        kernel_name="python3", cwd=str(nb.parent), progress_bar=False,
                        log_output=False)
    figs = {p.name for p in (env / "figures").glob("*.png")}
    assert {"10_compare.png", "10_strength.png"} <= figs
