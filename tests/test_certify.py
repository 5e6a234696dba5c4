"""Certified score bounds: the confidence bounds against scipy and Monte-Carlo coverage, the
certified interval against the closed form of a toy Lipschitz metric, and the real check: an
L2 attack with EOT never pushes the smoothed score out of its certified interval."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from iqalib.certify import SmoothedMetric, bounds
from iqalib.certify.attack import PGDL2, project_l2
from iqalib.certify.smoothing import OneShotDiffusionDenoiser
from iqalib.defenses.diffpure import Prior
from iqalib.metrics.base import IQAMetric


class ProbitMetric(IQAMetric):
    """``f(x) = 10 Phi((<w, x> - t) / s)`` with ``||w|| = 1``: Lipschitz (``10 / (s sqrt(2 pi))``)
    and its Gaussian smoothing has a closed form, ``g(x) = 10 Phi((<w, x> - t) / sqrt(s^2 +
    sigma^2))``. As ``s -> 0`` it is the half-space indicator, the function for which the
    randomized-smoothing bound is attained (Cohen et al. 2019)."""

    name = "probit"
    score_range = (0.0, 10.0)

    def __init__(self, w: torch.Tensor, t: float, s: float):
        super().__init__()
        self.register_buffer("w", w / w.norm())
        self.t, self.s = t, s

    def u(self, x):
        return x.flatten(1) @ self.w.flatten() - self.t

    def forward(self, x):
        return 10 * torch.special.ndtr(self.u(x) / self.s)

    def smoothed(self, x, sigma):
        """The exact mean-smoothed score (no clipping of the noisy image)."""
        return 10 * stats.norm.cdf(self.u(x).double().numpy() / np.hypot(self.s, sigma))


class TinyCNN(IQAMetric):
    """A fixed random two-layer CNN with a sigmoid head: nonlinear, cheap, range (0, 1)."""

    name = "tiny-cnn"
    score_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 4, 3, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return torch.sigmoid(4 * (h.mean(dim=(1, 2, 3)) - 0.5))


@pytest.fixture(scope="module")
def probit_setup():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 8, generator=g)
    x = torch.rand(4, 3, 8, 8, generator=g) * 0.5 + 0.25
    f = ProbitMetric(w, 0.0, 0.02)
    f.t = float(f.u(x).mean())
    return f, x


# -- confidence bounds ---------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (17, 20), (20, 20), (480, 1000)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    lo, hi = bounds.clopper_pearson(k, n, 0.05)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    # one-sided bound at alpha = the two-sided one at 2 alpha (Cohen et al.'s pA lower bound)
    assert bounds.clopper_pearson(k, n, 0.025, side="lower") == pytest.approx(ref.low, abs=1e-12)


@pytest.mark.parametrize("method", bounds.MEDIAN_METHODS)
def test_percentile_bounds_cover_the_true_percentile(method):
    rng = np.random.default_rng(1)
    trials, n, alpha = 4000, 60, 0.1
    x = rng.standard_normal((trials, n))
    for p in (0.2, 0.5, 0.9):
        lo, hi = bounds.percentile_interval(x, p, alpha, method=method)
        q = stats.norm.ppf(p)
        # each side fails with probability <= alpha / 2; allow 3 Monte-Carlo standard errors
        slack = 3 * np.sqrt(alpha / 2 * (1 - alpha / 2) / trials)
        assert (lo[:, 0] > q).mean() <= alpha / 2 + slack
        assert (hi[:, 0] < q).mean() <= alpha / 2 + slack


@pytest.mark.parametrize("method", bounds.MEAN_METHODS)
def test_mean_interval_at_radius_zero_covers_the_mean(method):
    rng = np.random.default_rng(2)
    trials, n, alpha = 3000, 40, 0.2
    x = rng.beta(2, 5, size=(trials, n))
    lo, hi = bounds.mean_interval(x, [0.0], 0.25, 0.0, 1.0, alpha, method=method)
    covered = (lo[:, 0] <= 2 / 7) & (hi[:, 0] >= 2 / 7)
    assert covered.mean() >= 1 - alpha
    # both are conservative, and the CDF bound is the tighter of the two on skewed draws
    if method == "cdf":
        hl, hh = bounds.mean_interval(x, [0.0], 0.25, 0.0, 1.0, alpha, method="hoeffding")
        assert np.mean(hi - lo) < np.mean(hh - hl)


def test_bin_certificate_closed_form():
    """All draws in one bin: Clopper-Pearson gives pA = alpha^(1/n), radius sigma Phi^-1(pA)."""
    edges = bounds.score_bins((0.0, 100.0))
    assert len(edges) + 1 == 12  # the group's 12 classes
    s = np.full((1, 1000), 42.0)
    label, radius = bounds.bin_certificate(s[:, :100], s, edges, 0.12, 1e-3)
    assert label[0] == 5  # (40, 50]
    assert radius[0] == pytest.approx(0.12 * stats.norm.ppf(1e-3 ** (1 / 1000)), rel=1e-9)
    # a coin flip between two bins cannot be certified: abstain
    s2 = np.r_[np.full(500, 42.0), np.full(500, 58.0)][None]
    label, radius = bounds.bin_certificate(s2[:, :100], s2, edges, 0.12, 1e-3)
    assert label[0] == -1 and radius[0] == 0


def test_radius_matches_the_interval_width():
    rng = np.random.default_rng(3)
    s = rng.uniform(0.3, 0.6, size=(3, 500))
    for smoothing in ("mean", "median"):
        r = bounds.certified_radius(s, 0.3, 0.25, smoothing=smoothing, lo=0.0, hi=1.0)
        assert (r > 0).all()
        method = "hoeffding" if smoothing == "mean" else "dkw"

        def width(e, smoothing=smoothing, method=method):
            lo, hi = bounds.certified_interval(s, e, 0.25, smoothing=smoothing, lo=0.0, hi=1.0,
                                               method=method, paired=True)
            return (hi - lo)[:, 0]

        # the largest radius: inside the tolerance at r, outside just beyond (the median's
        # width is a step function of the radius, the mean's a continuous one)
        assert np.all(width(r) <= 0.3) and np.all(width(r + 1e-6) > 0.3)


# -- the closed form of a toy Lipschitz metric ---------------------------------------------------
def test_mean_smoothing_matches_the_closed_form_and_its_bound_is_tight(probit_setup):
    f, x = probit_setup
    sigma, eps, alpha = 0.25, np.array([0.0, 0.1, 0.25]), 1e-3
    sm = SmoothedMetric(f, sigma=sigma, clip=False, n=20000, batch_size=4096)
    cert = sm.certify(x, eps, alpha=alpha)
    half = bounds.hoeffding_radius(20000, alpha, 10.0)
    exact = f.smoothed(x, sigma)
    assert np.all(np.abs(cert.estimate - exact) <= half)
    def formula(g, e, sign):
        """The certified bound's closed form at a known smoothed value g."""
        return 10 * stats.norm.cdf(stats.norm.ppf(np.clip(g / 10, 0, 1)) + sign * e / sigma)

    for j, e in enumerate(eps):
        # the worst perturbation of norm e moves along w: g at x +- e w, in closed form
        up = f.smoothed(x + e * f.w, sigma)
        down = f.smoothed(x - e * f.w, sigma)
        assert np.all(cert.upper[:, j] >= up) and np.all(cert.lower[:, j] <= down)
        # the certified bound is the formula at the estimate's confidence limit ...
        assert np.all(cert.upper[:, j] <= formula(exact + 2 * half, e, +1) + 1e-9)
        assert np.all(cert.lower[:, j] >= formula(exact - 2 * half, e, -1) - 1e-9)
        # ... and for a near-indicator f the formula is attained (Cohen et al.'s tightness)
        assert np.all(formula(exact, e, +1) - up <= 0.02)
        assert np.all(down - formula(exact, e, -1) <= 0.02)
    # the smoothed function is (hi - lo) / (sigma sqrt(2 pi))-Lipschitz (Salman et al. 2019)
    step = f.smoothed(x + 0.01 * f.w, sigma) - exact
    assert np.all(step <= 10 / (sigma * np.sqrt(2 * np.pi)) * 0.01 + 1e-9)


