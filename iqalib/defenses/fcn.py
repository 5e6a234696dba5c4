"""The FCN filter: the study's trained purifier against colour-filter attacks (AdvCF).

Gushchin et al., "Adversarial purification for no-reference image-quality metrics:
applicability study and new methods" (arXiv 2404.06957): a three-layer fully convolutional
network trained with MSE to map AdvCF-attacked images back to their clean versions; it beats
every other purifier against AdvCF. Architecture (as in the authors' code,
wianluna/adversarial_purification): Conv3x3 3->64, LeakyReLU 0.2, Conv3x3 64->16,
InstanceNorm (no affine), LeakyReLU 0.2, Conv3x3 16->3, tanh; the purifier clamps to [0, 1].
Training as the authors: Adam lr 1e-3, batch 4, MSE, best epoch by held-out SSIM (Gaussian
window 11, sigma 1.5), up to 200 epochs.

``iqalib/assets/fcn_filter.pt`` is the shipped filter (a few thousand parameters); its
``meta`` entry says which metric, attack and images trained it. Retrain with
:func:`train_fcn_filter` (notebook 06) or ``python -m iqalib.defenses.train_fcn``.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MissingWeightsError
from ..paths import assets_dir
from ..registry import DEFENSES
from .base import Defense

DEFAULT_ASSET = "fcn_filter.pt"


class FCNFilter(nn.Module):
    """The three-conv filter. Parameter names (``conv1``/``conv2``/``conv3``) match the authors'
    checkpoints (``best_fcn.pth``: ``{"model": state_dict, "epoch": n}``), which load as is."""

    def __init__(self, hidden: int = 64, bottleneck: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, bottleneck, 3, padding=1)
        # InstanceNorm without affine parameters: per-image feature statistics are removed,
        # which is what lets the filter undo a global colour curve whatever its strength
        self.norm = nn.InstanceNorm2d(bottleneck)
        self.conv3 = nn.Conv2d(bottleneck, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.norm(self.conv2(h)), 0.2)
        return torch.tanh(self.conv3(h))


def load_fcn_state(path: str | Path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from one of our files or an authors' ``best_fcn.pth``
    (``weights_only=True``: plain tensors and primitive types only)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"FCN filter weights not found at {path}. The package ships "
            f"iqalib/assets/{DEFAULT_ASSET}; retrain with notebooks/06_fcn_filter.ipynb or "
            "`python -m iqalib.defenses.train_fcn`.")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    meta = dict(ckpt.get("meta", {})) if isinstance(ckpt, dict) else {}
    if isinstance(ckpt, dict) and "epoch" in ckpt:
        meta.setdefault("epoch", ckpt["epoch"])
    return state, meta


@DEFENSES.register("fcn-filter", aliases=["fcn", "conv-filter"], tags=("trained", "network"))
class FCNFilterDefense(Defense):
    """The trained FCN filter as a purifier (arXiv 2404.06957; the paper's best against AdvCF).

    The shipped weights are a CPU-budget filter (AdvCF on BRISQUE, 24 crops of 6 offline
    photos, 60 epochs; ``self.meta`` holds the details): on held-out photos it does *not*
    beat the attacked input (SSIM 0.50 vs 0.84). Retrain on a real data set (notebook 06,
    paper profile) before drawing conclusions about the method.

    Keywords: ``weights`` (path of a checkpoint; default the shipped
    ``iqalib/assets/fcn_filter.pt``), ``pretrained`` (False: random init, for tests).
    Deterministic, differentiable, same size out as in.
    """

    name = "fcn-filter"

    def __init__(self, *, weights: str | None = None, pretrained: bool = True, seed: int = 0,
                 model: FCNFilter | None = None):
        super().__init__(seed=seed, weights=weights, pretrained=bool(pretrained))
        self.meta: dict = {}
        if model is not None:  # a freshly trained filter (train_fcn_filter returns one)
            self.hparams["weights"] = "<trained in this session>"
            net = model
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = FCNFilter()
            if pretrained:
                path = Path(weights) if weights else assets_dir() / DEFAULT_ASSET
                state, self.meta = load_fcn_state(path)
                net.load_state_dict(state, strict=True)
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def to(self, device) -> FCNFilterDefense:
        super().to(device)
        self.net.to(self.device)
        return self

    def purify(self, x: Tensor, generator=None) -> Tensor:
        p = next(self.net.parameters())
        if p.device != x.device:
            self.net.to(x.device)
        return self.net(x.to(p.dtype)).clamp(0, 1).to(x.dtype)


# --------------------------------------------------------------------------- training data

def random_colour_curves(x: Tensor, *, pieces: int = 64, strength: float = 0.5,
                         generator: torch.Generator | None = None) -> Tensor:
    """A synthetic stand-in for AdvCF: a random monotone piecewise-linear curve per channel.

    Same family as AdvCF's filter (Zhao et al., "Adversarial color enhancement", 2020): the
    curve's ``pieces`` increments are ``1/pieces`` times a random positive factor (log-normal
    with std ``strength``), normalised to sum to 1, one curve per image and channel. Used to
    test the trainer without an attack and as extra training data.
    """
    b, c = x.shape[:2]
    g = generator
    dev = g.device if g is not None else x.device
    inc = torch.exp(strength * torch.randn(b, c, pieces, generator=g, device=dev)).to(x.device)
    inc = inc / inc.sum(-1, keepdim=True)
    knots = torch.cat([torch.zeros_like(inc[..., :1]), inc.cumsum(-1)], -1)  # [B,C,P+1]
    pos = x.clamp(0, 1) * pieces
    idx = pos.floor().clamp(max=pieces - 1).long()
    frac = pos - idx
    lo = torch.gather(knots, 2, idx.flatten(2)).view_as(x)
    hi = torch.gather(knots, 2, (idx + 1).flatten(2)).view_as(x)
    return (lo + frac * (hi - lo)).clamp(0, 1)


def _as_list(images) -> list[Tensor]:
    if torch.is_tensor(images):
        if images.ndim == 3:
            images = images[None]
        return list(images)
    out = []
    for im in images:
        out.extend(list(im) if im.ndim == 4 else [im])
    return out


def _check_disjoint(train: list[Tensor], val: list[Tensor]) -> None:
    for i, v in enumerate(val):
        for t in train:
            if v.shape == t.shape and torch.equal(v, t):
                raise ValueError(f"validation image {i} is also in the training set: the held-out "
                                 "SSIM must come from images the filter never saw")


def _attack_all(attack, images: list[Tensor], device, chunk: int = 8) -> list[Tensor]:
    """Attack images in batches of equal-sized neighbours (one batch per size run)."""
    out: list[Tensor] = []
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and j - i < chunk and images[j].shape == images[i].shape:
            j += 1
        adv = attack(torch.stack(images[i:j]).to(device))
        out.extend(a.detach().to("cpu", torch.float32) for a in adv)
        i = j
    return out


def _paired_crops(clean: list[Tensor], adv: list[Tensor], order: list[int], crop: int,
                  g: torch.Generator) -> tuple[Tensor, Tensor]:
    cs, ads = [], []
    for i in order:
        c, a = clean[i], adv[i]
        h, w = c.shape[-2:]
        ch, cw = min(crop, h), min(crop, w)
        t = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        l_ = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        cs.append(c[:, t:t + ch, l_:l_ + cw])
        ads.append(a[:, t:t + ch, l_:l_ + cw])
    # a batch needs one size: images smaller than the crop are resized to the smallest crop
    hmin = min(x.shape[-2] for x in cs)
    wmin = min(x.shape[-1] for x in cs)
    cs = [x[:, :hmin, :wmin] for x in cs]
    ads = [x[:, :hmin, :wmin] for x in ads]
    return torch.stack(ads), torch.stack(cs)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, data range 1), ``[B]``."""
    import kornia

    return kornia.metrics.ssim(x, y, window_size=11, max_val=1.0).mean(dim=(1, 2, 3))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def train_fcn_filter(metric, images_train, images_val, *, epochs: int = 200, seed: int = 0,
                     attack: str | Callable[[Tensor], Tensor] = "advcf",
                     attack_kwargs: dict | None = None, batch_size: int = 4, lr: float = 1e-3,
                     crop: int = 128, repeats: int = 1, device: str = "auto", attacked_train=None,
                     attacked_val=None, progress: bool = False, log: Callable | None = None):
    """Train the FCN filter to undo an attack; return ``(defense, history)``.

    ``metric``: the metric the attack targets (an IQAMetric or a name). ``images_train`` /
    ``images_val``: disjoint clean images (a ``[N,3,H,W]`` tensor or a list of ``[3,H,W]``
    tensors of any sizes). ``attack``: an attack name (default ``"advcf"``, the study's) made
    with ``iqalib.load_attack(attack, metric, **attack_kwargs)``, or any callable
    ``x -> x_adv`` (e.g. :func:`random_colour_curves`); ``attacked_train`` / ``attacked_val``
    skip the attack when the pairs are already made. Training: random ``crop``-px paired
    crops, MSE, Adam ``lr`` 1e-3, ``batch_size`` 4, ``epochs`` passes over the training set,
    each drawing ``repeats`` crops per image (more steps per epoch for small CPU sets);
    after each epoch the full held-out images are purified and the epoch with the best mean
    SSIM to the clean images is kept. Seeded and deterministic on the CPU.

    ``history``: per-epoch ``train_loss`` / ``val_ssim`` / ``val_psnr`` lists, the
    attacked-input baselines ``val_ssim_attacked`` / ``val_psnr_attacked``, ``best_epoch``,
    ``best_val_ssim``, ``best_val_psnr``, ``seconds``.
    """
    from ..device import resolve_device

    dev = resolve_device(device)
    start = time.perf_counter()
    clean_tr, clean_va = _as_list(images_train), _as_list(images_val)
    clean_tr = [c.detach().float().cpu() for c in clean_tr]
    clean_va = [c.detach().float().cpu() for c in clean_va]
    if not clean_tr or not clean_va:
        raise ValueError("train_fcn_filter needs at least one training and one validation image")
    _check_disjoint(clean_tr, clean_va)

    if attacked_train is None or attacked_val is None:
        if isinstance(attack, str):
            from ..api import load_attack, load_metric

            m = load_metric(metric, device=str(dev)) if isinstance(metric, str) else metric
            atk = load_attack(attack, m, **(attack_kwargs or {}))
        else:
            atk = attack
        adv_tr = _as_list(attacked_train) if attacked_train is not None else _attack_all(atk, clean_tr, dev)
        adv_va = _as_list(attacked_val) if attacked_val is not None else _attack_all(atk, clean_va, dev)
    else:
        adv_tr, adv_va = _as_list(attacked_train), _as_list(attacked_val)
    adv_tr = [a.detach().float().cpu() for a in adv_tr]
    adv_va = [a.detach().float().cpu() for a in adv_va]
    if len(adv_tr) != len(clean_tr) or len(adv_va) != len(clean_va):
        raise ValueError("attacked and clean image lists differ in length")

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FCNFilter().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    @torch.no_grad()
    def evaluate(model) -> tuple[float, float]:
        model.eval()
        s, p = [], []
        for c, a in zip(clean_va, adv_va):
            out = model(a[None].to(dev)).clamp(0, 1).cpu()
            s.append(float(ssim(out, c[None])))
            p.append(float(psnr(out, c[None])))
        return sum(s) / len(s), sum(p) / len(p)

    base_ssim = sum(float(ssim(a[None], c[None])) for a, c in zip(adv_va, clean_va)) / len(clean_va)
    base_psnr = sum(float(psnr(a[None], c[None])) for a, c in zip(adv_va, clean_va)) / len(clean_va)
    hist = {"train_loss": [], "val_ssim": [], "val_psnr": [], "val_ssim_attacked": base_ssim,
            "val_psnr_attacked": base_psnr, "best_epoch": -1, "best_val_ssim": -math.inf,
            "best_val_psnr": float("nan")}
    best_state = copy.deepcopy(net.state_dict())

    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="fcn-filter")
    n = len(clean_tr)
    for epoch in epochs_iter:
        net.train()
        order = [i for _ in range(max(1, repeats)) for i in torch.randperm(n, generator=g).tolist()]
        losses = []
        for k in range(0, len(order), batch_size):
            a, c = _paired_crops(clean_tr, adv_tr, order[k:k + batch_size], crop, g)
            loss = F.mse_loss(net(a.to(dev)), c.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        vs, vp = evaluate(net)
        hist["train_loss"].append(sum(losses) / len(losses))
        hist["val_ssim"].append(vs)
        hist["val_psnr"].append(vp)
        if vs > hist["best_val_ssim"]:
            hist.update(best_epoch=epoch, best_val_ssim=vs, best_val_psnr=vp)
            best_state = copy.deepcopy(net.state_dict())
        if log is not None:
            log(f"epoch {epoch}: loss {hist['train_loss'][-1]:.5f} val SSIM {vs:.4f} PSNR {vp:.2f}")

    net.load_state_dict(best_state)
    net = net.cpu().eval()
    hist["seconds"] = time.perf_counter() - start
    defense = FCNFilterDefense(model=net, seed=seed)
    defense.meta = {"epoch": hist["best_epoch"], "val_ssim": hist["best_val_ssim"],
                    "val_psnr": hist["best_val_psnr"]}
    return defense, hist


def save_fcn_filter(defense: FCNFilterDefense, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``{"model": state_dict, "epoch": n, "meta": {...}}`` (loadable with
    ``weights_only=True``) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = dict(defense.meta)
    m.update(meta or {})
    state = {k: v.detach().cpu().clone() for k, v in defense.net.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": state, "epoch": int(m.get("epoch", -1)), "meta": m}, tmp)
    tmp.replace(path)
    return path


def offline_photos(size: int = 256, *, per_image: int = 1) -> tuple[list[Tensor], list[str]]:
    """Photos that installed packages ship (scikit-image, scikit-learn, matplotlib; CC0 / public
    domain / CC-BY), cut into ``per_image`` crops of at most ``size`` px each (the centre crop
    when 1; otherwise crops spread evenly over the image). Names are ``source#crop``: split
    train/validation by source so no scene is in both."""
    import numpy as np
    from skimage import data

    arrays, names = [], []
    for n in ("astronaut", "chelsea", "coffee", "rocket"):
        arrays.append(getattr(data, n)())
        names.append(f"skimage:{n}")
    # the stereo pair ships in the scikit-image wheel (left, right, disparity)
    left, right, _ = data.stereo_motorcycle()
    arrays += [left, right]
    names += ["skimage:motorcycle_left", "skimage:motorcycle_right"]
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    for n, im in zip(("china", "flower"), load_sample_images().images):
        arrays.append(im)
        names.append(f"sklearn:{n}")
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        arrays.append(np.asarray(Image.open(f).convert("RGB")))
        names.append("matplotlib:grace_hopper")
    out, out_names = [], []
    for a, name in zip(arrays, names):
        h, w = a.shape[:2]
        ch, cw = min(size, h), min(size, w)
        if per_image == 1:
            spots = [((h - ch) // 2, (w - cw) // 2)]
        else:  # a near-square grid of evenly spread windows (they overlap on small photos)
            rows = max(1, round(math.sqrt(per_image * h / w)))
            cols = max(1, math.ceil(per_image / rows))
            spots = [(round(r * (h - ch) / max(1, rows - 1)), round(c * (w - cw) / max(1, cols - 1)))
                     for r in range(rows) for c in range(cols)][:per_image]
        for j, (t, l_) in enumerate(spots):
            crop = np.ascontiguousarray(a[t:t + ch, l_:l_ + cw, :3])
            out.append(torch.from_numpy(crop).permute(2, 0, 1).float() / 255)
            out_names.append(f"{name}#{j}")
    return out, out_names


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iqalib.defenses.train_fcn``: retrain the shipped filter on offline photos."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m iqalib.defenses.train_fcn", description=main.__doc__)
    p.add_argument("--metric", default="brisque")
    p.add_argument("--attack", default="advcf", help="attack name, or 'synthetic' colour curves")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--per-image", type=int, default=4, help="crops per source photo")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--n-val", type=int, default=3, help="source photos held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(assets_dir() / DEFAULT_ASSET))
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    photos, names = offline_photos(a.size, per_image=a.per_image)
    # hold out whole source photos (the last n_val): no scene is in both sets
    sources = list(dict.fromkeys(n.split("#")[0] for n in names))
    held = set(sources[-a.n_val:])
    is_val = [n.split("#")[0] in held for n in names]
    tr = [p for p, v in zip(photos, is_val) if not v]
    va = [p for p, v in zip(photos, is_val) if v]
    tr_names = [n for n, v in zip(names, is_val) if not v]
    va_names = [n for n, v in zip(names, is_val) if v]
    if a.attack == "synthetic":
        gen = torch.Generator().manual_seed(a.seed)
        atk = lambda x: random_colour_curves(x, generator=gen)
    else:
        atk = a.attack
    defense, hist = train_fcn_filter(a.metric, tr, va, epochs=a.epochs, seed=a.seed, attack=atk,
                                     crop=a.crop, repeats=a.repeats, device="cpu", log=print)
    meta = {"metric": a.metric, "attack": a.attack, "epochs": a.epochs, "crop": a.crop,
            "seed": a.seed, "size": a.size, "repeats": a.repeats, "lr": 1e-3, "batch_size": 4,
            "train_images": tr_names, "val_images": va_names,
            "val_ssim_attacked": hist["val_ssim_attacked"],
            "val_psnr_attacked": hist["val_psnr_attacked"], "seconds": hist["seconds"]}
    out = save_fcn_filter(defense, a.out, meta)
    print(f"saved {out}: best epoch {hist['best_epoch']}, val SSIM {hist['best_val_ssim']:.4f} "
          f"(attacked {hist['val_ssim_attacked']:.4f}), PSNR {hist['best_val_psnr']:.2f} dB "
          f"(attacked {hist['val_psnr_attacked']:.2f}) in {hist['seconds']:.0f} s")
    return 0

