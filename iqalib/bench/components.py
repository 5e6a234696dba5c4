"""The paper's components built for timing: the real architectures, random weights.

Timing does not depend on the weights' values, so the projection builds each network empty
where its checkpoint may be absent: the paper metrics (``pretrained=False``), MPRNet and
Real-ESRGAN (``pretrained=False``), Zhang et al.'s DISTS / LPIPS networks, and the
guided-diffusion UNet of DiffPure. Everything else is built as the registry builds it.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import torch

#: the paper metrics (random weights here; the real checkpoints time the same)
PAPER_METRICS = ("linearity", "metaiqa", "spaq")
#: purifiers with checkpoints we build empty for timing
RANDOM_WEIGHT_PURIFIERS = ("mprnet", "realesrgan")


@contextlib.contextmanager
def _empty_torchvision_backbones():
    """pyiqa's DISTS and LPIPS ask torchvision for ImageNet VGG-16 / AlexNet weights (a
    download) whatever their ``pretrained`` flag says: hand them the empty networks instead."""
    import torchvision

    vgg16, alexnet = torchvision.models.vgg16, torchvision.models.alexnet
    with mock.patch.object(torchvision.models, "vgg16", lambda *a, **k: vgg16(weights=None)), \
            mock.patch.object(torchvision.models, "alexnet", lambda *a, **k: alexnet(weights=None)):
        yield


def random_distance(kind: str):
    """Zhang et al.'s distance network with random weights (DISTS: VGG-16; LPIPS: AlexNet or
    VGG-16), for timing only; ``"ssim"`` is the real one (it has no weights)."""
    from ..attacks import zhang

    if kind == "ssim":
        return zhang.ssim_distance
    if kind == "dists":
        from pyiqa.archs.dists_arch import DISTS

        with _empty_torchvision_backbones():
            return zhang._NetDistance(DISTS(pretrained=False))
    if kind.startswith("lpips-"):
        from pyiqa.archs.lpips_arch import LPIPS

        with _empty_torchvision_backbones():
            return zhang._NetDistance(LPIPS(net=kind.split("-")[1], version="0.1",
                                            pretrained=False, pnet_rand=True))
    raise ValueError(f"unknown distance {kind!r}")


def build_attack(name: str, metric):
    """The registered attack ``name`` on ``metric``; Zhang et al.'s DISTS / LPIPS variants
    get their distance network with random weights (their checkpoints may be absent)."""
    from ..attacks import zhang
    from ..registry import ATTACKS

    with mock.patch.object(zhang, "build_distance", random_distance):
        return ATTACKS.create(name, metric=metric)


def build_metric(name: str, device: torch.device):
    """A metric as the paper run uses it; the paper metrics with random weights."""
    from ..api import load_metric

    kwargs = {"pretrained": False} if name in PAPER_METRICS else {}
    return load_metric(name, device=str(device), **kwargs)


def build_defense(spec: str, device: torch.device | str = "cpu"):
    """A purifier by registry spec; MPRNet and Real-ESRGAN with random weights."""
    from ..api import load_defense

    kwargs = {"pretrained": False} if spec.split(":")[0] in RANDOM_WEIGHT_PURIFIERS else {}
    return load_defense(spec, device=str(device), **kwargs)


def guided_diffpure(t: int, device: torch.device | str = "cpu"):
    """DiffPure at ``t`` with the guided-diffusion prior exactly as DiffPure loads and runs it
    (its precision on this device, channels-last, autocast), the UNet's weights random.
    The prior is loaded here, so a timer sees only the purification."""
    from ..defenses import diffpure
    from ..defenses.guided_unet import build_unet

    unet = build_unet().eval().requires_grad_(False)
    with mock.patch.dict(diffpure.PRIORS, {"guided": lambda: diffpure.UNetPrior(unet)}):
        d = diffpure.DiffPure(t=t, prior="guided").to(device)
        d.get_prior()
    return d


__all__ = ["PAPER_METRICS", "build_attack", "build_defense", "build_metric",
           "guided_diffpure", "random_distance"]
