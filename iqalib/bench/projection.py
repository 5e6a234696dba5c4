"""Project a whole profile run (the paper's by default) from timed components.

``python -m iqalib bench --project paper`` (``make bench PROFILE=paper``):

1. counts the work of the run (:func:`iqalib.bench.plan.workload`: attack loops counted by
   running each attack on a counting metric, purifiers read from the registry, the profile's
   sizes from :mod:`iqalib.study`);
2. times every component that work uses, per image at the data set's size (NIPS'17: 299 px),
   on synthetic inputs with RANDOM weights of the real architectures: Linearity's
   ResNeXt-101 32x8d at full resolution, MetaIQA's ResNet-18, SPAQ's ResNet-50 on 224 px
   patches, MPRNet, Real-ESRGAN x4, the FCN filter, the transforms, Zhang et al.'s DISTS /
   LPIPS networks, and DiffPure's guided-diffusion 256x256 UNet (about 550M parameters), as
   DiffPure runs it on this device. Timing does not depend on the weights' values;
3. multiplies and sums: hours per stage and in total, on this device.

On a CPU the components run at batch 1 (one call of the UNet, minutes, then scaled by the
number of calls); on a GPU at the profile's batch size. The FLOP floor is printed next to the
projection: FLOPs of one UNet call counted by :class:`torch.utils.flop_counter.FlopCounterMode`
(a multiply-add counts 2), and of every network component on its first (untimed) call, at half
the bf16 peak of an H200 (the issue's reference device, 790 TFLOP/s dense) .
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from ..defenses.diffpure import Prior
from . import plan
from .components import build_attack, build_defense, build_metric, guided_diffpure
from .counting import CountingMetric, attack_network_calls
from .timing import device_name, load_average, repeats_within, sync, time_pair, timeit

#: bf16 dense peak of one H200 (SXM), the issue's reference for the floor
H200_BF16_FLOPS = 790e12
#: the share of the peak the floor assumes (the issue's "half the peak")
FLOOR_EFFICIENCY = 0.5
#: the issue's estimate of one guided-diffusion 256 UNet call (its FLOP floor)
ISSUE_UNET_TFLOP = 1.1


@dataclass
class Timing:
    """One component: ``seconds`` and ``flops`` per image (``flops`` NaN when not counted:
    code without networks), timed at ``batch`` images per call."""

    component: str
    seconds: float
    flops: float = math.nan
    batch: int = 1
    note: str = ""


def _count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of ``fn()`` (which runs once); NaN where the counter cannot follow it (its
    module hooks refuse ``torch.autograd.grad`` on a leaf, which every attack calls: attacks
    then add no FLOPs beyond their metric passes, which are counted)."""
    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    except RuntimeError:
        fn()
        return math.nan
    return float(fc.get_total_flops())


def unet_flops(size: int = 256) -> float:
    """FLOPs of one call of the guided-diffusion 256x256 UNet on one image, counted on the
    meta device (nothing is allocated or computed)."""
    from ..defenses.guided_unet import build_unet

    unet = build_unet(device="meta")
    x = torch.zeros(1, 3, size, size, device="meta")
    t = torch.zeros(1, dtype=torch.long, device="meta")
    with torch.no_grad():
        return _count_flops(lambda: unet(x, t))


class _FreePrior(Prior):
    """A prior that costs nothing (zeros, with the guided UNet's 6 output channels), so that
    timing DiffPure with it isolates the sampler's own work."""

    name = "free"
    prediction_type = "epsilon"
    learned_variance = True

    def __call__(self, x_t: Tensor, t: int, abar: Tensor) -> Tensor:
        return torch.zeros(x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:], device=x_t.device,
                           dtype=x_t.dtype)


