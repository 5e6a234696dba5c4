"""The FCN filter purifier: architecture, checkpoint formats, provenance in its parameters and
the shipped weights (which must beat the unpurified input against AdvCF on a photo they never
saw). Training is tested in test_training.py."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

import iqalib
from iqalib.defenses import fcn
from iqalib.errors import MissingWeightsError
from iqalib.evaluate import measures
from iqalib.paths import assets_dir


def test_architecture_matches_the_paper():
    net = fcn.FCNFilter()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {"conv1.weight": (64, 3, 3, 3), "conv1.bias": (64,),
                      "conv2.weight": (16, 64, 3, 3), "conv2.bias": (16,),
                      "conv3.weight": (3, 16, 3, 3), "conv3.bias": (3,)}
    assert sum(p.numel() for p in net.parameters()) == 11459
    x = torch.rand(2, 3, 20, 24)
    y = net(x)
    assert y.shape == x.shape and y.abs().max() < 1  # tanh head
    assert torch.isfinite(net(x * 0)).all()


def test_forward_is_the_authors_layer_order():
    """Their forward: conv1 -> LeakyReLU(0.2) -> conv2 -> InstanceNorm -> LeakyReLU -> conv3 ->
    tanh, written here with torch.nn modules of their FCN(norm_type='instance')."""
    net = fcn.FCNFilter().eval()
    act = torch.nn.LeakyReLU(0.2)
    norm = torch.nn.InstanceNorm2d(16)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    ref = torch.tanh(net.conv3(act(norm(net.conv2(act(net.conv1(x)))))))
    assert torch.allclose(net(x), ref, atol=1e-6)


def test_authors_checkpoint_format_loads(tmp_path):
    net = fcn.FCNFilter()
    path = tmp_path / "best_fcn.pth"
    torch.save({"model": net.state_dict(), "epoch": 17}, path)  # wianluna/adversarial_purification
    d = iqalib.load_defense("fcn-filter", device="cpu", weights=str(path))
    assert d.meta["epoch"] == 17 and d.hparams["trained"] == {"epoch": 17}
    x = torch.rand(1, 3, 16, 16)
    # the purifier holds its filter channels-last: the same numbers up to float rounding
    assert torch.allclose(d(x), net.eval()(x).clamp(0, 1), atol=1e-6)
    with pytest.raises(MissingWeightsError, match="06_fcn_filter"):
        iqalib.load_defense("fcn-filter", device="cpu", weights=str(tmp_path / "nope.pt"))


def test_provenance_names_the_file_not_its_folder(tmp_path):
    """defense_params carry the file's sha256 (a different filter gives different rows and
    grid keys) and no machine path."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        p = tmp_path / f"dir{seed}" / "f.pt"
        p.parent.mkdir()
        torch.save({"model": fcn.FCNFilter().state_dict(), "epoch": 3,
                    "meta": {"metric": "toy", "attack": "advcf", "val_ssim": 0.912345678,
                             "train_ids": ["a", "b"]}}, p)
        paths.append(p)
    a, b = (fcn.FCNFilterDefense(weights=str(p)) for p in paths)
    assert a.hparams["sha256"] == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert a.params_json() != b.params_json()
    params = json.loads(a.params_json())
    assert params["weights"] == "f.pt" and str(tmp_path) not in a.params_json()
    assert params["trained"] == {"metric": "toy", "attack": "advcf", "val_ssim": 0.9123,
                                 "epoch": 3}


def test_defense_range_and_gradient():
    d = fcn.FCNFilterDefense(pretrained=False)
    x = torch.rand(2, 3, 17, 23).requires_grad_(True)
    y = d(x)
    assert y.shape == x.shape and 0 <= float(y.detach().min()) and float(y.detach().max()) <= 1
    y.sum().backward()
    assert x.grad.abs().sum() > 0 and d.differentiable and not d.stochastic


def test_shipped_file_says_what_trained_it():
    path = assets_dir() / fcn.DEFAULT_ASSET
    assert path.is_file(), "iqalib/assets/fcn_filter.pt must ship with the package"
    ckpt = torch.load(path, weights_only=True)  # plain tensors and primitives only
    meta = ckpt["meta"]
    assert meta["metric"] == "effnet-iqa" and meta["attack"] == "advcf"
    assert json.loads(meta["attack_params"])["steps"] >= 1
    # trained on the foolbox wheel's photos only: the offline sample set is all held out
    assert meta["train_photos"] and all(p.startswith("imagenet_") for p in meta["train_photos"])
    assert not set(meta["train_photos"]) & set(meta["val_photos"])
    assert meta["val_ssim"] > meta["val_ssim_attacked"]
    d = iqalib.load_defense("fcn-filter", device="cpu")
    assert d.hparams["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.hparams["trained"]["metric"] == "effnet-iqa"


def test_shipped_filter_undoes_advcf_on_its_held_out_photos(one_thread):
    """AdvCF (default settings) on effnet-iqa against the four photos the shipped recipe held out
    (never trained on): on average the purified images are closer to the clean ones than the
    attacked images (SSIM and PSNR of iqalib.evaluate.measures), and the scores move back
    towards the clean scores. Per photo it is not always so: on mildly attacked photos the
    filter's colour correction can cost more than it undoes (see the README)."""
    from iqalib.training.data import centre_crop, load_source, to_tensor

    meta = torch.load(assets_dir() / fcn.DEFAULT_ASSET, weights_only=True)["meta"]
    x = torch.stack([to_tensor(centre_crop(load_source(p), 160)) for p in meta["val_photos"]])
    metric = iqalib.load_metric("effnet-iqa", device="cpu")
    adv = iqalib.load_attack("advcf", metric)(x)
    purified = iqalib.load_defense("fcn-filter", device="cpu")(adv)
    assert float(measures.ssim(purified, x).mean()) > float(measures.ssim(adv, x).mean()) + 0.03
    assert float(measures.psnr(purified, x).mean()) > float(measures.psnr(adv, x).mean()) + 1.0
    with torch.no_grad():
        s_clean, s_adv, s_pur = (metric.score(v) for v in (x, adv, purified))
    assert float((s_pur - s_clean).abs().mean()) < float((s_adv - s_clean).abs().mean())