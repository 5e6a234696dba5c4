"""Our convolutional networks run channels-last (iqalib.device.channels_last), and that changes
nothing but float rounding: each purifier against the same network in the default layout."""
import copy

import pytest
import torch

import iqalib

_NETWORK_PURIFIERS = {"fcn-filter": {}, "ffdnet": {}, "mprnet": {"pretrained": False},
                      "realesrgan": {"pretrained": False}}


def _conv_weight(net: torch.nn.Module) -> torch.Tensor:
    return next(p for p in net.parameters() if p.ndim == 4)


@pytest.mark.parametrize("spec", sorted(_NETWORK_PURIFIERS))
def test_network_purifiers_are_channels_last_and_agree_with_the_default_layout(spec):
    d = iqalib.load_defense(spec, device="cpu", **_NETWORK_PURIFIERS[spec])
    assert _conv_weight(d.net).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    out = d(x)
    assert out.is_contiguous()  # what callers view / reshape
    plain = copy.deepcopy(d)
    plain.net.to(memory_format=torch.contiguous_format)
    assert not _conv_weight(plain.net).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, plain(x), rtol=0, atol=1e-5)


def test_diffpure_prior_runs_channels_last():
    d = iqalib.load_defense("diffpure", t=2, prior="ffdnet", device="cpu")
    out = d(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    assert out.is_contiguous()
    assert _conv_weight(d.get_prior().net).is_contiguous(memory_format=torch.channels_last)


def test_effnet_iqa_backbone_is_channels_last_and_scores_as_before():
    m = iqalib.load_metric("effnet-iqa", device="cpu")
    assert _conv_weight(m.backbone).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = m(x)
        m.backbone.to(memory_format=torch.contiguous_format)
        plain = m(x)
    # 1e-4 points of a 0-100 score: float rounding, far below any real difference
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-4)


@pytest.mark.parametrize("spec", sorted(_NETWORK_PURIFIERS))
def test_network_purifiers_follow_the_input_device_and_keep_its_dtype(spec):
    from iqalib.defenses import create_defense
    from iqalib.defenses.base import NetworkDefense

    d = create_defense(spec, **_NETWORK_PURIFIERS[spec])  # no .to(device) yet
    assert isinstance(d, NetworkDefense) and d.device is None
    assert not any(p.requires_grad for p in d.net.parameters()) and not d.net.training
    # no device set: the network goes where the input is (the meta device stands in for a GPU)
    moved = copy.deepcopy(d)
    moved._run(torch.empty(1, 3, 8, 8, device="meta"))
    assert {p.device.type for p in moved.net.parameters()} == {"meta"}
    assert {p.device.type for p in d.net.parameters()} == {"cpu"}
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    d.net.double()  # the network runs in its own dtype, the caller gets the input's back
    assert d(x).dtype == torch.float32 and d(x.double()).dtype == torch.float64