class ComponentTimer:
    """Times the components of :mod:`iqalib.bench.plan` on ``device``, per image.

    ``batch``: images per call (CPU default 1; GPU default the profile's batch size);
    ``size``: image side (299: NIPS'17); ``repeats`` / ``budget_s``: see
    :func:`~iqalib.bench.timing.timeit`.
    """

    def __init__(self, device: torch.device, *, batch: int = 1, size: int = 299,
                 repeats: int = 3, budget_s: float = 20.0, seed: int = 0):
        self.device = device
        self.batch = batch
        self.size = size
        self.repeats = repeats
        self.budget_s = budget_s
        g = torch.Generator().manual_seed(seed)
        self.x = self._images(batch, size, g).to(device)
        self._metrics: dict[str, object] = {}
        self._counted_calls: dict[str, dict[str, float]] = {}
        self._free_diffpure: dict[int, float] = {}

    @staticmethod
    def _images(batch: int, size: int, g: torch.Generator) -> Tensor:
        """Smooth synthetic images (low-frequency noise plus a little grain): BRISQUE and NIQE
        fit natural-scene statistics and need some texture; networks do not care."""
        low = torch.rand(batch, 3, 8, 8, generator=g)
        img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        return (img + 0.03 * torch.randn(batch, 3, size, size, generator=g)).clamp(0, 1)

    # -- helpers ---------------------------------------------------------------------
    def _counted_warmup(self, fn) -> tuple[float, float]:
        """``fn()`` once under the FLOP counter (the warm-up call): ``(FLOPs, seconds)``. The
        seconds (an overestimate: the counter adds its own work) tell the timer how many
        repeats fit in the budget."""
        t0 = time.perf_counter()
        flops = _count_flops(fn)
        sync(self.device)
        return flops, time.perf_counter() - t0

    def _repeats(self, warmup_s: float) -> int:
        return repeats_within(self.budget_s, warmup_s, self.repeats)

    def _time(self, fn, *, per: int, warmup: int = 1, count_flops: bool = True) -> tuple[float, float]:
        flops, warm_s = math.nan, 0.0
        if warmup and count_flops:
            flops, warm_s = self._counted_warmup(fn)
            flops /= per
            warmup -= 1
        sec = timeit(fn, self.device, repeats=self._repeats(warm_s), warmup=warmup,
                     budget_s=self.budget_s)
        return sec / per, flops

    def metric(self, name: str):
        if name not in self._metrics:
            self._metrics[name] = build_metric(name, self.device)
        return self._metrics[name]

    def attack_calls(self, name: str) -> dict[str, float]:
        """Metric passes per image of attack ``name`` (counted, see :mod:`.counting`)."""
        if name not in self._counted_calls:
            self._counted_calls[name] = attack_network_calls(lambda m: build_attack(name, m))
        return self._counted_calls[name]

    # -- the components -------------------------------------------------------------
    def time(self, component: str) -> Timing:
        kind, _, arg = component.partition(":")
        fn = getattr(self, f"_t_{kind}")
        t0 = time.perf_counter()
        out = fn(arg) if arg else fn()
        out.component = component
        out.note = (out.note + "; " if out.note else "") + f"timed in {time.perf_counter() - t0:.0f} s"
        return out

    def _t_metric_fwd(self, name: str) -> Timing:
        m = self.metric(name)
        x = self.x

        def fwd():
            with torch.no_grad():
                return m(x)

        sec, fl = self._time(fwd, per=x.shape[0])
        return Timing("", sec, fl, x.shape[0])

    def _t_metric_grad(self, name: str) -> Timing:
        m = self.metric(name)
        x = self.x

        def fwd_bwd():
            # backward() rather than autograd.grad: the same work, and the FLOP counter follows it
            xi = x.detach().requires_grad_(True)
            m(xi).sum().backward()
            return xi.grad

        sec, fl = self._time(fwd_bwd, per=x.shape[0])
        return Timing("", sec, fl, x.shape[0])

    def _t_attack_extra(self, name: str) -> Timing:
        """The attack's time on a near-free metric minus that metric's own passes, the two
        timed alternately (:func:`~.timing.time_pair`) so that a load change hits both."""
        cm = CountingMetric().to(self.device)
        x = self.x
        atk = build_attack(name, cm)
        calls = self.attack_calls(name)

        def passes():
            for _ in range(round(calls["grad"])):
                xi = x.detach().requires_grad_(True)
                torch.autograd.grad(cm(xi).sum(), xi)
            with torch.no_grad():
                for _ in range(round(calls["plain"])):
                    cm(x)

        fl, warm_s = self._counted_warmup(lambda: atk(x))  # also the warm-up
        fl /= x.shape[0]
        pair = time_pair(lambda: atk(x), passes, self.device, repeats=self._repeats(warm_s),
                         warmup=0, budget_s=self.budget_s)
        t_attack, t_passes = pair.ours, pair.reference
        note = f"{calls['grad']:g} grad + {calls['plain']:g} plain metric passes"
        return Timing("", max(0.0, t_attack - t_passes) / x.shape[0], fl, x.shape[0], note)

    def _t_purify(self, spec: str) -> Timing:
        d = build_defense(spec, self.device)
        x = self.x

        def run():
            with torch.no_grad():
                return d(x)

        sec, fl = self._time(run, per=x.shape[0])
        return Timing("", sec, fl, x.shape[0])

    def _t_purify_grad(self, spec: str) -> Timing:
        d = build_defense(spec, self.device)
        x = self.x

        def run():
            xi = x.detach().requires_grad_(True)
            d(xi).sum().backward()
            return xi.grad

        sec, fl = self._time(run, per=x.shape[0])
        return Timing("", sec, fl, x.shape[0])

    def _t_unet(self) -> Timing:
        """One call of the guided UNet as DiffPure makes it: DiffPure at t=k with the random
        guided prior minus DiffPure at t=k with a free prior, over k. On a CPU k=1 and one
        timed call (minutes); on a GPU k=5, warmed up, median of the repeats. FLOPs counted on
        the meta device."""
        from ..defenses.diffpure import DiffPure

        on_cpu = self.device.type == "cpu"
        k = 1 if on_cpu else 5
        dp = guided_diffpure(k, self.device)
        free = DiffPure(t=k, prior=_FreePrior()).to(self.device)
        x = self.x
        reps = {"repeats": 1, "warmup": 0} if on_cpu else {"repeats": self.repeats, "warmup": 1}
        t_dp = timeit(lambda: dp(x), self.device, **reps)
        t_free = timeit(lambda: free(x), self.device, repeats=self.repeats)
        net = dp.get_prior().net
        note = (f"{sum(p.numel() for p in net.parameters()) / 1e6:.0f}M parameters, precision "
                f"{dp.compute_precision(self.device)}, DiffPure t={k}")
        return Timing("", max(0.0, t_dp - t_free) / (k * x.shape[0]), unet_flops(), x.shape[0],
                      note + ("; one call, no warm-up" if on_cpu else ""))

    def _diffpure_free(self, t: int) -> float:
        if t not in self._free_diffpure:
            from ..defenses.diffpure import DiffPure

            d = DiffPure(t=t, prior=_FreePrior()).to(self.device)
            x = self.x
            self._free_diffpure[t] = timeit(lambda: d(x), self.device, repeats=self.repeats,
                                            budget_s=self.budget_s) / x.shape[0]
        return self._free_diffpure[t]

    def _t_sampler_step(self) -> Timing:
        t1, t10 = self._diffpure_free(1), self._diffpure_free(10)
        return Timing("", max(0.0, (t10 - t1) / 9), math.nan, self.x.shape[0],
                      "DiffPure t=10 minus t=1 with a free prior, per step")

    def _t_diffpure_io(self) -> Timing:
        t1, t10 = self._diffpure_free(1), self._diffpure_free(10)
        step = max(0.0, (t10 - t1) / 9)
        return Timing("", max(0.0, t1 - step), math.nan, self.x.shape[0],
                      "resize to 256 and back, diffuse")

    def _t_fcn_train(self) -> Timing:
        """One step of the authors' recipe (batch 4, whole images, MSE, Adam 1e-3), per image."""
        from ..defenses.fcn import FCNFilter
        from ..training.fcn_filter import AUTHORS

        b = AUTHORS["batch_size"]
        net = FCNFilter().to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=AUTHORS["lr"])
        g = torch.Generator().manual_seed(2)
        clean = self._images(b, self.size, g).to(self.device)
        adv = (clean * 0.9 + 0.05).clamp(0, 1)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(net(adv).clamp(-1, 1), clean)
            loss.backward()
            opt.step()

        sec, fl = self._time(step, per=b)
        return Timing("", sec, fl, b)


