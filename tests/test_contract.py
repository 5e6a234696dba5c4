"""The input contract (float [B,3,H,W] in [0,1], finite) at every public entry point, with one
message that says what to do; keyword typos get a did-you-mean."""
from __future__ import annotations

import _grid_toys as toys
import numpy as np
import pytest
import torch

import iqalib
from iqalib.attacks.cache import AttackCache
from iqalib.errors import ImageError
from iqalib.evaluate import run
from iqalib.evaluate.grid import run_grid
from iqalib.imagesets import TensorImages


def _bad_inputs(x):
    return {
        "0..255 floats": (x * 255, "divide by 255"),
        "uint8": ((x * 255).round().to(torch.uint8), "divide by 255"),
        "[-0.25, 1.25]": (x * 1.5 - 0.25, "outside [0,1]"),
    }


ENTRY_POINTS = {
    "metric.score": lambda m, x: m.score(x),
    "defense()": lambda m, x: toys.FlipDefense()(x),
    "run.score": lambda m, x: run.score(m, x),
    "run.purify": lambda m, x: run.purify(toys.FlipDefense(), x),
    "run.attack": lambda m, x: run.attack(toys.SignAttack(m), x),
    "TensorImages": lambda m, x: TensorImages(x),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", ["0..255 floats", "uint8", "[-0.25, 1.25]"])
def test_out_of_contract_images_are_refused_with_what_to_do(toy_metric, photos64, entry, case):
    x, says = _bad_inputs(photos64[:2])[case]
    with pytest.raises((ImageError, TypeError), match=says.replace("[", r"\[").replace("]", r"\]")):
        ENTRY_POINTS[entry](toy_metric, x)


def test_float_rounding_is_tolerated(toy_metric, photos64):
    x = photos64[:1].clone()
    x[..., 0, 0] = 1 + 1e-6
    x[..., 0, 1] = -1e-6
    assert toy_metric.score(x).shape == (1,)
    assert toys.FlipDefense()(x).shape == x.shape


@pytest.mark.parametrize("case", ["0..255 floats", "uint8"])
def test_run_grid_refuses_a_255_tensor_before_any_work(tmp_path, toy_metric, photos64, case):
    x, _ = _bad_inputs(photos64)[case]
    with pytest.raises(ImageError, match="divide by 255"):
        run_grid([toy_metric], [toys.SignAttack], ["none"], x, out=tmp_path / "out",
                 cache=tmp_path / "adv", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_attack_cache_checks_what_it_attacks(tmp_path, toy_metric, photos64):
    x, _ = _bad_inputs(photos64[:1])["[-0.25, 1.25]"]
    with pytest.raises(ImageError, match="outside"):
        AttackCache(tmp_path).get_or_run_tensor(toys.SignAttack(toy_metric), x, ["c0"])


def test_keyword_typos_get_a_did_you_mean_and_the_valid_keywords():
    with pytest.raises(TypeError, match=r"Did you mean 'quality'\?.*Keywords: quality"):
        iqalib.load_defense("jpeg", qualty=30)
    with pytest.raises(iqalib.UnknownKeywordError, match="Did you mean 'eps'"):
        iqalib.load_attack("ifgsm", toys.NanOnFlatMetric(), esp=0.1)
    assert iqalib.load_defense("jpeg", quality=30).quality == 30


def test_non_finite_scores_name_the_images(photos64):
    x = torch.cat([photos64[:1], torch.full((1, 3, 64, 64), 0.5)])
    with pytest.raises(run.NonFiniteScoreError, match="flat") as err:
        run.score(toys.NanOnFlatMetric(), x, ids=["photo", "flat"])
    assert err.value.ids == ["flat"] and err.value.positions == [1]
    assert np.isnan(run.score(toys.NanOnFlatMetric(), x, allow_nonfinite=True)[1])
