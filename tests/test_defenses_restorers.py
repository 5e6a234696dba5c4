"""MPRNet and Real-ESRGAN purifiers: architecture keys vs the official checkpoints, strict
loading, padding, deep network interpolation, shapes, ranges, gradients (random weights:
the real checkpoints cannot be downloaded here)."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import iqalib
from iqalib.defenses import restorers
from iqalib.defenses.mprnet_arch import build_mprnet
from iqalib.defenses.realesrgan_arch import SRVGGNetCompact, interpolate_states
from iqalib.errors import MissingWeightsError


@pytest.fixture(scope="module")
def mprnet_random():
    # the deraining widths (40/20/16): same architecture, a quarter of the CPU time
    return restorers.MPRNetDefense(task="derain", pretrained=False)


def fake_catalogue(monkeypatch, states: dict):
    """Stand in for iqalib.weights (another module's job): name -> checkpoint object."""
    def load_state(name):
        if name not in states:
            raise MissingWeightsError(f"{name} missing: run `make weights WEIGHTS={name}`")
        return states[name]

    mod = types.SimpleNamespace(load_state=load_state)
    monkeypatch.setitem(sys.modules, "iqalib.weights", mod)
    monkeypatch.setattr(iqalib, "weights", mod, raising=False)


# Names taken from the official swz30/MPRNet model definition (Denoising/MPRNet.py):
OFFICIAL_KEYS = [
    "shallow_feat1.0.weight", "shallow_feat1.1.body.1.weight", "shallow_feat3.1.CA.conv_du.2.weight",
    "stage1_encoder.encoder_level3.1.body.2.weight", "stage1_encoder.down12.down.1.weight",
    "stage2_encoder.csff_enc1.weight", "stage2_encoder.csff_dec3.weight",
    "stage1_decoder.skip_attn2.CA.conv_du.0.weight", "stage2_decoder.up32.up.1.weight",
    "stage3_orsnet.orb3.body.8.weight", "stage3_orsnet.up_enc2.1.up.1.weight",
    "stage3_orsnet.conv_dec3.weight", "sam12.conv1.weight", "sam23.conv3.weight",
    "concat12.weight", "concat23.weight", "tail.weight",
]


def test_mprnet_keys_and_widths_match_official():
    net = build_mprnet("denoise")
    sd = net.state_dict()
    for k in OFFICIAL_KEYS:
        assert k in sd, k
    assert "stage1_encoder.csff_enc1.weight" not in sd  # stage 1 has no CSFF
    assert not any(k.endswith(".bias") for k in sd)  # bias=False throughout
    assert sd["tail.weight"].shape == (3, 80 + 32, 3, 3)
    assert sd["stage1_encoder.encoder_level3.0.body.0.weight"].shape[0] == 80 + 2 * 48
    assert sd["concat23.weight"].shape == (112, 160, 3, 3)
    # the single shared PReLU appears under every CAB
    assert sd["shallow_feat1.1.body.1.weight"].shape == (1,)
    assert build_mprnet("deblur").state_dict()["tail.weight"].shape == (3, 128, 3, 3)
    assert build_mprnet("derain").state_dict()["tail.weight"].shape == (3, 56, 3, 3)


@pytest.mark.slow  # about 2 s alone, 10-30 s on a loaded 2-core machine (a backward through MPRNet)
def test_mprnet_odd_sizes_range_and_gradient(mprnet_random):
    x = torch.rand(2, 3, 13, 11, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = mprnet_random(x)
    assert y.shape == x.shape and float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    # batched = one at a time (no cross-image leakage through padding or attention)
    assert torch.allclose(y[1:].detach(), mprnet_random(x[1:].detach()), atol=1e-5)
    y.mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in mprnet_random.net.parameters())  # frozen


def test_pad_to_multiple():
    x = torch.arange(2 * 3 * 13 * 9, dtype=torch.float32).view(2, 3, 13, 9)
    p, (h, w) = restorers.pad_to_multiple(x, 8)
    assert p.shape[-2:] == (16, 16) and (h, w) == (13, 9)
    assert torch.equal(p[..., :13, :9], x)
    assert torch.equal(p[..., 13, :9], x[..., 11, :])  # reflect: row 13 mirrors row 11
    tiny, _ = restorers.pad_to_multiple(torch.rand(1, 3, 3, 3), 8)  # too small to reflect
    assert tiny.shape[-2:] == (8, 8)
    same, _ = restorers.pad_to_multiple(torch.rand(1, 3, 16, 8), 8)
    assert same.shape[-2:] == (16, 8)


def test_mprnet_strict_load_roundtrip(monkeypatch, mprnet_random):
    src = mprnet_random.net.state_dict()
    # official files wrap in "state_dict" and may carry a DataParallel "module." prefix
    fake_catalogue(monkeypatch, {"mprnet-derain": {"state_dict": {"module." + k: v for k, v in src.items()}}})
    d = restorers.MPRNetDefense(task="derain", seed=123)  # other init: weights come from the file
    x = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(d(x), mprnet_random(x), atol=1e-6)

    broken = {k: v for k, v in src.items() if "tail" not in k}
    fake_catalogue(monkeypatch, {"mprnet-derain": {"state_dict": broken}})
    with pytest.raises(MissingWeightsError, match="tail.weight"):
        restorers.MPRNetDefense(task="derain")


@pytest.mark.slow
def test_mprnet_denoise_widths_run():
    d = restorers.MPRNetDefense(pretrained=False)
    with torch.no_grad():
        y = d(torch.rand(1, 3, 19, 17))
    assert y.shape == (1, 3, 19, 17)


def test_missing_weights_names_the_make_target(monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("IQALIB_CACHE", str(tmp_path))
    for factory, target in ((lambda: iqalib.load_defense("mprnet", device="cpu"), "mprnet-denoise"),
                            (lambda: iqalib.load_defense("mprnet:deblur", device="cpu"), "mprnet-deblur"),
                            (lambda: iqalib.load_defense("realesrgan", device="cpu"), "realesr-general")):
        with pytest.raises(MissingWeightsError, match=f"make weights WEIGHTS={target}"):
            factory()


def test_dni_interpolation():
    a = {"w": torch.ones(2), "b": torch.zeros(1)}
    b = {"w": torch.zeros(2), "b": torch.full((1,), 10.0)}
    out = interpolate_states(a, b, 0.2)
    assert torch.allclose(out["w"], torch.full((2,), 0.2)) and torch.allclose(out["b"], torch.tensor([8.0]))
    with pytest.raises(ValueError, match="different keys"):
        interpolate_states(a, {"w": torch.ones(2)}, 0.5)


def _srvgg_states(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in SRVGGNetCompact().state_dict().items()}
    return [{k: torch.randn(s, generator=g) for k, s in shapes.items()} for _ in range(n)]


def test_realesrgan_loads_interpolated_weights(monkeypatch):
    a, b = _srvgg_states(2)
    fake_catalogue(monkeypatch, {"realesr-general-x4v3": {"params": a},
                                 "realesr-general-wdn-x4v3": {"params": b}})
    d = restorers.RealESRGANDefense()
    sd = d.net.state_dict()
    # first conv (weight, bias) + PReLU, 32 x (conv + PReLU), last conv: 3 + 96 + 2 keys
    assert len(sd) == 3 + 32 * 3 + 2 and sd["body.1.weight"].shape == (64,)
    for k, va in a.items():
        assert torch.allclose(sd[k], 0.2 * va + 0.8 * b[k], atol=1e-6)
    only = restorers.RealESRGANDefense(denoise_strength=1.0)
    assert all(torch.equal(only.net.state_dict()[k], a[k]) for k in a)
    assert d.weights == ("realesr-general-x4v3", "realesr-general-wdn-x4v3")


def test_realesrgan_follows_upstream_dni_key_rules(monkeypatch):
    # RealESRGANer.dni blends the "params" entries into the x4v3 dict; its loader then prefers
    # "params_ema" when that dict has one, which leaves the blend unused
    a, b, ema = _srvgg_states(3, seed=1)
    fake_catalogue(monkeypatch, {"realesr-general-x4v3": {"params": a, "params_ema": ema},
                                 "realesr-general-wdn-x4v3": {"params": b, "params_ema": a}})
    sd = restorers.RealESRGANDefense().net.state_dict()
    assert all(torch.equal(sd[k], ema[k]) for k in ema)
    # the blend reads "params" even when the wdn file carries an EMA copy too
    fake_catalogue(monkeypatch, {"realesr-general-x4v3": {"params": a},
                                 "realesr-general-wdn-x4v3": {"params": b, "params_ema": ema}})
    sd = restorers.RealESRGANDefense(denoise_strength=0.5).net.state_dict()
    assert all(torch.allclose(sd[k], 0.5 * a[k] + 0.5 * b[k], atol=1e-6) for k in a)
    fake_catalogue(monkeypatch, {"realesr-general-x4v3": {"params_ema": a},
                                 "realesr-general-wdn-x4v3": {"params": b}})
    with pytest.raises(MissingWeightsError, match="'params'"):
        restorers.RealESRGANDefense()


def test_srvgg_is_a_residual_over_nearest_upsampling():
    net = SRVGGNetCompact(num_conv=2)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
    x = torch.rand(1, 3, 5, 7)
    assert torch.equal(net(x), F.interpolate(x, scale_factor=4, mode="nearest"))
    assert net(x).shape == (1, 3, 20, 28)


def test_realesrgan_random_shape_range_gradient():
    d = restorers.RealESRGANDefense(pretrained=False)
    x = torch.rand(2, 3, 11, 15, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = d(x)
    # the default is the MSU code's: the metric scores the x4 output
    assert y.shape == (2, 3, 44, 60) and d.changes_size and d.outscale is None
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    torch.testing.assert_close(y, d.net(x).clamp(0, 1))
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    d1 = iqalib.load_defense("realesrgan:outscale1", pretrained=False, device="cpu")
    assert not d1.changes_size and d1(x.detach()).shape == x.shape
    d2 = restorers.RealESRGANDefense(pretrained=False, outscale=2)
    assert d2.changes_size and d2(x.detach()).shape[-2:] == (22, 30)