@dataclass
class Projection:
    """The result: ``stages`` (stage, hours, TFLOP, the components that dominate),
    ``components`` (component, s/image, count, hours, TFLOP), totals and floors."""

    profile: str
    device: str
    stages: object
    components: object
    total_hours: float
    total_tflop: float
    unet_calls: float
    unet_tflop: float
    notes: list

    def floor_hours(self, tflop: float) -> float:
        """Hours for ``tflop`` TFLOP at :data:`FLOOR_EFFICIENCY` of the H200's bf16 peak."""
        return tflop * 1e12 / (H200_BF16_FLOPS * FLOOR_EFFICIENCY) / 3600


def project(profile: str = "paper", *, device="auto", batch: int | None = None, size: int = 299,
            repeats: int = 3, budget_s: float = 20.0, progress: bool = True) -> Projection:
    """Count a profile's work, time its components here, and project the run (see the
    module docstring). ``batch`` defaults to 1 on a CPU, the profile's batch size on a GPU."""
    from .. import study
    from ..device import resolve_device

    dev = resolve_device(device)
    if batch is None:
        batch = 1 if dev.type == "cpu" else int(study.settings(profile)["batch_size"])
    timer = ComponentTimer(dev, batch=batch, size=size, repeats=repeats, budget_s=budget_s)
    need = plan.specs_needed(profile)
    calls = {a: timer.attack_calls(a) for a in need["attacks"]}
    info = {p: plan.purifier_info(p, build_defense) for p in need["purifiers"]}
    work = plan.workload(profile, calls, info)
    totals = plan.totals(work)

    timings: dict[str, Timing] = {}
    for comp in sorted(totals, key=_timing_order):
        if progress:
            print(f"  timing {comp} ...", flush=True)
        try:
            timings[comp] = timer.time(comp)
        except Exception as exc:  # noqa: BLE001 - a component that cannot run is reported
            timings[comp] = Timing(comp, math.nan, math.nan, batch,
                                   f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        if progress:
            t = timings[comp]
            print(f"    {t.seconds:.4g} s/image  {t.note}", flush=True)

    stages, components = combine(work, timings)
    unet = timings.get("unet")
    notes = [
        f"{len(work)} work items; attacks counted on a counting metric: " + ", ".join(
            f"{a} {c['grad']:g}+{c['plain']:g}" for a, c in calls.items()) + " (grad+plain passes per image)",
        ("assumes the grid does no repeated work (clean side once per metric x purifier x image; "
         "DiffPure+Unsharp reuses DiffPure's output): the goals table measures whether it does"),
    ]
    return Projection(profile=profile, device=device_name(dev) + f", batch {batch}",
                      stages=stages, components=components,
                      total_hours=float(stages["hours"].sum()),
                      total_tflop=float(stages["TFLOP"].sum()),
                      unet_calls=float(totals.get("unet", 0.0)),
                      unet_tflop=(unet.flops / 1e12) if unet is not None else math.nan,
                      notes=notes)


def combine(work: list[plan.Work], timings: dict[str, Timing]):
    """Hours and TFLOP per stage and per component: ``count x seconds per image`` summed
    (a component whose timing failed is NaN, and so is every sum it enters)."""
    import pandas as pd

    comp_rows = []
    for comp, count in plan.totals(work).items():
        t = timings[comp]
        comp_rows.append({"component": comp, "s/image": t.seconds, "count": count,
                          "hours": count * t.seconds / 3600,
                          "TFLOP": count * t.flops / 1e12 if not math.isnan(t.flops) else math.nan,
                          "note": t.note})
    components = pd.DataFrame(comp_rows).sort_values("hours", ascending=False,
                                                      ignore_index=True)
    stage_rows = []
    for stage, comps in plan.by_stage(work).items():
        secs = {c: n * timings[c].seconds for c, n in comps.items()}
        flops = sum(n * timings[c].flops for c, n in comps.items()
                    if not math.isnan(timings[c].flops))
        top = max(secs, key=lambda c: -1.0 if math.isnan(secs[c]) else secs[c])
        stage_rows.append({"stage": stage, "hours": sum(secs.values()) / 3600,
                           "TFLOP": flops / 1e12, "unet calls": comps.get("unet", 0.0),
                           "dominated by": top})
    return pd.DataFrame(stage_rows), components


def _timing_order(component: str) -> tuple:
    # cheap components first, the UNet last: a slow CPU shows progress early
    return (component == "unet", component)


def report(p: Projection, *, on_gpu: bool) -> str:
    """The projection as text: stages, components, total, FLOP floors."""
    import pandas as pd

    lines = [f"Projection of the {p.profile} profile on {p.device} (load average {load_average()})"]
    with pd.option_context("display.max_rows", 300, "display.width", 200,
                           "display.max_colwidth", 70, "display.float_format", "{:.4g}".format):
        lines.append(p.stages.to_string(index=False))
        lines.append("")
        lines.append(p.components.to_string(index=False))
    lines.append("")
    lines.append(f"TOTAL on this device: {p.total_hours:.4g} hours ({p.total_hours / 24:.3g} days)")
    issue_floor = p.floor_hours(p.unet_calls * ISSUE_UNET_TFLOP)
    ours_floor = p.floor_hours(p.unet_calls * p.unet_tflop)
    lines.append(f"UNet calls: {p.unet_calls:.4g}; FLOPs of one call (FlopCounterMode, 2 per "
                 f"multiply-add): {p.unet_tflop:.3g} TFLOP (the issue's estimate: "
                 f"{ISSUE_UNET_TFLOP} TFLOP)")
    lines.append(f"FLOP floor on one H200 at {FLOOR_EFFICIENCY:.0%} of {H200_BF16_FLOPS / 1e12:.0f} "
                 f"TFLOP/s bf16: UNet {ours_floor:.3g} h (with the issue's 1.1 TFLOP/call: "
                 f"{issue_floor:.3g} h); every counted network FLOP "
                 f"({p.total_tflop:.4g} TFLOP): {p.floor_hours(p.total_tflop):.3g} h")
    if not on_gpu:
        lines.append("GPU projection: still open (measured here on the CPU only; run "
                     "`make bench PROFILE=paper` on a GPU to fill it in)")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


__all__ = ["ComponentTimer", "Projection", "Timing", "project", "report", "unet_flops"]
