"""Zhang et al.'s perceptually constrained attacks: raise the score, stay close in DISTS /
LPIPS / SSIM.

DISTS and LPIPS come from pyiqa's architectures with the checkpoints of
:mod:`iqalib.weights` (``dists`` + ``torchvision-vgg16``; ``lpips-alex`` +
``torchvision-alexnet``; ``lpips-vgg`` + ``torchvision-vgg16``). Without them the attack
raises :class:`~iqalib.errors.MissingWeightsError` at construction, naming the
``make weights WEIGHTS=<name>`` target. The SSIM variant needs nothing and runs offline.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..device import follow_input
from ..errors import MissingWeightsError
from ..registry import ATTACKS
from .base import Attack, adam_image_loop, check_count, check_positive

# torchvision looks its ImageNet checkpoints up by these file names (the hash prefix is
# checked on load), so the catalogue files are exposed to it under them.
_TORCHVISION_FILES = {"torchvision-vgg16": "vgg16-397923af.pth",
                      "torchvision-alexnet": "alexnet-owt-7be5be79.pth"}


def weight_file(name: str) -> Path:
    """The local path of catalogue checkpoint ``name`` or a MissingWeightsError saying how
    to fetch it (delegates to :func:`iqalib.weights.path`)."""
    try:
        from .. import weights
    except ImportError:  # the catalogue module is not installed in this checkout yet
        weights = None
    if weights is not None:
        return Path(weights.path(name))
    raise MissingWeightsError(
        f"checkpoint {name!r} is not available (no weights catalogue in this install): "
        f"run `make weights WEIGHTS={name}`")


@contextlib.contextmanager
def torchvision_checkpoints(*names: str) -> Iterator[None]:
    """Let torchvision's ``weights='IMAGENET1K_V1'`` find our catalogue copies offline.

    pyiqa builds VGG16 / AlexNet with torchvision's pretrained weights, which torchvision
    looks for in ``<torch hub dir>/checkpoints/<file>`` before downloading. We point the hub
    dir at a cache folder holding links to the catalogue files, and restore it afterwards.
    """
    from ..paths import cache_dir

    files = {n: weight_file(n) for n in names}  # raises MissingWeightsError first
    hub = cache_dir() / "torch-hub"
    (hub / "checkpoints").mkdir(parents=True, exist_ok=True)
    for n, src in files.items():
        dst = hub / "checkpoints" / _TORCHVISION_FILES[n]
        if not dst.exists():
            tmp = dst.with_suffix(f".tmp{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(src.resolve())
            tmp.replace(dst)  # atomic: parallel workers never see a half-made link
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        yield
    finally:
        torch.hub.set_dir(old)


def _load_state(module: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "params" in state:
        state = state["params"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # the files hold only the learned heads; the backbone comes from torchvision
    _, unexpected = module.load_state_dict(state, strict=False)
    if unexpected:
        raise MissingWeightsError(f"{path} does not look like the expected checkpoint "
                                  f"(unexpected keys {unexpected[:3]}); re-fetch it with "
                                  "`make weights`")


def build_distance(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``D(x_adv, x) -> [B]`` for ``kind`` in dists / lpips-alex / lpips-vgg / ssim."""
    if kind == "ssim":
        return ssim_distance
    if kind == "dists":
        from pyiqa.archs.dists_arch import DISTS

        dists_file = weight_file("dists")
        with torchvision_checkpoints("torchvision-vgg16"):
            net = DISTS(pretrained=False)
        _load_state(net, dists_file)
        return _NetDistance(net)
    if kind in ("lpips-alex", "lpips-vgg"):
        from pyiqa.archs.lpips_arch import LPIPS

        backbone = "torchvision-alexnet" if kind == "lpips-alex" else "torchvision-vgg16"
        lpips_file = weight_file(kind)
        with torchvision_checkpoints(backbone):
            net = LPIPS(net=kind.split("-")[1], version="0.1", pretrained=False)
        _load_state(net, lpips_file)
        return _NetDistance(net)
    raise ValueError(f"unknown distance {kind!r}: use dists, lpips-alex, lpips-vgg or ssim")


class _NetDistance(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x_adv: Tensor, x: Tensor) -> Tensor:
        follow_input(self.net, x)
        return self.net(x_adv, x).reshape(x.shape[0], -1).mean(dim=1)


