"""Input-transform purifiers: the study's geometric and filtering baselines.

Every purifier here is batched, runs on the input's device, and (except where a class says
otherwise) keeps gradients, so adaptive attacks can differentiate through it. Settings follow
arXiv 2404.06957 (Gushchin et al., "Adversarial purification for no-reference image-quality
metrics: applicability study and new methods") and the public code of the authors' group
(msu-video-group/adversarial-defenses-for-iqa, wianluna/adversarial_purification), whose
preset sweeps the registry presets reproduce (``iqalib.load_defense("median:k7")``).

Older input-transform defenses these come from: Guo et al., "Countering adversarial images
using input transformations" (ICLR 2018; crop, rescale, JPEG) and Xie et al., "Mitigating
adversarial effects through randomization" (ICLR 2018; random resize / pad).
"""
from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import DEFENSES
from .base import Defense


def _odd_kernel(k: int, what: str) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"{what} kernel_size must be a positive odd integer, got {k!r}")
    k = int(k)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"{what} kernel_size must be a positive odd integer, got {k}")
    return k


def _positive(v, what: str) -> float:
    v = float(v)
    if not 0 < v < float("inf"):
        raise ValueError(f"{what} must be a finite number > 0, got {v}")
    return v


def _check_bool(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{what} must be True or False, got {v!r}")  # noqa: TRY004 - one error class for every bad setting
    return v


def opencv_sigma(kernel_size: int) -> float:
    """The sigma OpenCV derives from a kernel size when sigma is 0 (``getGaussianKernel``):
    ``0.3 * ((k - 1) / 2 - 1) + 0.8``. The MSU group passes exactly this to torchvision's
    GaussianBlur, and albumentations' GaussianBlur (the authors' code) lets OpenCV derive it."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """``int(H * scale), int(W * scale)`` computed as the MSU group's code does (a float32
    tensor product, truncated), at least 1 pixel."""
    size = (torch.tensor([h, w]) * float(scale)).int().tolist()
    return max(1, size[0]), max(1, size[1])


def _downscale(x: Tensor, scale: float, antialias: bool) -> Tensor:
    """torchvision's ``Resize((int(H*scale), int(W*scale)))`` on tensors: bilinear,
    ``align_corners=False``; antialiased only when asked (the torchvision versions the authors
    pinned, 0.14 / 0.15, do not antialias tensors by default)."""
    size = scaled_size(*x.shape[-2:], scale)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def _check_scale(scale, what: str) -> float:
    scale = float(scale)
    if not 0 < scale <= 1:
        raise ValueError(f"{what} scale must be in (0, 1], got {scale}")
    return scale


@DEFENSES.register("identity", aliases=["none", "no-defense", "no-defence"], tags=("baseline",))
class Identity(Defense):
    """No purifier: the baseline row of every table (returns the input unchanged)."""

    name = "identity"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return x


_RESIZE_PRESETS = {f"x{s:g}": {"scale": s} for s in (0.1, 0.25, 0.5, 0.75, 0.9)}
_RESIZE_PRESETS["antialias"] = {"antialias": True}


@DEFENSES.register("resize", presets=_RESIZE_PRESETS, tags=("transform", "geometric"))
class Resize(Defense):
    """Downscale by ``scale`` (default 0.5; presets x0.1 ... x0.9), bilinear.

    As the MSU group's code (torchvision ``Resize`` on tensors in their pinned torchvision):
    no antialiasing; ``antialias=True`` (preset ``resize:antialias``) low-passes first, which
    is the better resampling but not what the study measured. The output is the *smaller*
    image (``changes_size=True``): the metric sees an ``int(H*scale) x int(W*scale)`` input.
    Compare ``upscale-*`` for the variant that returns to the input size.
    """

    name = "resize"
    changes_size = True

    def __init__(self, *, scale: float = 0.5, antialias: bool = False, seed: int = 0):
        super().__init__(seed=seed, scale=_check_scale(scale, "resize"),
                         antialias=_check_bool(antialias, "antialias"))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return _downscale(x, self.scale, self.antialias).clamp(0, 1)


class _Upscale(Defense):
    """Downscale by ``scale`` (default 0.5; bilinear, no antialiasing unless ``antialias=True``,
    as :class:`Resize`) and upsample back to the input size with ``mode`` (``nn.Upsample``,
    ``align_corners=False``); the output has the input's shape. The authors' code upsamples to
    a fixed size (384x512 in the MSU group's, 299x299 in the FCN study's), their data sets'
    image size, i.e. the input size. Bicubic overshoot is clamped to [0, 1] (theirs is not;
    our images stay in [0, 1])."""

    mode = "bilinear"

    def __init__(self, *, scale: float = 0.5, antialias: bool = False, seed: int = 0):
        super().__init__(seed=seed, scale=_check_scale(scale, "upscale"),
                         antialias=_check_bool(antialias, "antialias"))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        small = _downscale(x, self.scale, self.antialias)
        kw = {} if self.mode == "nearest" else {"align_corners": False}
        return F.interpolate(small, size=x.shape[-2:], mode=self.mode, **kw).clamp(0, 1)


for _mode in ("nearest", "bilinear", "bicubic"):
    _cls = type(f"Upscale{_mode.capitalize()}", (_Upscale,), {
        "name": f"upscale-{_mode}", "mode": _mode,
        "__doc__": f"Down x0.5 then {_mode} upsampling back to the input size. " + _Upscale.__doc__,
    })
    DEFENSES.register(f"upscale-{_mode}", presets=_RESIZE_PRESETS,
                      tags=("transform", "geometric"))(_cls)
    globals()[_cls.__name__] = _cls
del _mode, _cls


@DEFENSES.register("flip", aliases=["flip-both"], tags=("transform", "geometric"))
class Flip(Defense):
    """Flip along both spatial axes (a 180-degree rotation), the study's best-Gain purifier.

    ``dims`` defaults to ``(2, 3)`` (vertical and horizontal), as in the MSU group's code.
    An involution: ``flip(flip(x)) == x``.
    """

    name = "flip"

    def __init__(self, *, dims: tuple[int, ...] = (2, 3), seed: int = 0):
        if not set(dims) <= {2, 3} or not dims:
            raise ValueError(f"flip dims must be a non-empty subset of (2, 3), got {dims}")
        super().__init__(seed=seed, dims=tuple(int(d) for d in dims))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return torch.flip(x, self.dims)


_ROTATE_PRESETS = {f"deg{a}": {"angle": float(a)} for a in (5, 10, 15, 20, 30, 50)}
_ROTATE_PRESETS["fixed"] = {"sampling": "sign"}


@DEFENSES.register("rotate", aliases=["random-rotate"], presets=_ROTATE_PRESETS,
                   tags=("transform", "geometric", "stochastic"))
class Rotate(Defense):
    """Rotate each image about its centre by a random angle of at most ``angle`` degrees
    (default 5; presets deg10 ... deg50).

    Default as the authors' code, torchvision's ``RandomRotation(angle)`` on tensors: the
    angle is uniform in [-angle, angle] (``sampling="uniform"``), nearest-neighbour
    interpolation, corners outside the rotated image filled with 0, output the input's size
    (no ``expand``); we draw one angle per image from the seeded generator (theirs draws one
    per call and runs one image per call). ``sampling="sign"`` (preset ``rotate:fixed``) turns
    every image by exactly +angle or -angle. ``interpolation="bilinear"`` and
    ``padding="border"`` / ``"reflection"`` (kornia) are options.
    """

    name = "rotate"
    stochastic = True

    def __init__(self, *, angle: float = 5.0, sampling: str = "uniform", padding: str = "zeros",
                 interpolation: str = "nearest", seed: int = 0):
        angle = float(angle)
        if not 0 <= angle <= 180:
            raise ValueError(f"rotate angle must be in [0, 180] degrees, got {angle}")
        if sampling not in ("sign", "uniform"):
            raise ValueError(f"rotate sampling must be 'uniform' or 'sign', got {sampling!r}")
        if padding not in ("zeros", "border", "reflection"):
            raise ValueError(f"rotate padding must be zeros/border/reflection, got {padding!r}")
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"rotate interpolation must be nearest/bilinear, got {interpolation!r}")
        super().__init__(seed=seed, angle=angle, sampling=sampling, padding=padding,
                         interpolation=interpolation)

    def sample_angles(self, batch: int, generator: torch.Generator | None) -> Tensor:
        """``[batch]`` angles in degrees (float64, CPU) drawn from ``generator``."""
        # draw on the generator's own device (the base class makes one on the input's device)
        dev = generator.device if generator is not None else None
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64).cpu()
        if self.sampling == "sign":
            return torch.where(u < 0.5, -self.angle, self.angle)
        return (2 * u - 1) * self.angle

    def purify(self, x: Tensor, generator=None) -> Tensor:
        angles = self.sample_angles(x.shape[0], generator)
        if self.padding == "zeros":
            import torchvision.transforms.functional as TF
            from torchvision.transforms import InterpolationMode

            mode = InterpolationMode(self.interpolation)
            return torch.cat([TF.rotate(x[i:i + 1], float(a), interpolation=mode, fill=0)
                              for i, a in enumerate(angles.tolist())])
        return kornia.geometry.transform.rotate(
            x, angles.to(x.device, x.dtype), mode=self.interpolation, padding_mode=self.padding,
            align_corners=False)


@DEFENSES.register("random-crop", aliases=["crop"],
                   presets={f"s{s}": {"size": s} for s in (32, 64, 128, 256, 288)},
                   tags=("transform", "geometric", "stochastic"))
class RandomCrop(Defense):
    """Crop a random ``size x size`` window from each image (default 256; presets 32 ... 288).

    The output is smaller than the input (``changes_size=True``). Each image gets its own
    offset from the seeded generator. Where the image is smaller than ``size`` along an axis
    the crop takes the whole axis (torchvision's RandomCrop would raise instead).
    """

    name = "random-crop"
    stochastic = True
    changes_size = True

    def __init__(self, *, size: int = 256, seed: int = 0):
        if isinstance(size, bool) or int(size) != size or int(size) < 1:
            raise ValueError(f"random-crop size must be an integer >= 1, got {size!r}")
        super().__init__(seed=seed, size=int(size))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        b, _, h, w = x.shape
        ch, cw = min(self.size, h), min(self.size, w)
        dev = generator.device if generator is not None else None
        tops = torch.randint(0, h - ch + 1, (b,), generator=generator, device=dev).tolist()
        lefts = torch.randint(0, w - cw + 1, (b,), generator=generator, device=dev).tolist()
        return torch.stack([x[i, :, t:t + ch, l:l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])


_KERNEL_PRESETS = {f"k{k}": {"kernel_size": k} for k in (3, 5, 7, 9, 11)}


@DEFENSES.register("gaussian-blur", aliases=["blur"], presets=_KERNEL_PRESETS,
                   tags=("transform", "filter"))
class GaussianBlur(Defense):
    """Gaussian blur, ``kernel_size`` 3 (presets 3 ... 11), reflect padding.

    ``sigma=None`` (default) uses OpenCV's rule ``0.3*((k-1)/2 - 1) + 0.8`` (0.8 for k=3,
    1.1 for k=5, 2.0 for k=11), the sigma the MSU group passes to torchvision's GaussianBlur.
    """

    name = "gaussian-blur"

    def __init__(self, *, kernel_size: int = 3, sigma: float | None = None, seed: int = 0):
        k = _odd_kernel(kernel_size, "gaussian-blur")
        if sigma is not None:
            _positive(sigma, "gaussian-blur sigma")
        super().__init__(seed=seed, kernel_size=k,
                         sigma=float(sigma) if sigma is not None else opencv_sigma(k))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        k, s = self.kernel_size, self.sigma
        return kornia.filters.gaussian_blur2d(x, (k, k), (s, s), border_type="reflect")


@DEFENSES.register("median", aliases=["median-blur", "median-filter"], presets=_KERNEL_PRESETS,
                   tags=("transform", "filter"))
class Median(Defense):
    """Median filter, ``kernel_size`` 3 (presets 3 ... 11), reflect padding (as the MSU group).

    ``differentiable = True``: the median is piecewise linear in its inputs, so the gradient
    exists almost everywhere and flows to the pixel that is the median of each window (what
    autograd through ``kornia.filters.median_blur`` computes). It is a poor gradient for an
    attacker, but an exact one, so adaptive attacks need no BPDA here.
    """

    name = "median"

    def __init__(self, *, kernel_size: int = 3, seed: int = 0):
        super().__init__(seed=seed, kernel_size=_odd_kernel(kernel_size, "median"))

    def purify(self, x: Tensor, generator=None) -> Tensor:
        return kornia.filters.median_blur(x, self.kernel_size, border_type="reflect")


@DEFENSES.register("unsharp", aliases=["unsharp-mask", "sharpen"],
                   presets={f"k{k}": {"kernel_size": k} for k in (3, 5, 7, 9, 11)},
                   tags=("transform", "filter"))
class Unsharp(Defense):
    """Unsharp masking ``clamp(x + amount * (x - GaussianBlur(x)), 0, 1)``.

    Defaults as the MSU group: kernel 5, sigma 1, amount 1, reflect padding. The paper's
    DiffPure+Unsharp (best SROCC) is ``load_defense("diffpure+unsharp")``.
    """

    name = "unsharp"

    def __init__(self, *, kernel_size: int = 5, sigma: float = 1.0, amount: float = 1.0,
                 seed: int = 0):
        _positive(sigma, "unsharp sigma")
        amount = float(amount)
        if not 0 <= amount < float("inf"):
            raise ValueError(f"unsharp amount must be a finite number >= 0, got {amount}")
        super().__init__(seed=seed, kernel_size=_odd_kernel(kernel_size, "unsharp"),
                         sigma=float(sigma), amount=amount)

    def purify(self, x: Tensor, generator=None) -> Tensor:
        k, s = self.kernel_size, self.sigma
        blurred = kornia.filters.gaussian_blur2d(x, (k, k), (s, s), border_type="reflect")
        return (x + self.amount * (x - blurred)).clamp(0, 1)


__all__ = ["Flip", "GaussianBlur", "Identity", "Median", "RandomCrop", "Resize", "Rotate",  # noqa: F822
           "Unsharp", "UpscaleBicubic", "UpscaleBilinear", "UpscaleNearest", "opencv_sigma"]

# JPEG lives in its own module; importing it here registers "jpeg" and "jpeg-diff" with the
# other transforms without touching the package's import list.
from . import jpeg as _jpeg  # noqa: F401
