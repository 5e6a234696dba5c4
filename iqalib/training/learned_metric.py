"""Training ``effnet-iqa`` (:class:`iqalib.metrics.learned.LearnedIQA`) offline on pseudo-MOS.

The recipe of the shipped head (``iqalib/assets/learned_iqa.pt``):

- photos: the 10 natural photos of :data:`iqalib.training.data.PHOTOS` outside
  :data:`HELD_OUT`, plus the 14 training-only images of
  :data:`iqalib.training.data.EXTRA_SOURCES`; the 4 :data:`HELD_OUT` photos never reach
  training and give the held-out SROCC / PLCC;
- random 224 crops; each crop gives its pristine version plus random (distortion, level) pairs
  of :data:`TRAIN_DISTORTIONS` x levels 1..5 (:mod:`iqalib.distortions`);
- labels: :class:`PseudoMOS`, full-reference metrics that run offline in pyiqa;
- the frozen backbone's pooled features are computed once and cached (:func:`build_dataset`);
  the MLP head is trained on them (:func:`train_learned_metric`).

``python -m iqalib.training.learned_metric --out PATH`` retrains the shipped head.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_write_with
from ..metrics.learned import LearnedIQA
from .data import EXTRA_SOURCES, PHOTOS, centre_crop, load_source, random_crops, to_tensor

#: whole photos kept out of training (the stereo motorcycle pair stays together in training)
HELD_OUT: tuple[str, ...] = ("chelsea", "rocket", "flower", "I08")
#: distortions the metric is trained on (``pixelate`` is left out: FR metrics mis-rank it)
TRAIN_DISTORTIONS: tuple[str, ...] = ("noise", "blur", "jpeg", "contrast", "saturation", "brightness")
#: the photos the shipped head was trained on
TRAIN_PHOTOS: tuple[str, ...] = tuple(s for s in PHOTOS if s not in HELD_OUT)

_FR_NAMES = ("vsi", "gmsd")
# linear maps of each FR score to [0, 1] quality: (value at 0, value at 1); chosen so the
# level-5 distortions land near 0 and the pristine crop at 1
_FR_MAP = {"fsim": (0.6, 1.0), "vsi": (0.8, 1.0), "gmsd": (0.2, 0.0)}  # fsim: optional, slow


class PseudoMOS:
    """Pseudo-MOS in 0..100 from full-reference metrics that run offline in pyiqa.

    The mean of VSI (Zhang et al. 2014) and GMSD (Xue et al. 2014), each mapped linearly to
    [0, 1] and clipped, times 100. VSI sees colour, so desaturation is penalised (mildly, as in
    the subjective databases). FSIMc (Zhang et al. 2011) agrees with them but costs more CPU
    than the whole backbone, so it is left out by default (``PseudoMOS(names=("fsim", "vsi",
    "gmsd"))`` adds it).
    """

    def __init__(self, device: str | torch.device = "cpu", names: tuple[str, ...] = _FR_NAMES):
        import pyiqa

        self.metrics = {n: pyiqa.create_metric(n, device=str(device)) for n in names}

    @torch.no_grad()
    def __call__(self, dist: Tensor, ref: Tensor) -> Tensor:
        parts = []
        for n, m in self.metrics.items():
            s = m(dist, ref).float().reshape(-1).cpu()
            lo, hi = _FR_MAP[n]
            parts.append(((s - lo) / (hi - lo)).clamp(0, 1))
        return 100.0 * torch.stack(parts).mean(0)


def held_out_crops(size: int = 224, photos: Sequence[str] = HELD_OUT) -> Tensor:
    """Centre crops ``[N,3,size,size]`` of the held-out photos (never seen in training)."""
    return torch.stack([to_tensor(centre_crop(load_source(n), size)) for n in photos])


@torch.no_grad()
def build_dataset(model: LearnedIQA, *, sources: Sequence[str], n_crops: int, n_pairs: int | None,
                  seed: int, crop: int = 224, batch: int = 16, progress: bool = True,
                  desc: str = "crops") -> dict[str, Any]:
    """Distorted crops -> cached frozen features and pseudo-MOS labels.

    For each source, ``n_crops`` random crops; each crop gives its pristine version plus
    ``n_pairs`` random (distortion, level) pairs (``None``: all 6 x 5). Returns tensors
    ``frozen [N,896]``, ``h14 [N,192,7,7]``, ``label [N]`` and lists ``source``, ``kind``, ``level``.
    """
    from tqdm.auto import tqdm

    from ..distortions import distort

    rng = np.random.default_rng(seed)
    labeller = PseudoMOS()
    grid = [(k, lv) for k in TRAIN_DISTORTIONS for lv in range(1, 6)]
    frozen, h14, labels, src, kinds, levels = [], [], [], [], [], []
    jobs = [(s, c) for s in sources for c in random_crops(load_source(s), n_crops, crop, rng)]
    for j, (s, c) in enumerate(tqdm(jobs, desc=desc, disable=not progress)):
        ref = to_tensor(c)[None]
        if n_pairs is None:
            pairs = grid
        else:
            idx = rng.choice(len(grid), size=n_pairs, replace=False)
            pairs = [grid[i] for i in sorted(idx)]
        imgs = [ref] + [distort(ref, k, lv, seed=seed * 100003 + j * 101 + lv) for k, lv in pairs]
        x = torch.cat(imgs)
        labels.append(labeller(x, ref.expand_as(x)))
        for i in range(0, x.shape[0], batch):
            f, h = model.frozen_features(x[i:i + batch].to(model.device))
            frozen.append(f.cpu())
            h14.append(h.cpu())
        src += [s] * x.shape[0]
        kinds += ["pristine"] + [k for k, _ in pairs]
        levels += [0] + [lv for _, lv in pairs]
    return {"frozen": torch.cat(frozen), "h14": torch.cat(h14), "label": torch.cat(labels),
            "source": src, "kind": kinds, "level": levels}


def concat_datasets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two cached sets of :func:`build_dataset` as one."""
    return {k: torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else a[k] + b[k] for k in a}


