"""The defense contract: ``defense(x) -> purified x`` for a batch ``[B,3,H,W]`` in [0,1].

A purifier sees every input before the metric, attacked or not. Stochastic purifiers are
seedable: with ``seed`` set, the same input gives the same output; pass ``generator=`` to
draw fresh randomness (EOT averaging does). Defenses compose with ``+`` into :class:`Compose`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._params import HasParams
from ..device import channels_last, follow_input
from ..metrics.base import check_images


class Defense(HasParams):
    """Base class. Subclasses call ``super().__init__(seed=..., **hyperparameters)`` and
    implement :meth:`purify`.

    Class attributes: ``stochastic`` (uses randomness), ``differentiable`` (gradients flow
    through :meth:`purify` exactly), ``changes_size`` (output may differ in size; documented).
    """

    name = "defense"
    stochastic = False
    differentiable = True
    changes_size = False

    def __init__(self, *, seed: int = 0, **hyperparameters):
        self._set_params(**hyperparameters)
        self.seed = seed
        self.device: torch.device | None = None

    def to(self, device) -> Defense:
        """Move any networks the purifier holds; base purifiers hold none."""
        self.device = torch.device(device)
        return self

    def purify(self, x: Tensor, generator: torch.Generator | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        check_images(x, f"{self.name} input")
        if self.device is not None:
            x = x.to(self.device)
        if self.stochastic and generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
        # a network held channels-last (iqalib.device.channels_last) may hand back that layout
        return self.purify(x, generator).contiguous()

    def __add__(self, other: Defense) -> Compose:
        return Compose([self, other])


def frozen(net: nn.Module) -> nn.Module:
    """A purifier's network as every network purifier holds it: eval mode, no parameter
    gradients (it stays differentiable in its input), weights channels-last
    (:func:`iqalib.device.channels_last`); in place, returns ``net``."""
    channels_last(net.eval())
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class NetworkDefense(Defense):
    """A purifier around one frozen network ``self.net`` (FFDNet, the FCN filter, MPRNet,
    Real-ESRGAN): ``.to(device)`` moves the network; without it the network follows the
    input's device (:func:`iqalib.device.follow_input`)."""

    net: nn.Module

    def to(self, device) -> NetworkDefense:
        super().to(device)
        self.net.to(self.device)
        return self

    def _run(self, x: Tensor) -> Tensor:
        """``x`` in the network's dtype, the network on ``x``'s device."""
        return x.to(follow_input(self.net, x))


class Compose(Defense):
    """Apply purifiers in order: ``Compose([DiffPure(t=5), Unsharp()])`` is the study's
    DiffPure+Unsharp. Stochastic / differentiable when any / all parts are."""

    name = "compose"

    def __init__(self, defenses, *, seed: int = 0):
        flat = []
        for d in defenses:
            flat.extend(d.defenses if isinstance(d, Compose) else [d])
        super().__init__(seed=seed)
        self.defenses = flat
        self.hparams = {"parts": [(d.name, d.hparams) for d in flat]}
        self.name = "+".join(d.name for d in flat)
        self.stochastic = any(d.stochastic for d in flat)
        self.differentiable = all(d.differentiable for d in flat)
        self.changes_size = any(d.changes_size for d in flat)

    def to(self, device) -> Compose:
        super().to(device)
        for d in self.defenses:
            d.to(device)
        return self

    def purify(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        for d in self.defenses:
            x = d(x, generator=generator) if d.stochastic else d(x)
        return x

    def __repr__(self) -> str:
        return " + ".join(repr(d) for d in self.defenses)
