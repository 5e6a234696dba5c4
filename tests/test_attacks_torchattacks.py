"""Our sign-gradient attacks against torchattacks' (an implementation we did not write)."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.attacks.base import quantise
from iqalib.attacks.torchattacks_adapter import ScoreAsLogits, run_torchattacks

pytest.importorskip("torchattacks")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_score_as_logits_shape_and_sign(photos64, toy_metric, toy_lower_metric):
    for m in (toy_metric, toy_lower_metric):
        logits = ScoreAsLogits(m)(photos64)
        q = m.sign * m(photos64)
        assert logits.shape == (3, 2)
        torch.testing.assert_close(logits, torch.stack([-q, q], 1))
    assert ScoreAsLogits.labels_for(photos64).tolist() == [0, 0, 0]


def test_ifgsm_equals_torchattacks_bim(photos64, toy_metric):
    atk = iqalib.load_attack("ifgsm:image", toy_metric)
    theirs = run_torchattacks("BIM", toy_metric, photos64, eps=10 / 255, alpha=1 / 255, steps=10)
    # same projection order (step, clip to the eps ball, clip to [0,1]) and the same
    # gradient signs: bit-identical before our 8-bit rounding, identical after it
    with torch.enable_grad():
        raw = atk.perturb(photos64)
    assert torch.equal(raw, theirs)
    assert torch.equal(atk(photos64), quantise(theirs))


def test_ifgsm_equals_torchattacks_bim_lower_better(photos64, toy_lower_metric):
    ours = iqalib.load_attack("ifgsm:image", toy_lower_metric)(photos64)
    theirs = run_torchattacks("BIM", toy_lower_metric, photos64, eps=10 / 255, alpha=1 / 255,
                              steps=10)
    assert torch.equal(quantise(theirs), ours)


def test_mifgsm_l1_matches_torchattacks(photos64, toy_metric):
    ours = iqalib.load_attack("mifgsm:l1", toy_metric, projection="image")(photos64)
    theirs = quantise(run_torchattacks("MIFGSM", toy_metric, photos64, eps=10 / 255,
                                       alpha=1 / 255, steps=10, decay=1.0))
    # torchattacks divides by the mean |grad| (we by the sum: the same direction) and
    # projects as clip(x + clip(adv - x)); both round differently in the last bit, which
    # flips the sign of a near-zero momentum entry for a handful of pixels
    differ = (ours != theirs).float().mean()
    assert differ < 1e-3, f"{differ:.2%} of values differ"


def test_torchattacks_raises_the_score(photos64, toy_metric):
    xa = run_torchattacks("PGD", toy_metric, photos64, eps=4 / 255, alpha=1 / 255, steps=5,
                          random_start=False)
    with torch.no_grad():
        assert (toy_metric(xa) > toy_metric(photos64)).all()