def build_training_data(model: LearnedIQA, *, seed: int = 0, n_crops: int = 6, n_pairs: int = 12,
                        n_test_crops: int = 2, n_extra_crops: int = 3,
                        progress: bool = True) -> tuple[dict, dict]:
    """The cached training set (:data:`TRAIN_PHOTOS` + :data:`EXTRA_SOURCES`) and the held-out
    test set (all 30 distortion/level pairs of each held-out crop, plus the pristine crop)."""
    train = build_dataset(model, sources=TRAIN_PHOTOS, n_crops=n_crops, n_pairs=n_pairs,
                          seed=seed, progress=progress, desc="training crops")
    if n_extra_crops:
        extra = build_dataset(model, sources=list(EXTRA_SOURCES), n_crops=n_extra_crops,
                              n_pairs=n_pairs, seed=seed + 2, progress=progress, desc="extra crops")
        train = concat_datasets(train, extra)
    test = build_dataset(model, sources=HELD_OUT, n_crops=n_test_crops, n_pairs=None,
                         seed=seed + 1, progress=progress, desc="held-out crops")
    return train, test


def predict(model: LearnedIQA, ds: dict[str, Any], batch: int = 128) -> Tensor:
    """The model's scores ``[N]`` on a cached set (features already computed)."""
    model.eval()
    with torch.no_grad():
        dev = model.device
        return torch.cat([model.regress(ds["frozen"][i:i + batch].to(dev),
                                        ds["h14"][i:i + batch].to(dev)).cpu()
                          for i in range(0, len(ds["label"]), batch)])


def evaluate(model: LearnedIQA, ds: dict[str, Any]) -> dict[str, float]:
    """SROCC / PLCC (``iqalib.evaluate.measures``, scipy) and RMSE of the model's scores
    against the pseudo-MOS of a cached set."""
    from ..evaluate import measures

    pred = predict(model, ds).double().numpy()
    lab = ds["label"].double().numpy()
    return {"srocc": measures.srocc(pred, lab), "plcc": measures.plcc(pred, lab),
            "rmse": float(np.sqrt(np.mean((pred - lab) ** 2)))}


def predictions_table(model: LearnedIQA, ds: dict[str, Any]):
    """One row per cached crop: ``pseudo_mos``, ``predicted``, ``distortion``, ``level``,
    ``photo`` (a pandas DataFrame, for plots)."""
    import pandas as pd

    return pd.DataFrame({"pseudo_mos": ds["label"].numpy(), "predicted": predict(model, ds).numpy(),
                         "distortion": ds["kind"], "level": ds["level"], "photo": ds["source"]})


