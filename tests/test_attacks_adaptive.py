"""BPDA and EOT wrappers: gradient attacks on metric(purify(x))."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.attacks.adaptive import DefendedMetric, adaptive, bpda
from iqalib.defenses.base import Defense

pytestmark = pytest.mark.usefixtures("one_thread")


class RoundPurifier(Defense):
    """Quantise to a few grey levels: the true gradient is zero almost everywhere."""

    name = "test-round"
    differentiable = False

    def __init__(self, *, levels: int = 16, seed: int = 0):
        super().__init__(seed=seed, levels=levels)

    def purify(self, x, generator):
        return torch.round(x * self.levels) / self.levels


class NoisePurifier(Defense):
    """Add Gaussian noise, then blur it away a little: differentiable and stochastic."""

    name = "test-noise"
    stochastic = True

    def __init__(self, *, sigma: float = 0.05, seed: int = 0):
        super().__init__(seed=seed, sigma=sigma)

    def purify(self, x, generator):
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        return (x + self.sigma * noise).clamp(0, 1)


class HalfSize(Defense):
    name = "test-half"
    differentiable = False
    changes_size = True

    def purify(self, x, generator):
        return x[..., ::2, ::2].clone()


def test_bpda_gradient_is_identity(photos64):
    x = photos64[:1].clone().requires_grad_(True)
    y = bpda(RoundPurifier(), x)
    torch.testing.assert_close(y.detach(), RoundPurifier()(photos64[:1]))
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 3.0))


def test_bpda_resizes_gradient_for_size_changing_purifier(photos64, toy_metric):
    dm = DefendedMetric(toy_metric, HalfSize())
    x = photos64[:1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dm(x).sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0


def test_bpda_beats_the_zero_gradient(photos64, toy_metric):
    dm_true = DefendedMetric(toy_metric, RoundPurifier(), bpda=False)
    x = photos64.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(dm_true(x).sum(), x)
    assert g.abs().max() == 0  # without BPDA a gradient attack is blind
    stuck = iqalib.load_attack("ifgsm", dm_true)(photos64)
    assert torch.equal(stuck, photos64)

    atk = adaptive("ifgsm", toy_metric, RoundPurifier())
    assert atk.metric.use_bpda and atk.name == "adaptive-ifgsm"
    xa = atk(photos64)
    dm = DefendedMetric(toy_metric, RoundPurifier())
    with torch.no_grad():
        assert (dm(xa) > dm(photos64)).all()
    assert (xa - photos64).abs().max() <= 10 / 255 + 1 / 255


def test_eot_averages_seeded_draws(photos64, toy_metric):
    d = NoisePurifier()
    dm = DefendedMetric(toy_metric, d, eot=4, seed=7)
    assert not dm.use_bpda and dm.eot == 4
    with torch.no_grad():
        manual = torch.stack([toy_metric(d(photos64, generator=torch.Generator().manual_seed(7 + i)))
                              for i in range(4)]).mean(0)
        torch.testing.assert_close(dm(photos64), manual)
        torch.testing.assert_close(dm(photos64), dm(photos64))  # deterministic in x


def test_eot_ignored_for_deterministic_defense(toy_metric):
    assert DefendedMetric(toy_metric, RoundPurifier(), eot=8).eot == 1


def test_eot_attack_raises_defended_score(photos64, toy_metric):
    atk = adaptive("mifgsm", toy_metric, NoisePurifier(), eot=2)
    xa = atk(photos64)
    dm = DefendedMetric(toy_metric, NoisePurifier(), eot=2, seed=100)  # fresh draws
    with torch.no_grad():
        assert (dm(xa) > dm(photos64)).all()
    assert atk.hparams["eot"] == 2 and atk.hparams["defense"] == "test-noise"
    assert torch.equal(atk(photos64), xa)


def test_registered_adaptive_and_lower_better(photos64, toy_lower_metric):
    atk = iqalib.load_attack("adaptive", toy_lower_metric, defense=RoundPurifier(),
                             attack="ifgsm", eps=4 / 255)
    dm = atk.metric
    assert dm.lower_better and dm.score_range == toy_lower_metric.score_range
    with torch.no_grad():
        assert (dm(atk(photos64)) < dm(photos64)).all()


def test_defended_metric_by_name(toy_metric):
    pytest.importorskip("iqalib.defenses.transforms")
    dm = DefendedMetric(toy_metric, "flip")
    assert dm.defense.name.startswith("flip") and "flip" in dm.name


def test_bad_arguments(toy_metric):
    with pytest.raises(ValueError, match="bpda"):
        DefendedMetric(toy_metric, RoundPurifier(), bpda="sometimes")
    with pytest.raises(ValueError, match="eot"):
        DefendedMetric(toy_metric, NoisePurifier(), eot=0)


def test_eval_mode_gives_each_submodule_its_own_mode_back():
    from iqalib.attacks.base import eval_mode

    outer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    outer.train()
    outer[1].eval()
    with eval_mode(outer):
        assert not any(m.training for m in outer.modules())
    assert outer.training and outer[0].training and not outer[1].training


def test_adaptive_attack_leaves_the_metric_in_eval_mode(photos64):
    # a metric with batch norm: in training mode its scores would come from batch statistics
    # (and a batch of one image would not score at all)
    class NormedToy(iqalib.IQAMetric):
        name, lower_better, score_range = "normed-toy", False, (0.0, 1.0)

        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(3)

        def forward(self, x):
            return torch.sigmoid(self.norm(x.mean(dim=(2, 3))).sum(1))

    metric = NormedToy().eval()
    before = metric(photos64[:1]).detach()
    atk = adaptive("ifgsm", metric, "flip", eot=1, steps=2)
    atk(photos64[:1])
    assert not metric.training and not atk.metric.training
    assert torch.equal(metric(photos64[:1]).detach(), before)
