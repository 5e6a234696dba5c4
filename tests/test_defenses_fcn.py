"""The FCN filter: architecture, checkpoint formats, the synthetic colour-curve attack, the
trainer (disjoint sets, best-epoch selection, determinism) and the shipped weights."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.defenses import fcn
from iqalib.errors import MissingWeightsError
from iqalib.paths import assets_dir


def test_architecture_matches_the_paper():
    net = fcn.FCNFilter()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {"conv1.weight": (64, 3, 3, 3), "conv1.bias": (64,),
                      "conv2.weight": (16, 64, 3, 3), "conv2.bias": (16,),
                      "conv3.weight": (3, 16, 3, 3), "conv3.bias": (3,)}
    assert sum(p.numel() for p in net.parameters()) == 11459
    x = torch.rand(2, 3, 20, 24)
    y = net(x)
    assert y.shape == x.shape and y.abs().max() < 1  # tanh head
    # instance norm: the filter ignores a global brightness offset before conv2's statistics
    # only through conv1's nonlinearity, so outputs differ but stay finite
    assert torch.isfinite(net(x * 0)).all()


def test_authors_checkpoint_format_loads(tmp_path):
    net = fcn.FCNFilter()
    path = tmp_path / "best_fcn.pth"
    torch.save({"model": net.state_dict(), "epoch": 17}, path)  # wianluna/adversarial_purification
    d = iqalib.load_defense("fcn-filter", device="cpu", weights=str(path))
    assert d.meta["epoch"] == 17
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(d(x), net.eval()(x).clamp(0, 1))
    with pytest.raises(MissingWeightsError, match="06_fcn_filter"):
        iqalib.load_defense("fcn-filter", device="cpu", weights=str(tmp_path / "nope.pt"))


def test_defense_range_and_gradient():
    d = fcn.FCNFilterDefense(pretrained=False)
    x = torch.rand(2, 3, 17, 23).requires_grad_(True)
    y = d(x)
    assert y.shape == x.shape and 0 <= float(y.detach().min()) and float(y.detach().max()) <= 1
    y.sum().backward()
    assert x.grad.abs().sum() > 0 and d.differentiable and not d.stochastic


def test_random_colour_curves(photos64):
    g = torch.Generator().manual_seed(0)
    same = fcn.random_colour_curves(photos64, strength=0.0, generator=g)
    assert torch.allclose(same, photos64, atol=1e-5)  # equal pieces: the identity curve
    y = fcn.random_colour_curves(photos64, strength=1.0, generator=g)
    assert float((y - photos64).abs().mean()) > 0.02
    # a monotone curve per channel keeps every channel's pixel order
    for i in range(3):
        for c in range(3):
            a, b = photos64[i, c].flatten(), y[i, c].flatten()
            order = torch.argsort(a)
            assert (b[order].diff() >= -1e-6).all()


def _tiny_sets(photos64):
    g = torch.Generator().manual_seed(1)
    train = [photos64[0], photos64[1], photos64[0].flip(-1), photos64[1].flip(-2)]
    val = [photos64[2]]
    return train, val, (lambda x: fcn.random_colour_curves(x, strength=1.0, generator=g))


def test_trainer_selects_best_epoch_and_is_deterministic(photos64):
    train, val, _ = _tiny_sets(photos64)

    def run():
        g = torch.Generator().manual_seed(1)
        atk = lambda x: fcn.random_colour_curves(x, strength=1.0, generator=g)
        return fcn.train_fcn_filter(None, train, val, epochs=4, repeats=2, seed=3, attack=atk,
                                    crop=32, device="cpu")

    d1, h1 = run()
    d2, h2 = run()
    assert h1["val_ssim"] == h2["val_ssim"]
    assert all(torch.equal(a, b) for a, b in zip(d1.net.state_dict().values(), d2.net.state_dict().values()))
    assert len(h1["train_loss"]) == 4 and h1["best_epoch"] == max(range(4), key=h1["val_ssim"].__getitem__)
    assert h1["best_val_ssim"] == max(h1["val_ssim"])
    # training moved the filter away from its random start (loss went down)
    assert h1["train_loss"][-1] < h1["train_loss"][0]


def test_trainer_reports_the_returned_filters_own_ssim(photos64):
    train, val, atk = _tiny_sets(photos64)
    adv_val = [atk(v[None])[0] for v in val]
    adv_train = [atk(t[None])[0] for t in train]
    d, h = fcn.train_fcn_filter(None, train, val, epochs=3, seed=0, crop=32, device="cpu",
                                attacked_train=adv_train, attacked_val=adv_val)
    out = d(torch.stack(adv_val))
    assert float(fcn.ssim(out, torch.stack(val)).mean()) == pytest.approx(h["best_val_ssim"], abs=1e-5)
    assert h["val_ssim_attacked"] == pytest.approx(float(fcn.ssim(torch.stack(adv_val), torch.stack(val))), abs=1e-6)


def test_trainer_rejects_overlapping_sets(photos64):
    with pytest.raises(ValueError, match="also in the training set"):
        fcn.train_fcn_filter(None, [photos64[0], photos64[1]], [photos64[1]], epochs=1,
                             attack=lambda x: x, device="cpu")


def test_save_and_reload(tmp_path, photos64):
    train, val, atk = _tiny_sets(photos64)
    d, _ = fcn.train_fcn_filter(None, train, val, epochs=1, crop=32, attack=atk, device="cpu")
    path = fcn.save_fcn_filter(d, tmp_path / "f.pt", {"metric": "toy"})
    back = iqalib.load_defense("fcn-filter", device="cpu", weights=str(path))
    assert back.meta["metric"] == "toy"
    assert torch.equal(back(photos64), d(photos64))


def test_shipped_weights_load(photos128):
    path = assets_dir() / fcn.DEFAULT_ASSET
    assert path.is_file(), "iqalib/assets/fcn_filter.pt must ship with the package"
    ckpt = torch.load(path, weights_only=True)  # plain tensors and primitives only
    assert {"metric", "attack", "val_ssim", "val_ssim_attacked"} <= set(ckpt["meta"])
    d = iqalib.load_defense("fcn-filter", device="cpu")
    y = d(photos128)
    assert y.shape == photos128.shape and 0 <= float(y.min()) and float(y.max()) <= 1