def train_learned_metric(*, seed: int = 0, epochs: int = 400, n_crops: int = 6,
                         n_pairs: int = 12, n_test_crops: int = 2, n_extra_crops: int = 3,
                         finetune: bool = False, lr: float = 5e-4, tune_lr: float = 1e-4,
                         weight_decay: float = 1e-2, batch_size: int = 64,
                         out: str | Path | None = None, progress: bool = True,
                         device: str = "cpu", return_model: bool = False,
                         data: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """Train ``effnet-iqa``'s head from scratch offline; return held-out metrics (and save it).

    Defaults (the shipped asset): seed 0; 6 random 224 crops per training photo (10 photos)
    and 3 per extra training image (14), each crop with its pristine version + 12 random
    (distortion, level) pairs; 2 crops per held-out photo with all 30 pairs + pristine. The MLP
    is trained with AdamW (lr 5e-4, weight decay 1e-2, batch 64, 400 epochs, MSE on label/100)
    on cached features. ``finetune=True`` also trains block 15 + the head conv (lr
    ``tune_lr``): it did not help held-out SROCC in our runs and costs minutes per epoch on a
    CPU, so it is off by default. Deterministic under ``seed`` on a given machine. ``out``:
    where to save the state dict (float16 weights, loaded with ``weights_only=True``), written
    atomically; ``None`` saves nothing.

    Returns ``dict(srocc, plcc, rmse, train_srocc, n_train, n_test, seed, epochs, minutes)``,
    plus ``asset_bytes`` when saved, and ``model`` and the cached ``test`` set with
    ``return_model=True``.
    """
    from tqdm.auto import tqdm

    from ..device import resolve_device, seed_everything

    t0 = time.time()
    dev = resolve_device(device)
    seed_everything(seed)
    model = LearnedIQA(weights=None).to(dev)
    if data is None:
        data = build_training_data(model, seed=seed, n_crops=n_crops, n_pairs=n_pairs,
                                   n_test_crops=n_test_crops, n_extra_crops=n_extra_crops,
                                   progress=progress)
    train, test = data

    # standardise the features with the training set's statistics; a floor at the median std
    # keeps near-constant features (tiny std on 24 training images) from exploding on new ones
    model.eval()
    with torch.no_grad():
        f0 = torch.cat([train["frozen"], torch.cat([
            model.tuned_features(train["h14"][i:i + 256].to(dev)).cpu()
            for i in range(0, len(train["label"]), 256)])], dim=1)
        sd = f0.std(0)
        model.feat_mean.copy_(f0.mean(0).to(dev))
        model.feat_std.copy_(sd.clamp_min(float(sd.median())).to(dev))
        z0 = ((f0.to(dev) - model.feat_mean) / model.feat_std)

    torch.manual_seed(seed)
    for m in model.head.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    tuned = [p for k, m in model.tuned_modules().items() if k != "head" for p in m.parameters()]
    for p in [*(tuned if finetune else []), *model.head.parameters()]:
        p.requires_grad_(True)
    groups = [{"params": list(model.head.parameters()), "lr": lr}]
    if finetune:
        groups.append({"params": tuned, "lr": tune_lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    n = len(train["label"])
    g = torch.Generator().manual_seed(seed)
    y = train["label"].to(dev) / 100.0
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for _ in bar:
        model.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if finetune:
                pred = model.regress(train["frozen"][idx].to(dev), train["h14"][idx].to(dev))
            else:  # the features are fixed: train the MLP on the cached, standardised ones
                pred = 100.0 * model.head(z0[idx.to(dev)]).squeeze(1)
            loss = F.mse_loss(pred / 100.0, y[idx.to(dev)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(mse=f"{total / n:.4f}")
    model.requires_grad_(False)
    model.eval()

    # evaluate what is shipped: the float16 round trip of the trained tensors
    state = {k: (v.half() if v.is_floating_point() and k not in ("feat_mean", "feat_std") else v)
             for k, v in model.trained_state().items()}
    model.load_trained_state({k: v.to(dev) for k, v in state.items()})
    metrics: dict[str, Any] = evaluate(model, test)
    metrics["train_srocc"] = evaluate(model, train)["srocc"]
    metrics.update(n_train=n, n_test=len(test["label"]), seed=seed, epochs=epochs)
    metrics["minutes"] = (time.time() - t0) / 60.0
    if out is not None:
        cpu_state = {k: v.cpu() for k, v in state.items()}
        out = atomic_write_with(out, lambda tmp: torch.save(cpu_state, tmp))
        metrics["asset_bytes"] = out.stat().st_size
    if return_model:
        metrics["model"] = model
        metrics["test"] = test
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m iqalib.training.learned_metric``: retrain effnet-iqa's head offline."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m iqalib.training.learned_metric",
                                description=main.__doc__)
    p.add_argument("--out", required=True, help="where to write the head (e.g. "
                   "iqalib/assets/learned_iqa.pt to replace the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = train_learned_metric(seed=a.seed, epochs=a.epochs, out=a.out)
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["HELD_OUT", "TRAIN_DISTORTIONS", "TRAIN_PHOTOS", "PseudoMOS", "build_dataset",
           "build_training_data", "concat_datasets", "evaluate", "held_out_crops", "main",
           "predict", "predictions_table", "train_learned_metric"]
