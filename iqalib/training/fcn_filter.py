"""Training the FCN filter (:class:`iqalib.defenses.fcn.FCNFilter`) to undo colour-filter attacks.

Gushchin et al., arXiv 2404.06957: the filter is trained with MSE to map AdvCF-attacked images
back to the clean ones. Two recipes share one trainer, :func:`train_fcn_filter`:

:func:`train_like_authors`: the paper profile. Every setting is read from the authors' code
    (wianluna/adversarial_purification, ``defenses/conv_filter/train.py`` and ``dataset.py``):
    AdvCF-attacked images of the data set against Linearity, read as 8-bit files (ours come
    from the grid's lossless attack cache, so the results grid reuses them); the split is by
    sorted file name, the first 80 % for training and the last 20 % held out; full images, no
    crops; batch 4, shuffled; MSE; Adam lr 1e-3; 200 epochs; after every epoch the held-out
    images are purified (clamped to [0, 1]) and the epoch with the best mean SSIM is kept. The
    held-out 20 % is both their model-selection and their test split; the filter never trains
    on it, and the results tables use only those images.
:func:`train_offline_filter`: the shipped filter ``iqalib/assets/fcn_filter.pt``
    (``python -m iqalib.training.fcn_filter``): the 20 ImageNet photos that the foolbox wheel
    ships (:func:`iqalib.training.data.imagenet_photos`), whole photos held out for model
    selection, random crops attacked by AdvCF (default settings) on the offline deep metric
    ``effnet-iqa``, plus random colour curves of AdvCF's own parametrisation
    (:func:`random_colour_curves`) on fresh crops every epoch. None of the offline sample
    set's photos is used, so every sample-set row of the shipped filter is a held-out one.

Model selection uses the study's one SSIM (:func:`iqalib.evaluate.measures.ssim`). Training is
seeded and deterministic on the CPU. Images are stored as 8-bit during training (the study's
images and every attack's output are on the 8-bit grid).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..atomic import atomic_write_with
from ..defenses.fcn import DEFAULT_ASSET, FCNFilter, FCNFilterDefense
from ..evaluate import measures
from ..paths import assets_dir, cache_dir

#: the authors' settings (wianluna/adversarial_purification, defenses/conv_filter/train.py and
#: dataset.py). Their model selection calls ``pytorch_msssim.ssim(data_range=1)``: Wang et al.'s
#: 11x11 Gaussian window (sigma 1.5), which is ``measures.ssim(window="gaussian")``.
AUTHORS = {"epochs": 200, "batch_size": 4, "lr": 1e-3, "train_fraction": 0.8, "crop": None,
           "ssim": {"window": "gaussian"}}


@dataclass
class TrainedFilter:
    """What a training recipe returns: the purifier, its per-epoch history, the ids it trained
    and selected on, and the file it was saved to (None when not saved)."""

    defense: FCNFilterDefense
    history: dict[str, Any]
    train_ids: list[str] = field(default_factory=list)
    val_ids: list[str] = field(default_factory=list)
    path: Path | None = None


# --------------------------------------------------------------------------- synthetic attack
def random_colour_curves(x: Tensor, *, pieces: int = 64, strength: float | Tensor = 0.5,
                         generator: torch.Generator | None = None) -> Tensor:
    """A random AdvCF-style colour filter per image and channel (no metric, no gradient).

    AdvCF (Zhao et al., "Adversarial color enhancement", BMVC 2020) changes an image through a
    monotone piecewise-linear curve per channel with ``pieces`` slopes
    (:func:`iqalib.attacks.advcf.colour_filter`). Here the slopes are ``exp(strength * N(0,1))``
    (``strength=0``: the identity; a ``[B]`` tensor gives each image its own), so the filter
    learns to undo the whole family rather than one metric's curves. Output clamped to [0, 1]
    and quantised to 8 bits like an attack's.
    """
    from ..attacks.advcf import colour_filter
    from ..attacks.base import quantise

    b, c = x.shape[:2]
    dev = generator.device if generator is not None else x.device
    noise = torch.randn(b, c, pieces, generator=generator, device=dev)
    s = torch.as_tensor(strength, dtype=noise.dtype, device=dev).reshape(-1, 1, 1)
    slopes = torch.exp(s * noise)
    return quantise(colour_filter(x, slopes.to(x.device, x.dtype)))


# --------------------------------------------------------------------------- data helpers
def _u8(x: Tensor) -> Tensor:
    """8-bit copy on the CPU of an image in [0, 1] (an 8-bit image is kept as it is)."""
    if x.dtype == torch.uint8:
        return x.cpu()
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _float(x: Tensor, device) -> Tensor:
    return x.to(device).float().div_(255.0)


def _as_list(images) -> list[Tensor]:
    """A ``[N,3,H,W]`` tensor, a ``[3,H,W]`` tensor or a list of either -> list of ``[3,H,W]``."""
    if images is None:
        return []
    if torch.is_tensor(images):
        return list(images[None] if images.ndim == 3 else images)
    out: list[Tensor] = []
    for im in images:
        out.extend(list(im) if im.ndim == 4 else [im])
    return out


def _check_disjoint(train: list[Tensor], val: list[Tensor]) -> None:
    for i, v in enumerate(val):
        for t in train:
            if v.shape == t.shape and torch.equal(v, t):
                raise ValueError(f"validation image {i} is also in the training set: the held-out "
                                 "SSIM must come from images the filter never saw")


def authors_split(ids: Sequence[str], train_fraction: float = 0.8) -> tuple[list[str], list[str]]:
    """The authors' split: ids sorted by name, the first ``int(0.8 * n)`` train, the rest held
    out (``PurificationDataset`` in their ``dataset.py``)."""
    ordered = sorted(str(i) for i in ids)
    k = int(train_fraction * len(ordered))
    if k < 1 or k >= len(ordered):
        raise ValueError(f"a {train_fraction:.0%} split of {len(ordered)} images leaves an empty "
                         "side: give at least 2 images")
    return ordered[:k], ordered[k:]


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of a list of image ids (one per line): names the training set in provenance."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def held_out_images(images, ids: Sequence[str]):
    """The images ``ids`` of an image set (:mod:`iqalib.imagesets`), as a set of the same kind,
    name and size: what the results grid runs on after :func:`train_like_authors`."""
    return images.subset([str(i) for i in ids])


def _paired_crops(clean: list[Tensor], adv: list[Tensor | None], order: list[int], crop: int | None,
                  g: torch.Generator) -> tuple[Tensor, Tensor, list[bool]]:
    """A batch of (attacked, clean) pairs, 8-bit; ``crop`` px random windows or whole images."""
    cs, ads, have = [], [], []
    for i in order:
        c, a = clean[i], adv[i]
        if crop is not None:
            h, w = c.shape[-2:]
            ch, cw = min(crop, h), min(crop, w)
            t = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            c = c[:, t:t + ch, left:left + cw]
            a = a[:, t:t + ch, left:left + cw] if a is not None else None
        cs.append(c)
        ads.append(a if a is not None else c)
        have.append(a is not None)
    shapes = {tuple(x.shape[-2:]) for x in cs}
    if len(shapes) > 1:
        if crop is None:
            raise ValueError(f"whole-image training needs images of one size, got {sorted(shapes)}; "
                             "pass crop= (random windows) or resize the set")
        hmin, wmin = min(s[0] for s in shapes), min(s[1] for s in shapes)
        cs = [x[:, :hmin, :wmin] for x in cs]
        ads = [x[:, :hmin, :wmin] for x in ads]
    return torch.stack(ads), torch.stack(cs), have


@torch.no_grad()
def _evaluate(net: FCNFilter | None, clean: list[Tensor], adv: list[Tensor], device,
              batch_size: int, ssim_kwargs: dict) -> tuple[float, float]:
    """Mean SSIM and PSNR (``measures``) of the purified held-out images to the clean ones
    (``net=None``: of the attacked images themselves, the baseline)."""
    if net is not None:
        net.eval()
    s, p = [], []
    i = 0
    while i < len(clean):  # batches of neighbours of one size
        j = i + 1
        while j < len(clean) and j - i < batch_size and clean[j].shape == clean[i].shape:
            j += 1
        a = _float(torch.stack(adv[i:j]), device)
        c = _float(torch.stack(clean[i:j]), "cpu")
        out = (net(a).clamp(0, 1) if net is not None else a).float().cpu()
        s.append(measures.ssim(out, c, **ssim_kwargs))
        p.append(measures.psnr(out, c))
        i = j
    return float(torch.cat(s).mean()), float(torch.cat(p).mean())


# --------------------------------------------------------------------------- the trainer
def train_fcn_filter(train_clean, train_attacked, val_clean, val_attacked, *,
                     epochs: int = AUTHORS["epochs"], batch_size: int = AUTHORS["batch_size"],
                     lr: float = AUTHORS["lr"], crop: int | None = None, repeats: int = 1,
                     synthetic: float = 0.0,
                     synthetic_strength: float | tuple[float, float] = 0.5, seed: int = 0,
                     device: str = "auto", ssim_kwargs: dict | None = None,
                     progress: bool = False, log: Callable[[str], None] | None = None,
                     meta: dict | None = None) -> tuple[FCNFilterDefense, dict[str, Any]]:
    """Train the filter on (attacked, clean) pairs; return ``(purifier, history)``.

    ``train_clean`` / ``val_clean``: disjoint clean images (a ``[N,3,H,W]`` tensor or a list of
    ``[3,H,W]`` tensors); ``train_attacked`` / ``val_attacked``: their attacked versions in the
    same order (``train_attacked=None``: random colour curves only). Defaults are the authors':
    whole images (``crop=None``; they must share one size), batch 4, Adam lr 1e-3, MSE, 200
    epochs. ``crop``: train on random ``crop``-px paired windows instead, ``repeats`` per image
    and epoch. ``synthetic``: the probability that a training sample's input is
    :func:`random_colour_curves` of its clean image instead of its attacked version, with
    strength ``synthetic_strength`` (a ``(lo, hi)`` pair: uniform in it per sample; 0 gives
    the clean image itself). After each epoch the whole held-out images are purified and the epoch
    with the best mean SSIM (:func:`iqalib.evaluate.measures.ssim`, ``ssim_kwargs``) is kept.
    Seeded; deterministic on the CPU.

    ``history``: per-epoch ``train_loss`` / ``val_ssim`` / ``val_psnr``, the attacked inputs'
    ``val_ssim_attacked`` / ``val_psnr_attacked``, ``best_epoch``, ``best_val_ssim``,
    ``best_val_psnr``, ``seconds``. The purifier's ``meta`` holds those plus ``meta``.
    """
    from ..device import resolve_device

    dev = resolve_device(device)
    ssim_kwargs = dict(ssim_kwargs or {})
    start = time.perf_counter()
    clean_tr = [_u8(c) for c in _as_list(train_clean)]
    clean_va = [_u8(c) for c in _as_list(val_clean)]
    if not clean_tr or not clean_va:
        raise ValueError("train_fcn_filter needs at least one training and one held-out image")
    _check_disjoint(clean_tr, clean_va)
    adv_tr: list[Tensor | None] = ([_u8(a) for a in _as_list(train_attacked)]
                                   if train_attacked is not None else [None] * len(clean_tr))
    adv_va = [_u8(a) for a in _as_list(val_attacked)]
    if len(adv_tr) != len(clean_tr) or len(adv_va) != len(clean_va):
        raise ValueError("attacked and clean image lists differ in length")
    if train_attacked is None:
        synthetic = 1.0

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FCNFilter().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    base_ssim, base_psnr = _evaluate(None, clean_va, adv_va, "cpu", batch_size, ssim_kwargs)
    hist: dict[str, Any] = {"train_loss": [], "val_ssim": [], "val_psnr": [],
                            "val_ssim_attacked": base_ssim, "val_psnr_attacked": base_psnr,
                            "best_epoch": -1, "best_val_ssim": -math.inf,
                            "best_val_psnr": float("nan")}
    best_state = copy.deepcopy(net.state_dict())

    epochs_iter: Any = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="fcn-filter")
    n = len(clean_tr)
    for epoch in epochs_iter:
        net.train()
        order = [i for _ in range(max(1, repeats)) for i in torch.randperm(n, generator=g).tolist()]
        losses = []
        for k in range(0, len(order), batch_size):
            a8, c8, have = _paired_crops(clean_tr, adv_tr, order[k:k + batch_size], crop, g)
            a, c = _float(a8, dev), _float(c8, dev)
            if synthetic > 0:
                draw = torch.rand(len(have), generator=g) < synthetic
                pick = torch.tensor([bool(d) or not h for d, h in zip(draw.tolist(), have)])
                if pick.any():
                    lo, hi = (synthetic_strength if isinstance(synthetic_strength, (tuple, list))
                              else (synthetic_strength, synthetic_strength))
                    strength = lo + (hi - lo) * torch.rand(int(pick.sum()), generator=g)
                    fake = random_colour_curves(c[pick.to(dev)], strength=strength, generator=g)
                    a = a.clone()
                    a[pick.to(dev)] = fake
            loss = F.mse_loss(net(a), c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        vs, vp = _evaluate(net, clean_va, adv_va, dev, batch_size, ssim_kwargs)
        hist["train_loss"].append(sum(losses) / len(losses))
        hist["val_ssim"].append(vs)
        hist["val_psnr"].append(vp)
        if vs > hist["best_val_ssim"]:
            hist.update(best_epoch=epoch, best_val_ssim=vs, best_val_psnr=vp)
            best_state = copy.deepcopy(net.state_dict())
        if log is not None:
            log(f"epoch {epoch}: loss {hist['train_loss'][-1]:.5f} held-out SSIM {vs:.4f} "
                f"PSNR {vp:.2f}")

    net.load_state_dict(best_state)
    net = net.cpu().eval()
    hist["seconds"] = time.perf_counter() - start
    info = {**(meta or {}), "epoch": hist["best_epoch"], "epochs": epochs,
            "val_ssim": hist["best_val_ssim"], "val_psnr": hist["best_val_psnr"],
            "val_ssim_attacked": base_ssim, "val_psnr_attacked": base_psnr,
            "batch_size": batch_size, "lr": lr, "crop": crop, "repeats": repeats,
            "synthetic": synthetic, "synthetic_strength": synthetic_strength, "seed": seed,
            "ssim": "iqalib.evaluate.measures.ssim" + (f" {json.dumps(ssim_kwargs, sort_keys=True)}"
                                                       if ssim_kwargs else ""),
            "seconds": round(hist["seconds"], 1)}
    return FCNFilterDefense(model=net, seed=seed, meta=info), hist


def save_fcn_filter(defense: FCNFilterDefense, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``{"model": state_dict, "epoch": n, "meta": {...}}`` atomically; the authors'
    loader reads the same keys, and ours loads it with ``weights_only=True``."""
    # through JSON: plain str/int/float/list/dict only (torch.__version__ is a str subclass that
    # weights_only=True refuses), and anything that is not data fails here, not at load time
    m = json.loads(json.dumps({**defense.meta, **(meta or {})}))
    state = {k: v.detach().cpu().clone() for k, v in defense.net.state_dict().items()}
    blob = {"model": state, "epoch": int(m.get("epoch", -1)), "meta": m}
    return atomic_write_with(path, lambda tmp: torch.save(blob, tmp))


