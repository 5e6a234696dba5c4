"""Universal perturbations: training, applying, saving, and the train/test split guard."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import iqalib
from iqalib.attacks.uap import UAP, centre_crops, tile_to

METHODS = ["uap", "cumulative-uap", "generative-uap"]
# small and fast: 32 px crops, a tiny generator, a learning rate that moves in few steps
FAST = {"uap": {"lr": 0.02, "epochs": 4}, "cumulative-uap": {"epochs": 4},
        "generative-uap": {"lr": 0.01, "epochs": 4, "ngf": 4}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(photos64):
    from conftest import ToySharpness

    m = ToySharpness()
    return {k: UAP.train(m, photos64[:2], ids=["astronaut", "chelsea"], method=k, crop=32,
                         batch_size=2, seed=1, **FAST[k]) for k in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_uap_raises_score_on_held_out_image(method, trained, photos64, toy_metric):
    uap = trained[method]
    x = photos64[2:]  # coffee: not in the training set
    xa = uap(x, ids=["coffee"])
    with torch.no_grad():
        assert toy_metric(xa) > toy_metric(x)
    assert xa.min() >= 0 and xa.max() <= 1 and torch.equal(xa, torch.round(xa * 255) / 255)
    bound = uap.amplitude * uap.perturbation.abs().max()
    assert (xa - x).abs().max() <= bound + 1 / 255 + 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_uap_budget_and_metadata(method, trained):
    uap = trained[method]
    eps = uap.meta["eps"]
    assert uap.perturbation.shape == (3, 32, 32)
    assert uap.perturbation.abs().max() <= eps + 1e-6
    assert uap.meta["method"] == method and uap.meta["metric"] == "toy-sharpness"
    assert uap.meta["train_ids"] == ["astronaut", "chelsea"] and uap.meta["crop"] == 32
    assert f"method='{method}'" in repr(uap) and "amplitude=0.2" in repr(uap)


def test_uap_refuses_training_images(trained, photos64):
    with pytest.raises(ValueError, match="training set"):
        trained["uap"](photos64, ids=["astronaut", "x", "y"])


def test_uap_train_needs_one_id_per_image(photos64, toy_metric):
    with pytest.raises(ValueError, match="ids"):
        UAP.train(toy_metric, photos64, ids=["a", "a", "b"], crop=32, epochs=1)


@pytest.mark.parametrize("method", METHODS)
def test_uap_training_is_seeded(method, trained, photos64, toy_metric):
    again = UAP.train(toy_metric, photos64[:2], ids=["astronaut", "chelsea"], method=method,
                      crop=32, batch_size=2, seed=1, **FAST[method])
    assert torch.equal(again.perturbation, trained[method].perturbation)


def test_uap_save_load_roundtrip(trained, photos64, toy_metric, tmp_path):
    p = trained["generative-uap"].save(tmp_path / "g.pt")
    loaded = iqalib.load_attack("generative-uap", toy_metric, path=p)
    assert loaded.meta == trained["generative-uap"].meta
    assert torch.equal(loaded(photos64), trained["generative-uap"](photos64))
    with pytest.raises(ValueError, match="holds a generative-uap"):
        iqalib.load_attack("uap", toy_metric, path=p)
    stronger = iqalib.load_attack("generative-uap:a80", toy_metric, path=p)
    assert stronger.amplitude == 0.8


def test_uap_load_refuses_other_metric(trained, toy_lower_metric, tmp_path):
    p = trained["uap"].save(tmp_path / "u.pt")
    with pytest.raises(ValueError, match="trained on metric"):
        UAP.load(p, toy_lower_metric)


def test_untrained_uap_says_how_to_train(toy_metric, tmp_path, monkeypatch):
    monkeypatch.setenv("IQALIB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="UAP.train"):
        iqalib.load_attack("uap", toy_metric)


def test_tile_matches_numpy():
    d = torch.arange(3 * 4 * 5, dtype=torch.float32).reshape(3, 4, 5)
    ours = tile_to(d, (10, 7))
    ref = np.tile(d.permute(1, 2, 0).numpy(), (10 // 4 + 1, 7 // 5 + 1, 1))[:10, :7]
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), ref)


def test_centre_crops_sizes(photos64):
    crops = centre_crops([photos64[0], photos64[1, :, :40, :60]], 48)
    assert crops.shape == (2, 3, 48, 48)
    torch.testing.assert_close(crops[0], photos64[0, :, 8:56, 8:56])


def test_uap_lower_better(photos64, toy_lower_metric):
    uap = UAP.train(toy_lower_metric, photos64[:2], method="uap", crop=32, batch_size=2,
                    **FAST["uap"])
    with torch.no_grad():
        assert toy_lower_metric(uap(photos64[2:])) < toy_lower_metric(photos64[2:])
