"""iqalib.training: the FCN filter's trainer and recipes, the offline training photos, and the
layering rule (training sits above the models; nothing there imports iqalib.api)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import iqalib
from iqalib.attacks.advcf import colour_filter
from iqalib.evaluate import measures
from iqalib.training import data
from iqalib.training import fcn_filter as ff

# small convolutions run faster on one thread than on two contended ones
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- photos
def test_foolbox_imagenet_photos_are_read_without_importing_foolbox():
    import sys

    photos = ff_photos = data.imagenet_photos()
    assert len(photos) == 20 and all(n.startswith("imagenet_") for n in ff_photos)
    x = data.load_photo(next(iter(photos)))
    assert x.shape[0] == 3 and min(x.shape[1:]) >= 500 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert "foolbox" not in sys.modules


def test_unknown_photo_suggests():
    with pytest.raises(KeyError, match="chelsea"):
        data.load_source("chelsae")


# --------------------------------------------------------------------------- colour curves
def test_random_colour_curves_are_advcf_filters(photos64):
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ff.random_colour_curves(photos64, strength=0.0, generator=g), photos64)
    y = ff.random_colour_curves(photos64, strength=1.0, generator=torch.Generator().manual_seed(5))
    assert float((y - photos64).abs().mean()) > 0.02
    assert torch.equal(y, torch.round(y * 255) / 255)  # on the 8-bit grid, like an attack's output
    # the same draw through AdvCF's own filter
    slopes = torch.exp(torch.randn(3, 3, 64, generator=torch.Generator().manual_seed(5)))
    ref = torch.round(colour_filter(photos64, slopes).clamp(0, 1) * 255) / 255
    assert torch.equal(y, ref)
    # a monotone curve per channel keeps every channel's pixel order
    for i in range(3):
        for c in range(3):
            a, b = photos64[i, c].flatten(), y[i, c].flatten()
            assert (b[torch.argsort(a)].diff() >= -1e-6).all()


# --------------------------------------------------------------------------- the trainer
def _tiny_sets(photos64):
    train = [photos64[0], photos64[1], photos64[0].flip(-1), photos64[1].flip(-2)]
    val = [photos64[2]]
    g = torch.Generator().manual_seed(1)
    return train, val, (lambda x: ff.random_colour_curves(x, strength=1.0, generator=g))


def test_trainer_selects_best_epoch_and_is_deterministic(photos64):
    train, val, atk = _tiny_sets(photos64)
    adv_val = atk(torch.stack(val))

    def run():
        return ff.train_fcn_filter(train, None, val, adv_val, epochs=4, repeats=2, seed=3,
                                   crop=32, device="cpu")

    d1, h1 = run()
    d2, h2 = run()
    assert h1["val_ssim"] == h2["val_ssim"]
    assert all(torch.equal(a, b) for a, b in zip(d1.net.state_dict().values(),
                                                  d2.net.state_dict().values()))
    assert len(h1["train_loss"]) == 4
    assert h1["best_epoch"] == max(range(4), key=h1["val_ssim"].__getitem__)
    assert h1["best_val_ssim"] == max(h1["val_ssim"])
    assert h1["train_loss"][-1] < h1["train_loss"][0]  # training moved it


def test_trainer_reports_the_returned_filters_own_measures(photos64):
    """Model selection uses the study's one SSIM / PSNR (iqalib.evaluate.measures)."""
    train, val, atk = _tiny_sets(photos64)
    adv_val, adv_train = atk(torch.stack(val)), atk(torch.stack(train))
    d, h = ff.train_fcn_filter(train, adv_train, val, adv_val, epochs=3, seed=0, device="cpu")
    out = d(adv_val)
    clean = torch.stack(val)
    assert float(measures.ssim(out, clean).mean()) == pytest.approx(h["best_val_ssim"], abs=1e-6)
    assert float(measures.psnr(out, clean).mean()) == pytest.approx(h["best_val_psnr"], abs=1e-6)
    assert h["val_ssim_attacked"] == pytest.approx(float(measures.ssim(adv_val, clean)), abs=1e-9)
    assert d.meta["epoch"] == h["best_epoch"] and d.meta["crop"] is None


