"""Tiny metrics, attacks and defenses for the grid / cache tests (importable by subprocesses
and, pickled by value, by Dask workers)."""
from __future__ import annotations

import time
from typing import ClassVar

import torch
import torch.nn.functional as F

from iqalib.attacks.base import Attack, project_linf
from iqalib.defenses.base import Defense
from iqalib.errors import MissingWeightsError
from iqalib.metrics.base import IQAMetric


class ToySharpness(IQAMetric):
    """A deterministic differentiable stand-in metric: mean absolute Laplacian, squashed.

    Higher is better (sharper / noisier images score higher), range (0, 1). Cheap enough for
    every attack and defense test; real metrics are tested in tests/metrics. conftest.py
    re-exports it.
    """

    name = "toy-sharpness"
    lower_better = False
    score_range = (0.0, 1.0)

    def __init__(self):
        super().__init__()
        k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("kernel", k.expand(3, 1, 3, 3).clone())

    def forward(self, x):
        lap = F.conv2d(x, self.kernel, padding=1, groups=3)
        return torch.tanh(8 * lap.abs().mean(dim=(1, 2, 3)))


class SignAttack(Attack):
    """A 2-step I-FGSM-like sign attack (eps 4/255, step 2/255) on the score loss."""

    name = "toy-sign"

    def __init__(self, metric, *, eps=4 / 255, steps=2, seed=0):
        super().__init__(metric, eps=eps, steps=steps, seed=seed)

    def perturb(self, x):
        x_adv = x.clone()
        for _ in range(self.steps):
            _, grad = self.loss_and_grad(x_adv)
            x_adv = project_linf(x_adv - (self.eps / self.steps) * grad.sign(), x, self.eps)
        return x_adv


class CountingSignAttack(SignAttack):
    """SignAttack that appends one line per call to ``log`` or, when ``log`` is empty, to the
    file named by $TOY_ATTACK_LOG if set (to count attack runs)."""

    name = "toy-sign-counted"

    def __init__(self, metric, *, eps=4 / 255, steps=2, seed=0, log=""):
        Attack.__init__(self, metric, eps=eps, steps=steps, seed=seed, log=log)

    def perturb(self, x):
        import os

        log = self.log or os.environ.get("TOY_ATTACK_LOG", "")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{x.shape[0]}\n")
        return super().perturb(x)


class FlipDefense(Defense):
    """Flip both axes (the study's flip purifier, reimplemented for the tests)."""

    name = "toy-flip"

    def __init__(self, *, seed=0):
        super().__init__(seed=seed)

    def purify(self, x, generator):
        return torch.flip(x, dims=(-2, -1))


class NoiseDefense(Defense):
    """Stochastic: adds Gaussian noise of std ``sigma`` drawn from the generator."""

    name = "toy-noise"
    stochastic = True

    def __init__(self, *, sigma=0.02, seed=0):
        super().__init__(sigma=sigma, seed=seed)

    def purify(self, x, generator):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.sigma * noise).clamp(0, 1)


class CropDefense(Defense):
    """Changes size: a centre crop of ``size`` pixels."""

    name = "toy-crop"
    changes_size = True

    def __init__(self, *, size=48, seed=0):
        super().__init__(size=size, seed=seed)

    def purify(self, x, generator):
        h, w = x.shape[-2:]
        t, l = (h - self.size) // 2, (w - self.size) // 2
        return x[..., t:t + self.size, l:l + self.size]


class SlowDefense(Defense):
    """Sleeps ``delay`` seconds per call (to kill a run in the middle)."""

    name = "toy-slow"

    def __init__(self, *, delay=0.4, seed=0):
        super().__init__(delay=delay, seed=seed)

    def purify(self, x, generator):
        time.sleep(self.delay)
        return x.flip(-1)


class BrokenDefense(Defense):
    """Always fails the way a purifier without its checkpoint does."""

    name = "toy-broken"

    def __init__(self, *, seed=0):
        super().__init__(seed=seed)

    def purify(self, x, generator):
        raise MissingWeightsError("toy-broken needs weights: run `make weights WEIGHTS=toy-broken`")


class NeedsFileDefense(Defense):
    """Fails with MissingWeightsError until the file ``flag`` exists (weights "arriving")."""

    name = "toy-needs-file"

    def __init__(self, *, flag="", seed=0):
        super().__init__(flag=flag, seed=seed)

    def purify(self, x, generator):
        import os

        if not os.path.exists(self.flag):
            raise MissingWeightsError("toy-needs-file: run `make weights WEIGHTS=toy-needs-file`")
        return x.flip(-2)


class CountingDefense(Defense):
    """Flips the width axis and records the content digest of every image it purifies in the
    class-level list ``seen`` (to count purifications; in-process runs only)."""

    name = "toy-counting"
    seen: ClassVar[list] = []

    def __init__(self, *, seed=0):
        super().__init__(seed=seed)

    def purify(self, x, generator):
        from iqalib.fingerprint import tensor_digest

        type(self).seen.extend(tensor_digest(img.cpu()) for img in x)
        return x.flip(-1)


class HeavyCountingDefense(Defense):
    """A purifier with a network (a fixed 3x3 box blur as an nn.Conv2d), so the grid gives it a
    task group of its own; counts the images it purifies in ``calls``."""

    name = "toy-heavy"
    calls: ClassVar[list] = []

    def __init__(self, *, seed=0):
        super().__init__(seed=seed)
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        with torch.no_grad():
            self.net.weight.fill_(1 / 9)

    def to(self, device):
        super().to(device)
        self.net.to(device)
        return self

    def purify(self, x, generator):
        type(self).calls.append(x.shape[0])
        with torch.no_grad():
            return self.net(x).clamp(0, 1)


class NanOnFlatMetric(ToySharpness):
    """A metric that is undefined (NaN) on flat images, as BRISQUE's fit is; else the toy
    sharpness. Gradients stay finite (the NaN is a constant branch)."""

    name = "toy-nan-on-flat"

    def forward(self, x):
        s = super().forward(x)
        flat = x.flatten(1).std(dim=1) < 1e-4
        return torch.where(flat, torch.full_like(s, float("nan")), s)
