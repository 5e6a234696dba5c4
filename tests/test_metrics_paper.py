"""The paper's three metrics (Linearity, SPAQ, MetaIQA) on random weights, and strict loading.

No pretrained file exists offline: the checkpoints here are random initialisations saved in
the published layouts, loaded back through the catalogue (IQALIB_WEIGHTS) or a path.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import iqalib
from iqalib.errors import MissingWeightsError
from iqalib.metrics._checkpoint import CheckpointMismatchError
from iqalib.metrics.linearity import Linearity
from iqalib.metrics.metaiqa import MetaIQA
from iqalib.metrics.spaq import SPAQBaseline, extract_patches, patch_starts


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("IQALIB_WEIGHTS", str(d))
    return d


def _grad_check(metric, x):
    x = x.clone().requires_grad_(True)
    s = metric(x)
    assert s.shape == (x.shape[0],) and torch.isfinite(s).all()
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().flatten(1).sum(1) > 0).all()
    return s.detach()


# -- Linearity (ResNeXt-101: built once for the module) -------------------------------------
@pytest.fixture(scope="module")
def linearity():
    return Linearity(pretrained=False)


def test_linearity_random_init_shape_grad(linearity, photos64):
    assert linearity.score_range == (25.780681610107422, 83.22696685791016)
    assert not linearity.lower_better
    assert linearity.weights == ("linearity-p1q2",)
    assert not any(p.requires_grad for p in linearity.parameters())  # input grads only
    _grad_check(linearity, photos64[:2, :, :32, :48])


def test_linearity_layout_matches_the_release(linearity):
    keys = linearity.net.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"features", "dr6", "dr7", "regr6", "regr7",
                                               "regression"}
    assert "features.7.2.conv3.weight" in keys and "features.0.weight" in keys
    assert linearity.net.dr6[0].in_features == 1024 and linearity.net.dr7[0].in_features == 2048
    assert linearity.net.regression.in_features == 128


def test_linearity_checkpoint_round_trip(linearity, weights_dir, photos64):
    # p1q2.pth layout: model / optimizer / amp / k [3] / b [3]
    state = {k: v.clone() for k, v in linearity.net.state_dict().items()}
    ckpt = {"model": state, "optimizer": {}, "amp": None,
            "k": [2.5, 1.0, 1.0], "b": [40.0, 0.0, 0.0]}
    torch.save(ckpt, weights_dir / "p1q2.pth")
    x = photos64[:2, :, :32, :32]
    with torch.no_grad():
        raw = linearity(x)  # k=1, b=0 on the random init
    loaded = Linearity()  # pretrained=True -> weights.load_state("linearity-p1q2")
    with torch.no_grad():
        got = loaded(x)
    torch.testing.assert_close(got, raw * 2.5 + 40.0, rtol=1e-5, atol=1e-4)
    assert loaded.k.item() == 2.5 and loaded.b.item() == 40.0


def test_linearity_strict_keys(linearity):
    good = {"model": linearity.net.state_dict(), "k": [1.0] * 3, "b": [0.0] * 3}
    missing = dict(good, model={k: v for k, v in good["model"].items() if k != "dr6.0.weight"})
    with pytest.raises(CheckpointMismatchError, match=r"1 missing keys: dr6\.0\.weight"):
        linearity.load_checkpoint(missing)
    renamed = dict(good, model={("module." + k if k.startswith("regression") else k): v
                                for k, v in good["model"].items()})
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys: module\.regression"):
        linearity.load_checkpoint(renamed)
    with pytest.raises(CheckpointMismatchError, match="key 'k'"):
        linearity.load_checkpoint({"model": good["model"], "b": [0.0] * 3})


def test_linearity_missing_weights_names_make_target(weights_dir):
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS=linearity-p1q2"):
        Linearity()


def test_linearity_optional_resize(linearity, photos64):
    x = photos64[:1]
    try:
        linearity.resize = (32, 40)
        with torch.no_grad():
            a = linearity(x)
        linearity.resize = None
        with torch.no_grad():
            b = linearity(F.interpolate(x, size=(32, 40), mode="bilinear", align_corners=False,
                                        antialias=True))
    finally:
        linearity.resize = None
    torch.testing.assert_close(a, b)


# -- SPAQ ------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [224, 225, 257, 300, 335, 336, 337, 512, 683, 1000])
def test_spaq_patch_starts_cover_every_pixel(length):
    starts = patch_starts(length)
    assert starts[0] == 0 and starts[-1] == length - 224  # flush with both borders
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s:s + 224] = True
    assert covered.all()
    steps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0 < d <= 112 for d in steps)  # stride 112, last step may be shorter
    assert len(set(starts)) == len(starts)


def test_spaq_patch_starts_known_grid():
    assert patch_starts(512) == [0, 112, 224, 288]  # SPAQ's grid on a 512 side
    assert patch_starts(300) == [0, 76]
    assert patch_starts(224) == [0]
    with pytest.raises(ValueError):
        patch_starts(223)


def test_spaq_extract_patches_odd_size():
    x = torch.arange(2 * 3 * 300 * 257, dtype=torch.float32).view(2, 3, 300, 257)
    p = extract_patches(x)
    assert p.shape == (2, 2 * 2, 3, 224, 224)  # rows [0, 76], cols [0, 33]
    torch.testing.assert_close(p[:, 0], x[..., :224, :224])
    torch.testing.assert_close(p[:, -1], x[..., -224:, -224:])  # bottom-right corner patch
    torch.testing.assert_close(p[:, 1], x[..., :224, 33:257])


@pytest.fixture(scope="module")
def spaq():
    return SPAQBaseline(pretrained=False)


def test_spaq_random_init_odd_size_grad_reaches_corners(spaq):
    spaq.resize = None
    try:
        x = torch.rand(1, 3, 300, 257, generator=torch.Generator().manual_seed(0))
        x.requires_grad_(True)
        s = spaq(x)
        assert s.shape == (1,) and torch.isfinite(s).all()
        s.sum().backward()
        g = x.grad[0].abs().sum(0)
        for i, j in [(0, 0), (0, 256), (299, 0), (299, 256)]:
            assert g[i, j] > 0, f"pixel {(i, j)} is outside every patch"
    finally:
        spaq.resize = None


class _PatchMean(torch.nn.Module):
    """A stand-in patch scorer: the mean intensity of each patch, [N, 1]."""

    def forward(self, p):
        return p.mean(dim=(1, 2, 3))[:, None]


def test_spaq_is_mean_of_patch_scores(spaq):
    net, spaq.net, spaq.resize = spaq.net, _PatchMean(), None
    try:
        x = torch.rand(2, 3, 230, 400, generator=torch.Generator().manual_seed(1))
        got = spaq(x)
        ref = []
        for img in x:  # by hand: rows [0, 6], cols [0, 112, 176]
            tiles = [img[:, i:i + 224, j:j + 224] for i in (0, 6) for j in (0, 112, 176)]
            ref.append(torch.stack([t.mean() for t in tiles]).mean())
        torch.testing.assert_close(got, torch.stack(ref))
        spaq.patch_batch = 1  # chunking the patches changes nothing
        torch.testing.assert_close(spaq(x), got)
    finally:
        spaq.net, spaq.resize, spaq.patch_batch = net, None, 64


def test_spaq_resize_shorter_side_and_small_images(spaq):
    assert spaq.resize is None  # the default: the MSU wrapper's native size
    assert spaq.prepare(torch.rand(1, 3, 100, 150)).shape[-2:] == (224, 336)
    with torch.no_grad():
        assert spaq(torch.rand(2, 3, 100, 150)).shape == (2,)
    spaq.resize = 512
    try:
        assert spaq.prepare(torch.rand(1, 3, 64, 80)).shape[-2:] == (512, 640)
        assert spaq.prepare(torch.rand(1, 3, 600, 400)).shape[-2:] == (768, 512)
    finally:
        spaq.resize = None
    assert iqalib.load_metric("spaq:resize512", pretrained=False).resize == 512


def _msu_patch_grid(side: int, input_size: int = 224) -> list[int]:
    # generate_patches_custom of the MSU wrapper, restated: stride int(224 / 2)
    stride = int(input_size / 2)
    idx = [i * stride for i in range(int((side - input_size) / stride) + 1)]
    if side - input_size != idx[-1]:
        idx.append(side - input_size)
    return idx


@pytest.mark.parametrize("hw", [(299, 299), (384, 512), (224, 224), (500, 333)])
def test_spaq_default_patches_are_the_msu_wrappers(spaq, hw):
    x = torch.zeros(1, 3, *hw)
    patches = extract_patches(spaq.prepare(x))
    expected = len(_msu_patch_grid(hw[0])) * len(_msu_patch_grid(hw[1]))
    assert patches.shape[1] == expected
    if hw == (299, 299):
        assert expected == 4  # the NIPS'17 images: a 2 x 2 grid at offsets 0 and 75


def test_spaq_checkpoint_round_trip_and_strict(spaq, weights_dir):
    other = SPAQBaseline(pretrained=False, seed=1, resize=None)
    torch.save({"state_dict": other.net.state_dict()}, weights_dir / "BL_release.pt")
    loaded = SPAQBaseline(resize=None)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), other(x))
    # keys without the 'backbone.' prefix are a different layout: refused, not half-loaded
    bare = {k.removeprefix("backbone."): v for k, v in other.net.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="missing keys: backbone"):
        spaq.load_checkpoint({"state_dict": bare})


def test_spaq_missing_weights_names_make_target(weights_dir):
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS=spaq-baseline"):
        SPAQBaseline()


# -- MetaIQA -----------------------------------------------------------------------------------
def test_metaiqa_random_init_shape_grad_range(photos64):
    m = MetaIQA(pretrained=False)
    assert m.score_range == (0.0, 1.0) and not m.lower_better and m.weights == ("metaiqa",)
    s = _grad_check(m, photos64)
    assert ((s > 0) & (s < 1)).all()  # sigmoid output


def test_metaiqa_checkpoint_round_trip(weights_dir, photos64):
    src = MetaIQA(pretrained=False, seed=1)
    # the released file uses MetaIQA's own names (net.* for the head) and has no mean/std
    state = {("net." + k[len("head."):] if k.startswith("head.") else k): v
             for k, v in src.inner.net.state_dict().items() if k not in ("mean", "std")}
    torch.save(state, weights_dir / "Metaiqa_livec.pth")
    loaded = MetaIQA()  # seed 0 init, then the file
    with torch.no_grad():
        torch.testing.assert_close(loaded(photos64), src(photos64))
    state.pop("net.fc3.bias")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys: head\.fc3\.bias"):
        loaded.load_checkpoint(state)


def test_metaiqa_default_is_native_resolution_resize224_is_pyiqas(photos64):
    m = MetaIQA(pretrained=False)
    assert m.resize is None
    seen = []
    hook = m.inner.net.resnet_layer.conv1.register_forward_hook(
        lambda mod, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    x = torch.rand(2, 3, 299, 260, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        native = m(x)
        # the MSU wrapper: torchvision's Normalize, then ResNet-18 and the head, no resize
        from torchvision.transforms import Normalize

        net = m.inner.net
        ref = net.head(net.resnet_layer(Normalize([0.485, 0.456, 0.406],
                                                  [0.229, 0.224, 0.225])(x))).reshape(-1)
        torch.testing.assert_close(native, ref)
        assert seen[0] == (299, 260)
        m.resize = 224
        try:
            resized = m(x)
            # pyiqa's own forward resizes to 224x224 bilinear: the preset must equal it
            theirs = m.inner.net(x).reshape(-1)
        finally:
            m.resize = None
    assert seen[-2] == (224, 224)
    torch.testing.assert_close(resized, theirs)
    assert not torch.allclose(resized, native)
    hook.remove()
    assert iqalib.load_metric("metaiqa:resize224", pretrained=False).resize == 224


def test_metaiqa_missing_weights_names_make_target(weights_dir):
    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS=metaiqa"):
        MetaIQA()
