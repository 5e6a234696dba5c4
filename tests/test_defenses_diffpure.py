"""DiffPure: the diffusers-scheduler sampler, its priors, seeding, gradients and the registry."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iqalib.defenses.base import Compose
from iqalib.defenses.diffpure import DenoiserPrior, DiffPure, Prior, UNetPrior
from iqalib.defenses.ffdnet import load_ffdnet
from iqalib.registry import DEFENSES


def linear_abar() -> np.ndarray:
    """alphas_cumprod of the 1000-step linear schedule, computed independently in float64."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


class SpyPrior(Prior):
    """Records what the sampler asks; answers with a fixed x0 (an oracle) or zero noise."""

    def __init__(self, x0=None, prediction_type="sample"):
        self.x0, self.prediction_type, self.calls = x0, prediction_type, []
        self.name = "spy"

    def __call__(self, x_t, t, abar):
        self.calls.append((t, float(abar), x_t.detach().clone()))
        if self.prediction_type == "sample":
            return self.x0.expand_as(x_t) if self.x0 is not None else torch.zeros_like(x_t)
        return torch.zeros_like(x_t)


# ---- construction and the registry ---------------------------------------------------------
def test_registry_presets_and_t_star():
    assert {f"diffpure:t{t}" for t in (5, 10, 20, 30, 50, 100, 150)} <= set(DEFENSES.specs("diffpure"))
    d = DEFENSES.create("diffpure:t30", prior="ffdnet")
    assert d.t == 30 and d.nfe == 30 and d.stochastic and not d.differentiable
    assert DiffPure(prior="ffdnet").t == 5  # the MSU group's default
    d = DiffPure(t_star=0.1, prior="ffdnet")
    assert d.t == 100 and d.t_star == pytest.approx(0.1)
    for bad in ({"t": 0}, {"t": 1001}, {"t": 5, "t_star": 0.1}, {"t": 2.5}, {"sampler": "euler"},
                {"grad": "pgd"}, {"steps": 9, "t": 5}, {"variance": "learned_range"}):
        with pytest.raises(ValueError):
            DiffPure(prior="ffdnet", **bad)


def test_auto_prior_follows_the_guided_weights(monkeypatch):
    import iqalib.defenses.guided_unet as gu

    monkeypatch.setattr(gu, "guided_weights_available", lambda: False)
    d = DiffPure()
    assert d.prior == "ffdnet" and json.loads(d.params_json())["prior"] == "ffdnet"
    assert "prior='ffdnet'" in repr(d) and d.variance == "fixed_small"
    monkeypatch.setattr(gu, "guided_weights_available", lambda: True)
    d = DiffPure(t=10)  # the prior loads lazily, so this needs no checkpoint
    assert d.prior == "guided" and d.variance == "learned_range"
    with pytest.raises(ValueError, match="unknown DiffPure prior"):
        DiffPure(prior="dncnn")


def test_missing_guided_weights_name_the_make_target(monkeypatch, tmp_path):
    """With an empty weights folder: auto picks FFDNet, and asking for the UNet says what to run."""
    from iqalib.errors import MissingWeightsError

    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path))
    assert DiffPure().prior == "ffdnet"
    d = DiffPure(prior="guided")
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS=guided-diffusion-256-uncond"):
        d(torch.rand(1, 3, 8, 8))


def test_diffpure_unsharp_is_compose(photos64):
    d = DEFENSES.create("diffpure-unsharp:t10", prior="ffdnet", size=None, seed=3, steps=3)
    assert isinstance(d, Compose) and [p.name for p in d.defenses] == ["diffpure", "unsharp"]
    assert d.stochastic and not d.differentiable
    x = photos64[:1, :, :24, :24]
    g = lambda: torch.Generator().manual_seed(3)
    expected = DEFENSES.create("unsharp")(
        DiffPure(t=10, steps=3, prior="ffdnet", size=None)(x, generator=g()))
    torch.testing.assert_close(d(x), expected)


# ---- the sampler -----------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_partial_trajectory_visits_t_minus_1_to_0(sampler, photos64):
    x = photos64[:2, :, :32, :32]
    spy = SpyPrior()
    DiffPure(t=20, prior=spy, sampler=sampler, size=None)(x)
    ts = [c[0] for c in spy.calls]
    assert ts == list(range(19, -1, -1))
    abar = linear_abar()
    np.testing.assert_allclose([c[1] for c in spy.calls], abar[ts], rtol=1e-5)


