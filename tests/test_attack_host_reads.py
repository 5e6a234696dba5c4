"""Attack loops do not read the device every step (issue 12): the input is checked once, the
metric's per-step finiteness check is skipped inside the loop, and the result is checked once."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.attacks.base import Attack
from iqalib.errors import ImageError
from iqalib.metrics.base import check_batch, inputs_checked


class _CountingFinite:
    """Counts torch.isfinite calls (each ``.all()`` of it is a host read on a GPU)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = torch.isfinite

        def counted(t):
            self.calls += 1
            return real(t)

        monkeypatch.setattr(torch, "isfinite", counted)


class NaNAttack(Attack):
    """An attack whose loop goes wrong: its iterate turns NaN (as a metric's NaN gradient in
    an Adam loop without ``nan_to_num`` would make it)."""

    name = "nan-attack"

    def perturb(self, x):
        self.score_loss(x)                          # one metric forward inside the loop
        return x * float("nan")


def test_check_batch_skips_only_finiteness_inside_the_block():
    bad = torch.full((1, 3, 8, 8), float("nan"))
    with pytest.raises(ImageError, match="NaN"):
        check_batch(bad)
    with inputs_checked():
        check_batch(bad)                            # no host read here
        with pytest.raises(ImageError, match="float"):
            check_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))   # shape/dtype still checked
    with pytest.raises(ImageError, match="NaN"):
        check_batch(bad)                            # the block ended


def test_an_attack_reads_finiteness_once_before_and_once_after(toy_metric, photos64, monkeypatch):
    atk = iqalib.load_attack("ifgsm", toy_metric, steps=10)
    counter = _CountingFinite(monkeypatch)
    atk(photos64[:1])
    assert counter.calls == 2, counter.calls        # was 2 + one per step (12)


def test_a_non_finite_result_is_still_refused(toy_metric, photos64):
    atk = NaNAttack(toy_metric)
    with pytest.raises(ImageError, match="produced NaN"):
        atk(photos64[:1])
