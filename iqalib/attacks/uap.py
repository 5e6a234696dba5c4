"""Universal adversarial perturbations (UAPs) against an IQA metric.

One perturbation, trained once on a training split, is added to every test image: the
MSU metrics robustness benchmark's "UAP", "cumulative UAP" and "generative UAP"
(Antsiferova et al., AAAI 2024; universal perturbations after Moosavi-Dezfooli et al.,
CVPR 2017; the generator after Poursaeed et al., "Generative adversarial perturbations",
CVPR 2018). Training uses ``crop x crop`` centre crops (256 in the benchmark); at test time
the perturbation is tiled over the image and added with ``amplitude`` (0.2 by default):
``x_adv = clip(x + amplitude * tile(delta))``, exactly as the benchmark applies it.

Train and test images must not overlap: :meth:`UAP.train` records the training ids, and
applying the UAP with ``ids=`` refuses any image whose id is among them.

>>> uap = UAP.train(metric, train_images, ids=train_ids, method="uap", epochs=5)
>>> uap.save("data/cache/uap/uap-brisque.pt")
>>> x_adv = UAP.load("data/cache/uap/uap-brisque.pt", metric)(x_test, ids=test_ids)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics.base import IQAMetric, check_batch
from ..registry import ATTACKS
from .base import Attack, check_count, check_nonnegative, check_positive, check_unit, eval_mode

#: the benchmark's training settings per method (Adam for uap / generative-uap)
DEFAULTS: dict[str, dict[str, Any]] = {
    "uap": {"eps": 0.1, "lr": 0.001, "epochs": 5},
    "cumulative-uap": {"eps": 0.1, "lr": 1 / 255, "epochs": 5},
    "generative-uap": {"eps": 10 / 255, "lr": 0.001, "epochs": 1},
}


def centre_crops(images: Tensor | Sequence[Tensor], crop: int) -> Tensor:
    """``crop x crop`` centre crops ``[N,3,crop,crop]``; images whose shorter side is under
    ``crop`` are first resized up (bilinear, antialiased) so the crop fits."""
    out = []
    for img in (images if not torch.is_tensor(images) else list(images)):
        img = img if img.ndim == 4 else img[None]
        h, w = img.shape[-2:]
        if min(h, w) < crop:
            s = crop / min(h, w)
            img = F.interpolate(img, size=(max(crop, round(h * s)), max(crop, round(w * s))),
                                mode="bilinear", align_corners=False, antialias=True)
            h, w = img.shape[-2:]
        top, left = (h - crop) // 2, (w - crop) // 2
        out.append(img[..., top:top + crop, left:left + crop])
    return torch.cat(out).clamp(0, 1)


def tile_to(delta: Tensor, size: tuple[int, int]) -> Tensor:
    """Repeat ``delta`` ``[3,h,w]`` to cover ``size`` and cut it to ``[3,H,W]``."""
    h, w = delta.shape[-2:]
    reps = (1, math.ceil(size[0] / h), math.ceil(size[1] / w))
    return delta.repeat(*reps)[:, :size[0], :size[1]]


def _clip_ste(x: Tensor) -> Tensor:
    # clip to [0,1] forward, identity backward: the benchmark clips `.data` in place, so the
    # gradient reaches the perturbation even where a pixel saturates
    return x + (x.clamp(0, 1) - x).detach()


class UNetGenerator(nn.Module):
    """A pix2pix-style U-Net (4x4 stride-2 convolutions, skip connections, instance norm,
    tanh output) mapping a fixed noise image to a perturbation, as in the benchmark's
    generative UAP. ``depth`` halvings (8 for 256 px). Dropout is left out so training is
    deterministic."""

    def __init__(self, *, ngf: int = 64, depth: int = 8):
        super().__init__()
        chans = [min(ngf * 2 ** i, ngf * 8) for i in range(depth)]
        self.down = nn.ModuleList()
        c_in = 3
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1))
            if 0 < i < depth - 1:
                layers.append(nn.InstanceNorm2d(c))
            self.down.append(nn.Sequential(*layers))
            c_in = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_out = 3 if i == 0 else chans[i - 1]
            c_up_in = chans[i] if i == depth - 1 else chans[i] * 2
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_up_in, c_out, 4, 2, 1)]
            if i > 0:
                layers.append(nn.InstanceNorm2d(c_out))
            self.up.append(nn.Sequential(*layers))

    def forward(self, z: Tensor) -> Tensor:
        skips = []
        h = z
        for d in self.down:
            h = d(h)
            skips.append(h)
        skips.pop()  # the bottleneck is not concatenated with itself
        for u in self.up:
            h = u(h)
            if skips:
                h = torch.cat([h, skips.pop()], dim=1)
        return torch.tanh(h)


class UAP(Attack):
    """Apply a trained universal perturbation: ``x + amplitude * tile(delta)``, clipped.

    Build one with :meth:`train`, :meth:`load`, or ``load_attack("uap", metric, path=...)``.
    ``amplitude=0.2`` is the benchmark's test setting; the L-inf change of an image is at most
    ``amplitude * max|delta|`` (plus 8-bit rounding).
    """

    name = "uap"
    needs_grad = False

    def __init__(self, metric: IQAMetric, *, perturbation: Tensor | None = None,
                 path: str | Path | None = None, amplitude: float = 0.2,
                 meta: dict[str, Any] | None = None, seed: int = 0):
        amplitude = check_nonnegative(amplitude, "uap amplitude")
        if perturbation is None and path is None:
            raise ValueError(
                "a universal perturbation must be trained first: "
                "UAP.train(metric, train_images, ids=train_ids).save(path), then "
                "load_attack('uap', metric, path=path)")
        if path is not None:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            perturbation, meta = blob["perturbation"], blob["meta"]
        self.perturbation = perturbation.detach().float().reshape(3, *perturbation.shape[-2:])
        self.meta = dict(meta or {})
        self.name = self.meta.get("method", "uap")
        if self.meta.get("metric") not in (None, metric.name):
            raise ValueError(f"this UAP was trained on metric {self.meta['metric']!r}, "
                             f"not {metric.name!r}")
        super().__init__(metric, amplitude=amplitude, method=self.name,
                         path=str(path) if path is not None else None, seed=seed)

    @property
    def train_ids(self) -> list[str]:
        return list(self.meta.get("train_ids", []))

    # -- applying -------------------------------------------------------------
    def perturb(self, x: Tensor) -> Tensor:
        delta = tile_to(self.perturbation.to(x), x.shape[-2:])
        return (x + self.amplitude * delta).clamp(0, 1)

    def __call__(self, x: Tensor, *, ids: Sequence[str] | None = None) -> Tensor:
        if ids is not None:
            seen = set(self.train_ids) & {str(i) for i in ids}
            if seen:
                raise ValueError(f"{len(seen)} test image(s) were in this UAP's training set "
                                 f"(e.g. {sorted(seen)[:3]}): evaluate on held-out images")
        return super().__call__(x)

    # -- saving ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the perturbation and its training metadata (atomic: temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"perturbation": self.perturbation.cpu(), "meta": self.meta}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, metric: IQAMetric, **kw) -> UAP:
        return cls(metric, path=path, **kw)

    # -- training --------------------------------------------------------------
    @classmethod
    def train(cls, metric: IQAMetric, images: Tensor | Sequence[Tensor], *,
              ids: Sequence[str] | None = None, method: str = "uap", epochs: int | None = None,
              batch_size: int = 8, crop: int = 256, eps: float | None = None,
              lr: float | None = None, ngf: int = 64, seed: int = 0,
              amplitude: float = 0.2) -> UAP:
        """Train a universal perturbation on ``images`` (the training split only).

        ``method``: ``"uap"`` (Adam on the perturbation, lr 0.001, eps 0.1, 5 epochs),
        ``"cumulative-uap"`` (each batch adds the mean of its images' signed-gradient steps,
        lr 1/255, clipped to eps 0.1, 5 epochs), ``"generative-uap"`` (Adam, lr 0.001, on a
        U-Net mapping fixed noise to ``eps * tanh(.)``, eps 10/255, 1 epoch). The loss is the
        batch mean of ``1 - sign * score / range`` on ``crop``-px centre crops, in batches of
        ``batch_size`` reshuffled every epoch with ``seed``. ``ids`` name the training images
        (recorded; applying the result to any of them is refused).
        """
        if method not in DEFAULTS:
            raise ValueError(f"unknown UAP method {method!r}: use one of {sorted(DEFAULTS)}")
        check_count(batch_size, "uap batch_size")
        check_count(crop, "uap crop", minimum=8)
        check_count(ngf, "uap ngf")
        check_nonnegative(amplitude, "uap amplitude")
        if epochs is not None:
            check_count(epochs, "uap epochs")
        if eps is not None:
            check_unit(eps, "uap eps")
        if lr is not None:
            check_positive(lr, "uap lr")
        cfg = dict(DEFAULTS[method])
        cfg.update({k: v for k, v in {"eps": eps, "lr": lr, "epochs": epochs}.items()
                    if v is not None})
        n = len(images)
        if ids is not None:
            ids = [str(i) for i in ids]
            if len(ids) != n or len(set(ids)) != n:
                raise ValueError("ids must name each training image once")
        device = metric.device
        data = centre_crops(images, crop).to(device)
        check_batch(data, "UAP training images")
        gen = torch.Generator().manual_seed(seed)
        with eval_mode(metric), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else []), torch.enable_grad():
            torch.manual_seed(seed)
            trainer = _TRAINERS[method]
            delta = trainer(metric, data, gen=gen, batch_size=batch_size, ngf=ngf, **cfg)
        meta = {"method": method, "metric": metric.name, "crop": crop, "batch_size": batch_size,
                "seed": seed, "n_train": n, "train_ids": list(ids or []),
                **{k: float(v) if k != "epochs" else int(v) for k, v in cfg.items()}}
        if method == "generative-uap":
            meta["ngf"] = ngf
        return cls(metric, perturbation=delta.detach().cpu(), amplitude=amplitude, meta=meta,
                   seed=seed)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def _batch_loss(metric: IQAMetric, x: Tensor) -> Tensor:
    # one perturbation for all images: the batch *mean* is the objective here
    return (1.0 - metric.sign * metric(x) / metric.range_width).mean()


def _train_uap(metric, data, *, gen, batch_size, eps, lr, epochs, **_):
    delta = torch.full((1, *data.shape[1:]), 1e-4, device=data.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(epochs):
        for idx in _batches(len(data), batch_size, gen):
            loss = _batch_loss(metric, _clip_ste(data[idx] + delta))
            opt.zero_grad(set_to_none=True)
            (g,) = torch.autograd.grad(loss, delta)
            delta.grad = torch.nan_to_num(g)
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
    return delta[0]


def _train_cumulative(metric, data, *, gen, batch_size, eps, lr, epochs, **_):
    delta = torch.zeros((1, *data.shape[1:]), device=data.device)
    for _ in range(epochs):
        for idx in _batches(len(data), batch_size, gen):
            xb = (data[idx] + delta).clamp(0, 1).requires_grad_(True)
            per_image = 1.0 - metric.sign * metric(xb) / metric.range_width
            (g,) = torch.autograd.grad(per_image.sum(), xb)
            # each image's own signed step, averaged: the perturbation accumulates them
            step = -torch.nan_to_num(g).sign().mean(dim=0, keepdim=True)
            delta = (delta + lr * step).clamp(-eps, eps)
    return delta[0]


def _train_generative(metric, data, *, gen, batch_size, eps, lr, epochs, ngf, **_):
    crop = data.shape[-1]
    depth = min(8, int(math.log2(crop)))
    net = UNetGenerator(ngf=ngf, depth=depth).to(data.device)
    z = torch.rand((1, *data.shape[1:]), generator=gen).to(data.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in _batches(len(data), batch_size, gen):
            delta = eps * net(z)
            loss = _batch_loss(metric, _clip_ste(data[idx] + delta))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (eps * net(z))[0]


_TRAINERS = {"uap": _train_uap, "cumulative-uap": _train_cumulative,
             "generative-uap": _train_generative}


def default_path(method: str, metric: IQAMetric) -> Path:
    """Where ``load_attack(method, metric)`` looks for a trained perturbation."""
    from ..paths import cache_dir

    return cache_dir() / "uap" / f"{method}-{metric.name}.pt"


def _factory(method: str):
    def make(metric, *, path=None, amplitude: float = 0.2, train_if_missing: bool = False,
             seed: int = 0, **train_kw):
        check_nonnegative(amplitude, f"{method} amplitude")  # before looking for the file
        path = Path(path) if path is not None else default_path(method, metric)
        if not path.exists():
            if not train_if_missing:
                raise FileNotFoundError(
                    f"no trained {method} for metric {metric.name!r} at {path}: train one with "
                    f"UAP.train(metric, images, ids=..., method={method!r}).save(path), or pass "
                    "train_if_missing=True to train on the offline sample set")
            try:
                from ..datasets import load_dataset  # the offline sample set
            except ImportError as e:
                raise FileNotFoundError(
                    f"no trained {method} at {path} and no sample set to train one on "
                    "(iqalib.datasets is missing): train with UAP.train(...).save(path)") from e
            # expected: an iterable of (image_id, image [3,H,W]) pairs
            pairs = list(load_dataset("samples"))
            ids = [str(i) for i, _ in pairs]
            images = [img for _, img in pairs]
            UAP.train(metric, images, ids=ids, method=method, seed=seed, **train_kw).save(path)
        uap = UAP(metric, path=path, amplitude=amplitude, seed=seed)
        if uap.name != method:
            raise ValueError(f"{path} holds a {uap.name}, not a {method}")
        return uap
    make.__doc__ = (f"{method}: a universal perturbation trained on a training split, "
                    f"added at amplitude 0.2 (MSU benchmark).")
    return make


for _m in DEFAULTS:
    ATTACKS.add(_m, _factory(_m), tags=("universal",),
                presets={f"a{int(a * 100):02d}": {"amplitude": a} for a in (0.2, 0.4, 0.8)})