def test_respaced_trajectories():
    d = DiffPure(t=50, steps=10, sampler="ddim", prior=SpyPrior())
    assert d.timesteps == list(range(49, -1, -5)) and d.nfe == 10
    d = DiffPure(t=50, steps=10, sampler="ddpm", prior=SpyPrior())
    assert d.timesteps[0] == 49 and d.timesteps[-1] == 0 and d.nfe == 10
    spy = SpyPrior(x0=torch.zeros(1, 3, 8, 8))
    out = DiffPure(t=50, steps=10, sampler="ddim", prior=spy, size=None)(torch.rand(1, 3, 8, 8))
    assert [c[0] for c in spy.calls] == list(range(49, -1, -5))
    torch.testing.assert_close(out, torch.full_like(out, 0.5))  # the last step lands on x0
    with pytest.raises(ValueError, match="dividing 1000"):
        DiffPure(t=50, steps=7, sampler="ddim", prior=SpyPrior())


def test_forward_diffusion_has_the_schedules_noise_level(photos64):
    """The first network input is sqrt(abar) x0 + sqrt(1-abar) eps with eps ~ N(0, 1)."""
    x = photos64
    spy = SpyPrior()
    DiffPure(t=5, prior=spy, size=None)(x)
    firsts = {5: spy.calls[0][2]}
    d = DiffPure(t=150, prior=spy, size=None)  # its forward step alone (150 sampler steps are slow)
    firsts[150] = d.diffuse(x * 2 - 1, torch.Generator().manual_seed(0))
    for t, x_t in firsts.items():
        abar = linear_abar()[t - 1]
        eps = (x_t - np.sqrt(abar) * (x * 2 - 1)) / np.sqrt(1 - abar)
        assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1) < 0.02


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_prior_returns_the_clean_image(sampler, photos64):
    """With a prior that knows x0, the reverse process ends exactly at x0."""
    x = photos64[:, :, :32, :32]
    out = DiffPure(t=10, prior=SpyPrior(x0=x * 2 - 1), sampler=sampler, size=None)(x)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_resize_round_trip_keeps_the_input_size():
    x = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    spy = SpyPrior()
    out = DiffPure(t=2, prior=spy, size=32)(x)
    assert out.shape == x.shape and spy.calls[0][2].shape == (2, 3, 32, 32)