# --------------------------------------------------------------------------- the recipes
def _make_attack(metric, attack: str | Callable, seed: int, attack_kwargs: dict | None):
    if not isinstance(attack, str):
        return attack
    from ..attacks import ATTACKS

    return ATTACKS.create(attack, metric=metric, seed=seed, **(attack_kwargs or {}))


def _make_metric(metric, device):
    if not isinstance(metric, str):
        return metric, getattr(metric, "name", type(metric).__name__)
    from ..metrics import create_metric

    return create_metric(metric).to(device).eval(), metric


def train_like_authors(metric, images, *, attack: str = "advcf", epochs: int = AUTHORS["epochs"],
                       seed: int = 0, train_fraction: float = AUTHORS["train_fraction"],
                       batch_size: int = AUTHORS["batch_size"], lr: float = AUTHORS["lr"],
                       device: str = "auto", out: str | Path | None = None, cache=None,
                       attack_batch: int = 8, ssim_kwargs: dict | None = AUTHORS["ssim"],
                       progress: bool = True, log: Callable[[str], None] | None = None
                       ) -> TrainedFilter:
    """Train the filter as the authors did (module docstring): AdvCF on ``metric`` (a name, as
    the grid spells it, or a metric) over every image of ``images`` (an ImageSet), the sorted
    80 / 20 split, whole images, batch 4, Adam 1e-3, MSE, ``epochs`` 200, best held-out SSIM
    (Gaussian window, as their ``pytorch_msssim`` call; ``ssim_kwargs`` of ``measures.ssim``).

    Attacked images go through the grid's :class:`~iqalib.attacks.cache.AttackCache` under the
    grid's key for ``metric`` x ``attack`` (``cache``: its root, by default the one a grid
    writing beside ``out`` uses), so a later :func:`iqalib.run_grid` with the same ``metric``,
    ``attack`` and ``seed`` on the held-out images (:func:`held_out_images`) reuses them. ``out``:
    where to save the filter (then reloaded from it, so its hyperparameters carry the file's
    sha256 and provenance). Returns a :class:`TrainedFilter`; ``val_ids`` are the held-out images.
    """
    from ..attacks.cache import AttackCache, dataset_label, default_root
    from ..device import resolve_device
    from ..evaluate.grid import attack_fingerprint_for

    dev = resolve_device(device)
    m, label = _make_metric(metric, dev)
    atk = _make_attack(m, attack, seed, None)
    train_ids, val_ids = authors_split(images.ids, train_fraction)
    # the grid's own cache key for this metric x attack: its later run finds these images
    out = Path(out) if out is not None else None
    store = AttackCache(cache if cache is not None else default_root(out.parent if out else None))
    fingerprint = attack_fingerprint_for(metric, attack)
    clean: dict[str, Tensor] = {}
    adv: dict[str, Tensor] = {}
    ids = train_ids + val_ids
    for k in range(0, len(ids), 64):  # 64 at a time: 8-bit copies only, whatever the set's size
        chunk = ids[k:k + 64]
        x_adv = store.get_or_run(atk, label, images, chunk, seed, batch_size=attack_batch,
                                 fingerprint=fingerprint)
        x = images.batch(chunk)
        for i, xi, ai in zip(chunk, x, x_adv):
            clean[i], adv[i] = _u8(xi), _u8(ai)
    meta = {"recipe": "authors (wianluna/adversarial_purification conv_filter/train.py)",
            "metric": label, "attack": atk.name, "attack_params": atk.params_json(),
            "dataset": dataset_label(images), "split": f"sorted ids, first {train_fraction:.0%} "
            "train, rest held out", "n_train": len(train_ids), "n_val": len(val_ids),
            "train_ids_sha256": ids_sha256(train_ids), "train_ids": train_ids, "val_ids": val_ids}
    defense, hist = train_fcn_filter(
        [clean[i] for i in train_ids], [adv[i] for i in train_ids],
        [clean[i] for i in val_ids], [adv[i] for i in val_ids], epochs=epochs,
        batch_size=batch_size, lr=lr, crop=None, seed=seed, device=str(dev),
        ssim_kwargs=ssim_kwargs, progress=progress, log=log, meta=meta)
    path = None
    if out is not None:
        path = save_fcn_filter(defense, out)
        defense = FCNFilterDefense(weights=path, seed=seed)
    return TrainedFilter(defense, hist, train_ids, val_ids, path)