def test_l2_attack_stays_in_the_ball_and_matches_the_worst_case_direction(probit_setup):
    f0, x = probit_setup
    f = ProbitMetric(f0.w, f0.t, 1.0)
    x_adv = PGDL2(f, eps=0.3, steps=15)(x)
    assert torch.all((x_adv - x).flatten(1).norm(dim=1) <= 0.3 + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, torch.round(x_adv * 255) / 255)  # not rounded to 8 bits
    # on a linear score the best L2 step is eps along w
    assert torch.allclose(f.u(x_adv) - f.u(x), torch.full((4,), 0.3), atol=1e-3)
    assert torch.allclose(project_l2(x + 5 * f.w, x, 0.3), x + 0.3 * f.w, atol=1e-6)


# -- the real check: adaptive attacks vs certified intervals ----------------------------------
@pytest.mark.parametrize("direction", ["raise", "lower"])
def test_eot_attack_stays_inside_the_certified_interval(probit_setup, direction):
    f, x = probit_setup
    sigma, eps = 0.25, 0.25
    sm = SmoothedMetric(f, sigma=sigma, clip=False, n=4000, n_grad=64, batch_size=4096)
    cert = sm.certify(x, [eps], alpha=1e-3)
    x_adv = PGDL2(sm, eps=eps, steps=20, direction=direction)(x)
    attacked = f.smoothed(x_adv, sigma)  # exact, no Monte-Carlo error in the check
    clean = f.smoothed(x, sigma)
    assert cert.contains(attacked).all()
    # the check has teeth: the attack gets most of the way to the bound it must not cross
    if direction == "raise":
        assert np.all(attacked - clean >= 0.8 * (cert.upper[:, 0] - clean) - 0.3)
    else:
        assert np.all(clean - attacked >= 0.8 * (clean - cert.lower[:, 0]) - 0.3)