def test_seeded_and_batched(photos64):
    x = photos64[:, :, :32, :32]
    d = DiffPure(t=5, prior="ffdnet", size=None, seed=1)
    a, b = d(x), d(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = d(x, generator=torch.Generator().manual_seed(2))
    assert (a - other).abs().max() > 1e-3
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


# ---- purification behaviour with the offline prior ----------------------------------------
def test_ffdnet_prior_removes_an_attack(photos64, toy_metric):
    """I-FGSM on the toy sharpness metric (eps 4/255, 5 steps of 1/255) is largely undone.

    Measured: score shift 0.17/0.20/0.31 -> 0.09/0.15/0.16 at t=10 (a stronger eps=10/255
    attack is only partly undone at small t, as OFFLINE.md's BRISQUE sweep shows too).
    """
    x, eps = photos64, 4 / 255
    adv = x.clone()
    for _ in range(5):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(toy_metric(adv).sum(), adv)
        adv = (x + (adv.detach() + eps / 4 * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    d = DiffPure(t=10, prior="ffdnet", size=None)
    with torch.no_grad():
        clean, attacked, purified = toy_metric(x), toy_metric(adv), toy_metric(d(adv))
    shift, left = attacked - clean, (purified - clean).abs()
    assert shift.min() > 0.1  # the attack worked
    assert (left < 0.85 * shift).all() and left.mean() < 0.7 * shift.mean()


# ---- gradients -------------------------------------------------------------------------------
def test_bpda_mode_returns_no_graph(photos64):
    x = photos64[:1, :, :16, :16].clone().requires_grad_(True)
    d = DiffPure(t=3, prior="ffdnet", size=None)
    assert not d.differentiable and d(x).grad_fn is None


def test_exact_gradient_matches_finite_differences(photos64):
    """grad='exact' differentiates the whole sampler: a directional derivative check in float64."""
    prior = DenoiserPrior(load_ffdnet().double(), name="ffdnet64")
    d = DiffPure(t=3, prior=prior, size=None, grad="exact")
    assert d.differentiable
    x = photos64[:1, :, 20:36, 20:36].double() * 0.8 + 0.1  # away from the [0,1] clamp
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    f = lambda z: (d(z, generator=torch.Generator().manual_seed(5)) * w).sum()
    xg = x.clone().requires_grad_(True)
    f(xg).backward()
    analytic = (xg.grad * v).sum().item()
    h = 1e-7  # small enough that no ReLU kink of the network is crossed (1e-6 crosses one)
    with torch.no_grad():
        numeric = ((f(x + h * v) - f(x - h * v)) / (2 * h)).item()
    assert abs(analytic) > 1e-3
    assert analytic == pytest.approx(numeric, rel=1e-6)


# ---- the eps-predicting UNet prior (random tiny guided-shaped UNet) -----------------------
@pytest.mark.slow  # builds a diffusers UNet2DModel: its first import alone takes ~10 s
def test_unet_prior_with_learned_variance():
    from iqalib.defenses.guided_unet import GuidedConfig, build_unet

    torch.manual_seed(0)
    unet = build_unet(GuidedConfig(image_size=16, model_channels=32, num_res_blocks=1,
                                   attention_resolutions=(8,), channel_mult=(1, 2),
                                   num_head_channels=16)).eval().requires_grad_(False)
    prior = UNetPrior(unet)
    assert prior.learned_variance and prior.prediction_type == "epsilon"
    d = DiffPure(t=4, prior=prior, size=16)
    assert d.variance == "learned_range"
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    out = d(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the fixed-variance path reads only the eps channels and differs from the learned one
    fixed = DiffPure(t=4, prior=prior, size=16, variance="fixed_small")(x)
    assert (fixed - out).abs().max() > 1e-4


def test_checkpointed_exact_gradient_is_the_same(photos64):
    x = photos64[:1, :, :24, :24]
    grads = []
    for ckpt in (False, True):
        d = DiffPure(t=3, prior="ffdnet", size=None, grad="exact", checkpoint=ckpt)
        xg = x.clone().requires_grad_(True)
        d(xg).square().sum().backward()
        grads.append(xg.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


# ---- precision and the schedule's dtype -----------------------------------------------------
def test_schedule_is_guided_diffusions_float64():
    from iqalib.defenses.diffpure import linear_schedule, make_scheduler

    betas, abar = linear_schedule()
    assert betas.dtype == abar.dtype == torch.float64
    # guided-diffusion: np.linspace(1e-4, 0.02, 1000, dtype=np.float64), np.cumprod(1 - betas)
    np.testing.assert_array_equal(abar.numpy(), linear_abar())
    for sampler in ("ddpm", "ddim"):
        sched = make_scheduler(sampler, "epsilon", "fixed_small")
        assert sched.alphas_cumprod.dtype == torch.float64
        np.testing.assert_array_equal(sched.alphas_cumprod.numpy(), linear_abar())


class _ConvPrior(Prior):
    """A tiny x0-predictor with a real network, recording the dtype its convolution ran in."""

    prediction_type = "sample"

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.name, self.seen = "conv", []

    def __call__(self, x_t, t, abar):
        out = self.net(x_t)
        self.seen.append(out.dtype)
        return out.tanh()


def test_precision_option_runs_the_prior_in_that_dtype():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref_prior, half_prior = _ConvPrior(), _ConvPrior()
    ref = DiffPure(t=3, prior=ref_prior, size=None, precision="fp32")(x)
    half = DiffPure(t=3, prior=half_prior, size=None, precision="bf16")(x)
    assert set(ref_prior.seen) == {torch.float32} and set(half_prior.seen) == {torch.bfloat16}
    # the sampler's state stays float32; bf16 keeps ~3 significant digits
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - ref).abs().max() < 0.05 and not torch.equal(half, ref)
    # a Prior object passed in keeps its float32 weights (cast on the fly by autocast)
    assert half_prior.net.weight.dtype == torch.float32


def test_precision_auto_and_owned_prior_conversion():
    d = DiffPure(prior="ffdnet", size=None, t=2)
    assert d.precision == "auto" and d.compute_precision("cpu") == "fp32"
    assert d.compute_precision("cuda") == "fp32"  # "auto" halves only the study's UNet
    import iqalib.defenses.guided_unet as gu

    assert DiffPure(prior="guided").compute_precision("cuda") == "fp16"  # lazy: no checkpoint
    assert DiffPure(prior="guided").compute_precision("cpu") == "fp32"
    assert DiffPure(prior="guided", precision="bf16").compute_precision("cuda") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        DiffPure(prior="ffdnet", precision="fp8")
    # a prior DiffPure loads itself is converted to the compute dtype once
    b = DiffPure(prior="ffdnet", size=None, t=2, precision="bf16")
    out = b(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert next(b.get_prior().net.parameters()).dtype == torch.bfloat16
    assert json.loads(b.params_json())["precision"] == "bf16"
    del gu