def offline_crops(names: Sequence[str], *, size: int, per_photo: int, seed: int,
                  scales: Sequence[float] = (1.0, 0.5)) -> tuple[list[Tensor], list[str]]:
    """Random ``size``-px crops of offline photos, ``per_photo`` per photo spread over
    ``scales`` (each photo resized by the scale first: more content per crop at 0.5).
    Returns the crops (``[3,size,size]``) and their source names (``photo#k``)."""
    from .data import load_photo

    rng = np.random.default_rng(seed)
    out, labels = [], []
    for name in names:
        photo = load_photo(name)[None]
        for k in range(per_photo):
            scale = scales[k % len(scales)]
            x = photo
            if scale != 1.0:
                h, w = photo.shape[-2:]
                x = F.interpolate(photo, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                                  mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            h, w = x.shape[-2:]
            t, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            out.append(_u8(x[0, :, t:t + size, left:left + size]))
            labels.append(f"{name}#{k}")
    return out, labels


def _attacked_crops(attack, crops: dict[str, list[Tensor]], names: dict[str, list[str]],
                    cache: str | Path | None, device, log) -> dict[str, list[Tensor]]:
    """AdvCF (or any attack) on every crop, 8 at a time; read from / written to ``cache``."""
    from ..attacks.cache import attack_fingerprint
    from ..fingerprint import sha, tensor_digest

    key = sha("fcn-offline-pairs", attack_fingerprint(attack),
              *[f"{part}:{n}:{tensor_digest(c)}" for part in crops
                for n, c in zip(names[part], crops[part])])
    path = Path(cache) / f"{key}.pt" if cache is not None else None
    if path is not None and path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if log is not None:
            log(f"attacked crops read from {path}")
        return {part: list(stored[part]) for part in crops}
    t0 = time.perf_counter()
    out: dict[str, list[Tensor]] = {}
    total, done = sum(len(v) for v in crops.values()), 0
    for part, items in crops.items():
        out[part] = []
        for k in range(0, len(items), 8):
            x = _float(torch.stack(items[k:k + 8]), device)
            out[part].extend(_u8(a) for a in attack(x))
            done += len(items[k:k + 8])
            if log is not None:
                log(f"attacked {done}/{total} crops ({time.perf_counter() - t0:.0f} s)")
    if path is not None:
        blob = {part: torch.stack(v) for part, v in out.items()}
        atomic_write_with(path, lambda tmp: torch.save(blob, tmp))
    return out


#: the shipped filter's recipe (``python -m iqalib.training.fcn_filter``)
OFFLINE = {"metric": "effnet-iqa", "attack": "advcf", "n_val_photos": 4, "size": 192,
           "per_photo": 6, "val_per_photo": 2, "crop": 128, "repeats": 2, "epochs": 60,
           "synthetic": 0.5, "synthetic_strength": 0.5, "seed": 0}


def train_offline_filter(*, out: str | Path | None = None, device: str = "cpu",
                         pairs_cache: str | Path | None = None, progress: bool = False,
                         log: Callable[[str], None] | None = None,
                         **overrides: Any) -> TrainedFilter:
    """Train the shipped offline filter (:data:`OFFLINE` settings; keywords override them).

    Photos: the foolbox wheel's 20 ImageNet photos in file order; the last ``n_val_photos``
    are held out whole (model selection), the others give ``per_photo`` random ``size``-px
    crops each (at scales 1 and 0.5). Every crop is attacked by ``attack`` (default settings)
    on ``metric``; training draws ``crop``-px windows, ``repeats`` per crop and epoch, and
    replaces a ``synthetic`` share of the inputs by random colour curves. ``out``: where to save
    it (e.g. ``iqalib/assets/fcn_filter.pt``). ``pairs_cache``: a folder keeping the attacked
    crops (keyed by the crops and the attack's fingerprint: code, settings and the metric's
    weights), so a retraining with other training settings does not attack again.
    """
    from ..device import resolve_device
    from .data import imagenet_photos

    cfg = {**OFFLINE, **overrides}
    unknown = set(cfg) - set(OFFLINE)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(OFFLINE)}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    photos = list(imagenet_photos())
    held = photos[-cfg["n_val_photos"]:]
    train_photos = photos[:-cfg["n_val_photos"]]
    tr, tr_names = offline_crops(train_photos, size=cfg["size"], per_photo=cfg["per_photo"],
                                 seed=cfg["seed"])
    va, va_names = offline_crops(held, size=cfg["size"], per_photo=cfg["val_per_photo"],
                                 seed=cfg["seed"] + 1)
    m, label = _make_metric(cfg["metric"], dev)
    atk = _make_attack(m, cfg["attack"], cfg["seed"], None)
    pairs = _attacked_crops(atk, {"train": tr, "val": va}, {"train": tr_names, "val": va_names},
                            pairs_cache, dev, log)
    adv_tr, adv_va = pairs["train"], pairs["val"]
    attack_seconds = time.perf_counter() - t0
    meta = {"recipe": "offline (iqalib.training.fcn_filter.OFFLINE)", "metric": label,
            "attack": atk.name, "attack_params": atk.params_json(),
            "dataset": "foolbox==3.3.4 ImageNet photos", "split": f"by photo: last "
            f"{cfg['n_val_photos']} of 20 held out", "n_train": len(tr), "n_val": len(va),
            "train_ids_sha256": ids_sha256(tr_names), "train_ids": tr_names, "val_ids": va_names,
            "train_photos": train_photos, "val_photos": held, "settings": dict(cfg),
            "attack_seconds": round(attack_seconds, 1)}
    defense, hist = train_fcn_filter(
        tr, adv_tr, va, adv_va, epochs=cfg["epochs"], crop=cfg["crop"], repeats=cfg["repeats"],
        synthetic=cfg["synthetic"], synthetic_strength=cfg["synthetic_strength"],
        seed=cfg["seed"], device=str(dev), progress=progress, log=log, meta=meta)
    path = None
    if out is not None:
        path = save_fcn_filter(defense, out, {"torch": str(torch.__version__)})
        defense = FCNFilterDefense(weights=path, seed=cfg["seed"])
    return TrainedFilter(defense, hist, tr_names, va_names, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iqalib.training.fcn_filter``: retrain the shipped offline FCN filter."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m iqalib.training.fcn_filter", description=main.__doc__)
    p.add_argument("--out", default=str(assets_dir() / DEFAULT_ASSET))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--pairs-cache", default=str(cache_dir() / "fcn_filter_pairs"),
                   help="folder keeping the attacked crops between runs")
    for k, v in OFFLINE.items():
        if isinstance(v, (tuple, list)):
            p.add_argument(f"--{k.replace('_', '-')}", type=float, nargs=len(v), default=v)
        else:
            p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    a = vars(p.parse_args(argv))
    torch.set_num_threads(a.pop("threads"))
    out, cache = a.pop("out"), a.pop("pairs_cache")
    r = train_offline_filter(out=out, pairs_cache=cache, log=print, **a)
    h = r.history
    print(f"saved {r.path}: best epoch {h['best_epoch']}, held-out SSIM {h['best_val_ssim']:.4f} "
          f"(attacked {h['val_ssim_attacked']:.4f}), PSNR {h['best_val_psnr']:.2f} dB "
          f"(attacked {h['val_psnr_attacked']:.2f}) in {h['seconds']:.0f} s")
    return 0


__all__ = ["AUTHORS", "OFFLINE", "TrainedFilter", "authors_split", "held_out_images", "ids_sha256",
           "main", "offline_crops", "random_colour_curves", "save_fcn_filter",
           "train_fcn_filter", "train_like_authors", "train_offline_filter"]

if __name__ == "__main__":
    raise SystemExit(main())