def test_trainer_refuses_bad_input(photos64):
    with pytest.raises(ValueError, match="also in the training set"):
        ff.train_fcn_filter([photos64[0], photos64[1]], None, [photos64[1]], [photos64[1]],
                            epochs=1, device="cpu")
    mixed = [photos64[0], photos64[1, :, :32, :]]
    with pytest.raises(ValueError, match="one size"):
        ff.train_fcn_filter(mixed, mixed, [photos64[2]], [photos64[2]], epochs=1, device="cpu")


def test_save_and_reload_weights_only(tmp_path, photos64):
    train, val, atk = _tiny_sets(photos64)
    d, _ = ff.train_fcn_filter(train, None, val, atk(torch.stack(val)), epochs=1, crop=32,
                               device="cpu")
    path = ff.save_fcn_filter(d, tmp_path / "f.pt", {"metric": "toy"})
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"model", "epoch", "meta"} and ckpt["meta"]["metric"] == "toy"
    back = iqalib.load_defense("fcn-filter", device="cpu", weights=str(path))
    assert torch.equal(back(photos64), d(photos64))
    assert back.hparams["trained"]["metric"] == "toy"


# --------------------------------------------------------------------------- the authors' recipe
def test_authors_split_is_sorted_80_20():
    ids = [f"img{i:02d}" for i in (9, 3, 0, 7, 1, 8, 2, 6, 4, 5)]
    train, val = ff.authors_split(ids)
    assert train == [f"img{i:02d}" for i in range(8)] and val == ["img08", "img09"]
    with pytest.raises(ValueError, match="at least 2"):
        ff.authors_split(["a"])


def test_train_like_authors_feeds_the_grid(tmp_path, toy_metric, photos128):
    """The recipe attacks through the grid's attack cache, saves the filter with provenance,
    and a grid on the held-out images reuses the attacked images and records the filter."""
    from iqalib.evaluate.grid import TensorImages

    x = torch.cat([photos128[:, :, 32:64, 32:64], photos128[:, :, 64:96, 64:96]])
    images = TensorImages(x, ids=[f"p{i}" for i in range(6)], name="toy-set")
    out = tmp_path / "06" / "fcn_filter.pt"
    r = ff.train_like_authors(toy_metric, images, epochs=2, seed=0, device="cpu", out=out,
                              cache=tmp_path / "adv", progress=False)
    assert r.train_ids == ["p0", "p1", "p2", "p3"] and r.val_ids == ["p4", "p5"]
    assert r.path == out and r.defense.hparams["weights"] == "fcn_filter.pt"
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["metric"] == "toy-sharpness" and meta["attack"] == "advcf"
    assert meta["n_train"] == 4 and meta["val_ids"] == ["p4", "p5"]
    pngs = sorted(p.name for p in (tmp_path / "adv").rglob("*.png"))
    assert len(pngs) == 6
    held = ff.held_out_images(images, r.val_ids)
    table = iqalib.run_grid([toy_metric], ["advcf"], ["none", r.defense], held,
                            out=tmp_path / "06", cache=tmp_path / "adv", progress=False,
                            device="cpu")
    assert sorted(p.name for p in (tmp_path / "adv").rglob("*.png")) == pngs  # nothing re-attacked
    assert set(table["image_id"]) == {"p4", "p5"}
    fcn_rows = table[table["defense"] == "fcn-filter"]
    params = json.loads(fcn_rows["defense_params"].iloc[0])
    assert params["sha256"] == r.defense.hparams["sha256"] and params["trained"]["n_train"] == 4


# --------------------------------------------------------------------------- layering
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_models_do_not_import_training_or_the_api():
    root = Path(iqalib.__file__).parent
    for rel in ("defenses/fcn.py", "metrics/learned.py"):
        mods = _imports(root / rel)
        assert not any(m.lstrip(".").startswith(("api", "training")) and m.startswith("..")
                       for m in mods if m != "..training.learned_metric"), (rel, mods)
    for f in (root / "training").glob("*.py"):
        assert not any(m in ("..api", "iqalib.api") for m in _imports(f)), f