def test_attack_check_on_a_nonlinear_metric_every_image_inside():
    from iqalib.certify.experiments import attack_check

    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 3, 12, 12, generator=g)
    res = attack_check(TinyCNN(), x, kinds=("rs", "ms"), sigma=0.25, eps=0.5, n_cert=400,
                       n_eval=400, n_grad=16, steps=8, alpha=1e-3)
    assert len(res) == 2 * 3 * 2
    assert res["inside"].all(), res[~res["inside"]]
    assert (res["l2"] <= 0.5 + 1e-6).all()
    # the attack moved the smoothed score the way it was told to
    assert (res["change"] > 0).mean() >= 0.75


# -- the metric: registry, contract, denoisers ------------------------------------------------
def test_smoothed_metric_registry_presets_and_contract(toy_metric, photos64):
    from iqalib.registry import METRICS

    entry = METRICS.entry("smoothed")
    for preset in ("rs-s12", "ms-s25", "drs-s12", "dms-s50", "ddrs-s12", "group-ms"):
        assert preset in entry.presets
    m = METRICS.create("smoothed:ms-s25", metric=toy_metric, n=16)
    assert (m.sigma, m.smoothing, m.kind) == (0.25, "median", "ms")
    assert (m.lower_better, m.score_range) == (toy_metric.lower_better, toy_metric.score_range)
    x = photos64[:2]
    with torch.no_grad():
        a, b = m(x), m(x)
    assert a.shape == (2,) and torch.equal(a, b)  # seeded draws: a deterministic score
    with torch.no_grad():  # ... of each image, whatever batch it comes in
        assert torch.allclose(m(x[1:2]), a[1:2]) and torch.allclose(m(x.flip(0)), a.flip(0))
    xg = x.clone().requires_grad_(True)
    m(xg).sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smoothing"):
        SmoothedMetric(toy_metric, smoothing="mode")


def test_certificate_widths_grow_with_the_radius(toy_metric, photos64):
    m = SmoothedMetric(toy_metric, sigma=0.12, n=64)
    cert = m.certify(photos64, [0.0, 0.1, 0.3, 1.0])
    assert np.all(np.diff(cert.width, axis=1) >= -1e-12)
    assert np.all(cert.lower[:, 0] <= cert.estimate) and np.all(cert.estimate <= cert.upper[:, 0])
    frame = cert.to_frame()
    assert len(frame) == 3 * 4 and set(frame["simultaneous"]) == {True}


def test_one_shot_diffusion_denoiser_inverts_an_oracle_prior():
    """With a prior that knows the clean image the one-shot x0 estimate recovers it exactly:
    checks the [0,1] <-> x_t scaling and the eps -> x0 conversion."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, 3, 16, 16, generator=g)

    class Oracle(Prior):
        name = "oracle"
        prediction_type = "epsilon"

        def __call__(self, x_t, t, abar):
            return (x_t - abar.sqrt() * (2 * x0 - 1)) / (1 - abar).sqrt()

    den = OneShotDiffusionDenoiser(0.25, prior=Oracle(), size=None)
    level = np.sqrt((1 - den.abar) / den.abar)
    assert level >= 0.5 and den.t > 0
    y = x0 + 0.25 * torch.randn(x0.shape, generator=g)
    assert torch.allclose(den(y), x0, atol=1e-5)


def test_width_sweep_shares_draws_and_reports_radius_and_fidelity():
    from iqalib.certify.experiments import fidelity, width_sweep

    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    sweep = width_sweep(TinyCNN(), x, sigmas=[0.25], eps=[0.0, 0.1, 0.5], kinds=["rs", "ms"],
                        n=64, tolerance=0.5)
    # rs: hoeffding and cdf bounds, ms: binomial -> 3 bounds x 2 images x 3 radii
    assert len(sweep) == 18 and set(sweep["method"]) == {"hoeffding", "cdf", "binomial"}
    for _, g in sweep.groupby(["method", "image_id"]):
        assert np.all(np.diff(g.sort_values("eps")["width"].to_numpy()) >= -1e-12)
        assert g["radius"].nunique() == 1 and (g["radius"] >= 0).all()
    # one set of draws: mean-smoothing bounds agree on the estimate
    est = sweep.groupby(["image_id", "method"])["estimate"].first().unstack()
    np.testing.assert_allclose(est["hoeffding"], est["cdf"])
    fid = fidelity(sweep)
    assert set(fid["kind"]) == {"rs", "ms"} and len(fid) == 3


def test_l2_attack_refuses_bad_settings(toy_metric):
    for kw in ({"eps": -0.1}, {"steps": 0}, {"steps": 2.5}, {"eot": 0}, {"step": 0.0},
               {"direction": "up"}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            PGDL2(toy_metric, **kw)
    assert PGDL2(toy_metric, eps=20.0).eps == 20.0  # L2 radii beyond 1 are legitimate