def ssim_distance(x_adv: Tensor, x: Tensor) -> Tensor:
    """``1 - SSIM`` per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, data
    range 1, K1 0.01, K2 0.03, mean over the valid region and the three channels).

    Same values as kornia's / skimage's SSIM (tested against skimage), computed with one
    separable 11-tap Gaussian (kornia's kernel) over the five moment maps at once: about
    3x cheaper than kornia.metrics.ssim's 11x11 window, which matters inside a 10-step loop.
    """
    import kornia

    c = x.shape[1]
    g = kornia.filters.get_gaussian_kernel1d(11, 1.5).to(x).reshape(-1)
    maps = torch.cat([x_adv, x, x_adv * x_adv, x * x, x_adv * x], dim=1)
    n = maps.shape[1]
    maps = torch.nn.functional.conv2d(maps, g.reshape(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    maps = torch.nn.functional.conv2d(maps, g.reshape(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    mu_a, mu_b, aa, bb, ab = maps.split(c, dim=1)
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return 1.0 - ssim.mean(dim=(1, 2, 3))


#: distance name -> the catalogue checkpoints it needs (see iqalib.weights)
DISTANCE_WEIGHTS = {"dists": ("dists", "torchvision-vgg16"),
                    "lpips-alex": ("lpips-alex", "torchvision-alexnet"),
                    "lpips-vgg": ("lpips-vgg", "torchvision-vgg16"),
                    "ssim": ()}


class Zhang(Attack):
    """Zhang et al., "Perceptual attacks of no-reference image quality models with
    human-in-the-loop", NeurIPS 2022 (as the MSU group runs it).

    Adam on the image (``lr=0.005``, ``steps=10``) minimising per image
    ``D(x', x) - sign * score / range`` with ``D`` = DISTS, LPIPS or ``1 - SSIM``; NaN
    gradients are zeroed, the image is clipped to [0, 1] after every step.
    """

    name = "zhang"
    has_eps = False

    def __init__(self, metric, *, distance: str = "dists", lr: float = 0.005, steps: int = 10,
                 seed: int = 0):
        if distance not in DISTANCE_WEIGHTS:
            raise ValueError(f"zhang distance must be one of {sorted(DISTANCE_WEIGHTS)}, "
                             f"got {distance!r}")
        check_positive(lr, "zhang lr")
        check_count(steps, "zhang steps")
        super().__init__(metric, distance=distance, lr=float(lr), steps=int(steps), seed=seed)
        self.name = f"zhang-{distance}"
        self.weights = DISTANCE_WEIGHTS[distance]
        # built now so a missing checkpoint fails at construction, not mid-run
        self._distance = build_distance(distance)

    def perturb(self, x: Tensor) -> Tensor:
        x_ref = x.clone()

        def loss(xa: Tensor) -> Tensor:
            return self._distance(xa, x_ref) - self.metric.sign * self.metric(xa) / self.metric.range_width

        return adam_image_loop(x, loss, lr=self.lr, steps=self.steps)


def _variant(cls_name: str, distance: str, doc_name: str) -> type[Zhang]:
    """A registered subclass with the distance fixed and its checkpoints declared."""

    def __init__(self, metric, *, lr: float = 0.005, steps: int = 10, seed: int = 0):
        Zhang.__init__(self, metric, distance=distance, lr=lr, steps=steps, seed=seed)

    doc = (f"Zhang et al. 2022 with D = {doc_name}: Adam lr 0.005, 10 steps, "
           f"loss D(x', x) - score / range.")
    return type(cls_name, (Zhang,), {"__init__": __init__, "__doc__": doc,
                                     "name": f"zhang-{distance}",
                                     "weights": DISTANCE_WEIGHTS[distance],
                                     "__module__": __name__})


ZhangDISTS = _variant("ZhangDISTS", "dists", "DISTS")
ZhangLPIPS = _variant("ZhangLPIPS", "lpips-alex", "LPIPS (AlexNet)")
ZhangLPIPSVGG = _variant("ZhangLPIPSVGG", "lpips-vgg", "LPIPS (VGG)")
ZhangSSIM = _variant("ZhangSSIM", "ssim", "1 - SSIM")

ATTACKS.add("zhang-dists", ZhangDISTS, aliases=["zhang", "zhang-et-al-dists"],
            tags=("gradient", "needs-weights"))
ATTACKS.add("zhang-lpips", ZhangLPIPS, aliases=["zhang-lpips-alex", "zhang-et-al-lpips"],
            tags=("gradient", "needs-weights"))
ATTACKS.add("zhang-lpips-vgg", ZhangLPIPSVGG, tags=("gradient", "needs-weights"))
ATTACKS.add("zhang-ssim", ZhangSSIM, aliases=["zhang-et-al-ssim"], tags=("gradient",))
