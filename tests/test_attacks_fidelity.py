"""The attacks' defaults against the authors' loops, restated step by step from their code.

Each reference below restates one loop of the MSU group's code (the perturbation I-FGSM of
msu-video-group/adversarial-defenses-for-iqa ``methods/ifgsm/run.py``, the momentum of the
metrics robustness benchmark's ``methods/mifgsm/run.py``, the group's AdvCF step) with plain
torch operations in their order, independent of our implementation (no shared helpers).
"""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.attacks.base import quantise

pytestmark = pytest.mark.usefixtures("one_thread")


def _msu_fgsm(metric, x, *, eps=10 / 255, alpha=1 / 255, iters=10, momentum=None):
    """The MSU loop: p clipped to [-eps, eps], the metric sees clip(x + p) through `.data`."""
    p = torch.zeros_like(x, requires_grad=True)
    g_prev = torch.zeros_like(x)
    for _ in range(iters):
        res = x + p
        res.data.clamp_(0.0, 1.0)
        loss = (1 - metric(res) * metric.sign / metric.range_width).sum()
        loss.backward()
        g = p.grad
        if momentum is not None:
            g = g + g_prev * momentum
            g_prev = g
        p.data -= alpha * torch.sign(g)
        p.data.clamp_(-eps, eps)
        p.grad.zero_()
    return (x + p).data.clamp_(0, 1)


def test_ifgsm_default_is_the_msu_perturbation_loop(photos64, toy_metric):
    # brighten two images near white so that pixels saturate: there the two projections differ
    x = photos64.clone()
    x[:2] = (x[:2] * 0.3 + 0.7)
    x = quantise(x)
    ours = iqalib.load_attack("ifgsm", toy_metric)(x)
    assert torch.equal(ours, quantise(_msu_fgsm(toy_metric, x)))
    image_form = iqalib.load_attack("ifgsm:image", toy_metric)(x)
    assert not torch.equal(image_form, ours)


def test_mifgsm_default_accumulates_raw_gradients(photos64, toy_metric):
    ours = iqalib.load_attack("mifgsm", toy_metric)(photos64)
    ref = quantise(_msu_fgsm(toy_metric, photos64, momentum=1.0))
    # the only freedom is float summation order inside the momentum: a near-zero entry may
    # flip sign for a handful of pixels
    assert (ours != ref).float().mean() < 1e-3
    # Dong et al.'s normalised form is the preset (checked against torchattacks elsewhere)
    assert iqalib.load_attack("mifgsm:l1", toy_metric).normalise_l1 is True


def _msu_advcf(metric, x, *, pieces=64, lr=0.1, iters=10, const=0.5):
    """The group's AdvCF: CF summed over pieces, clip by masks, Adam on the slopes, best score."""
    paras = (torch.ones(x.shape[0], 3, pieces) / pieces).requires_grad_(True)
    opt = torch.optim.Adam([paras], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    best_score, best = -1e5, x.clone()
    for _ in range(iters):
        paras.data = torch.clamp(paras.data, min=0)
        paras_sum = torch.sum(paras, dim=2, keepdim=True)
        l2 = torch.sum((paras / paras_sum - 1 / pieces) ** 2, dim=(1, 2))
        p = paras[:, :, None, None]
        adv = x * 0
        for i in range(pieces):
            adv = adv + torch.clamp(x - i / pieces, 0, 1 / pieces) * p[..., i]
        adv = adv * pieces / (torch.sum(p, 4) + 1e-30)
        adv = torch.where(adv > 1, torch.ones_like(adv), adv)
        adv = torch.where(adv < 0, torch.zeros_like(adv), adv)
        score = metric(adv)
        loss = torch.mean(1 - score / metric.range_width + const * l2)
        opt.zero_grad()
        loss.backward()
        paras.grad = torch.nan_to_num(paras.grad)
        opt.step()
        if score.max() > best_score:
            best_score, best = score.max(), quantise(adv.detach())
    return best


def test_advcf_default_is_the_groups_loop_on_a_photo(photos64, toy_metric):
    x = photos64[1:2]  # one image: their best-iterate rule is per batch, ours per image
    ours = iqalib.load_attack("advcf", toy_metric)(x)
    ref = _msu_advcf(toy_metric, x)
    # same steps; the lookup-table curve and their sum of clipped ramps round differently
    assert (ours - ref).abs().max() <= 1 / 255 + 1e-6
    assert (ours != ref).float().mean() < 0.05


def test_advcf_output_is_a_monotone_curve_of_each_channel(photos128, toy_metric):
    # what keeps an AdvCF image a photo: every channel goes through one non-decreasing curve,
    # so equal values stay equal and the order of the values (edges, textures) is kept; how far
    # the colours move is the group's setting (lr 0.1), not bounded by the attack
    x = photos128
    for spec in ("advcf", "advcf:lr0.01"):
        xa = iqalib.load_attack(spec, toy_metric)(x)
        for b in range(x.shape[0]):
            for c in range(3):
                v, out = x[b, c].flatten(), xa[b, c].flatten()
                order = torch.argsort(v, stable=True)
                assert (out[order].diff() >= 0).all(), (spec, b, c)
                levels, inverse = torch.unique(v, return_inverse=True)
                first = torch.full_like(levels, -1.0).scatter_(0, inverse, out)
                assert torch.equal(first[inverse], out), (spec, b, c)
