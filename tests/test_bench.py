"""The benchmark's own machinery: timers, counters, the paper run's counted work, the
projection's arithmetic. Fast and CPU-only; the measurements themselves are `make bench`."""
from __future__ import annotations

import math
import time

import pytest
import torch

from iqalib import study
from iqalib.bench import plan, projection
from iqalib.bench.counting import CountingMetric, attack_network_calls, count_purifier_calls
from iqalib.bench.timing import time_pair, timeit


# -- Dask settings ----------------------------------------------------------------------------
def test_quiet_worker_settings_name_real_dask_keys():
    # dask.config.set takes any key: a misspelt one would leave the default running, silently
    import dask
    import distributed  # noqa: F401 - loads distributed's defaults into dask.config

    from iqalib.bench.ratios import QUIET_WORKERS

    for key, value in QUIET_WORKERS.items():
        default = dask.config.get(key)  # KeyError for a key Dask does not know
        assert type(default) is type(value) and default != value, key


# -- timing ---------------------------------------------------------------------------------
def test_time_pair_alternates_and_warms_up():
    calls = []
    time_pair(lambda: calls.append("a"), lambda: calls.append("b"), repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4


def test_time_pair_ratio_is_the_median_of_the_paired_ratios(monkeypatch):
    from iqalib.bench import timing

    # a slow spell in repeat 2 hits both sides; repeat 3's reference alone is slow
    clock = iter([1.0, 1.0, 4.0, 4.0, 1.0, 2.0])
    monkeypatch.setattr(timing, "_timed", lambda fn, device: next(clock))
    pair = timing.time_pair(lambda: None, lambda: None, repeats=3, warmup=0)
    assert (pair.ours, pair.reference) == (1.0, 2.0)  # the medians: their ratio would be 0.5
    assert (pair.ratio, pair.low, pair.high, pair.repeats) == (1.0, 0.5, 1.0, 3)
    assert pair.spread() == "repeats 0.5-1, n=3"


def test_budgets_stop_repeating_early():
    calls = []
    timeit(lambda: calls.append(1), repeats=50, warmup=0, budget_s=0.0)
    assert len(calls) == 1
    calls = []
    time_pair(lambda: calls.append("a"), lambda: calls.append("b"), repeats=50, warmup=0,
              budget_s=0.0)
    assert calls == ["a", "b"]


def test_a_slow_warm_up_plans_fewer_repeats():
    from iqalib.bench.timing import repeats_within

    assert repeats_within(None, 100.0, 5) == 5
    assert repeats_within(20.0, 0.0, 5) == 5       # no warm-up to go by
    assert repeats_within(20.0, 6.0, 5) == 3
    assert repeats_within(20.0, 12.0, 5) == 1      # half the budget or more: one repeat
    assert repeats_within(20.0, 300.0, 5) == 1     # never none
    assert repeats_within(20.0, 300.0, 5, min_repeats=3) == 3  # a ratio rests on three
    assert repeats_within(20.0, 300.0, 2, min_repeats=3) == 2  # and never more than asked
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.03)

    timeit(slow, repeats=50, warmup=1, budget_s=0.05)
    assert len(calls) == 2  # the warm-up, then the one repeat that fits
    calls.clear()
    time_pair(slow, slow, repeats=50, warmup=1, budget_s=0.1)
    assert len(calls) == 4
    calls.clear()
    time_pair(slow, slow, repeats=50, warmup=1, budget_s=0.01, min_repeats=3)
    assert len(calls) == 2 + 2 * 3  # the budget is spent, the floor still holds


# -- counting -------------------------------------------------------------------------------
def test_purifier_counter_sees_repeats_and_the_parts_of_a_composition():
    from iqalib.defenses import create_defense

    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    flip, both = create_defense("flip"), create_defense("flip+jpeg")
    with count_purifier_calls() as calls:
        flip(x)
        flip(x)          # the same two images again: repeated work
        both(x)          # flip inside the composition: repeated again; jpeg sees new inputs
    rows = {r["purifier"]: r for r in calls.table()}
    assert set(rows) == {"flip", "jpeg"}  # the composition is counted through its parts
    assert (rows["flip"]["images"], rows["flip"]["distinct"]) == (6, 2)
    assert (rows["jpeg"]["images"], rows["jpeg"]["distinct"]) == (2, 2)
    assert calls.ratio == pytest.approx(8 / 4)
    flip(x)  # after the block the counter is detached
    assert rows["flip"]["images"] == calls.table()[0]["images"] == 6


def test_counting_metric_counts_passes_with_and_without_gradient():
    m = CountingMetric()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        m(x)
    xi = x.clone().requires_grad_(True)
    m(xi).sum().backward()
    assert (m.plain_calls, m.grad_calls) == (3, 3)


@pytest.mark.parametrize("name, steps", [("ifgsm", 7), ("korhonen", 3), ("advcf", 4)])
def test_attack_network_calls_follow_the_attack_settings(name, steps):
    import iqalib.attacks  # noqa: F401  (registers the attacks)
    from iqalib.registry import ATTACKS

    calls = attack_network_calls(lambda m: ATTACKS.create(name, metric=m, steps=steps))
    assert calls == {"grad": steps, "plain": 0}


# -- the counted paper run ------------------------------------------------------------------
def _fake_info(specs):
    """PurifierInfo without building anything: DiffPure's t read from the spec (default 5)."""
    out = {}
    for spec in specs:
        head = spec.split("+")[0]
        if head.startswith("diffpure"):
            t = int(head.split(":t")[1]) if ":t" in head else 5
            after = ("unsharp",) if ("unsharp" in spec) else ()
            out[spec] = plan.PurifierInfo(nfe=t, diffpure_key=f"t{t}", after=after,
                                          stochastic=True, differentiable=False)
        else:
            out[spec] = plan.PurifierInfo(stochastic=spec in ("rotate", "random-crop"),
                                          differentiable=spec != "jpeg")
    return out


@pytest.fixture(scope="module")
def paper_work():
    need = plan.specs_needed("paper")
    calls = {a: {"grad": 10.0, "plain": 1.0} for a in need["attacks"]}
    return plan.workload("paper", calls, _fake_info(need["purifiers"]))


def test_diffpure_shares_its_output_with_diffpure_unsharp():
    info = _fake_info(["diffpure:t10", "diffpure-unsharp:t10", "jpeg"])
    work = plan.purify_work("s", ["diffpure:t10", "diffpure-unsharp:t10", "jpeg"], 3, info)
    assert plan.totals(work) == {"unet": 30, "sampler_step": 30, "diffpure_io": 3,
                                 "purify:unsharp": 3, "purify:jpeg": 3}


def test_paper_t_sweep_counts_every_unet_call(paper_work):
    sweep = study.settings("paper", "05_diffpure")["sweep"]
    stages = plan.by_stage(paper_work)
    (name,) = [s for s in stages if s.startswith("05 DiffPure t sweep")]
    # clean + attacked images, sum of t network calls each; Unsharp reuses DiffPure's output
    assert stages[name]["unet"] == sweep["n_images"] * 2 * sum(sweep["t"])
    assert stages[name]["purify:unsharp"] == sweep["n_images"] * 2 * len(sweep["t"])


def test_paper_clean_images_run_the_sampler_once_for_both_diffpure_rows(paper_work):
    # notebook 08's clean_fidelity purifies side by side: DiffPure+Unsharp reuses DiffPure
    s = study.settings("paper", "08_clean_images")
    stage = plan.by_stage(paper_work)["08 clean images"]
    assert stage["unet"] == s["n_images"] * s["diffusion_t"]
    # the unsharp step after DiffPure, and the plain unsharp purifier when 04 runs it
    assert stage["purify:unsharp"] == s["n_images"] * (1 + ("unsharp" in s["purifiers"]))


def test_paper_grid_purifies_the_clean_side_once_per_metric(paper_work):
    s = study.settings("paper")
    stage = plan.by_stage(paper_work)["04 baseline purifiers"]
    per_metric = [s["n_images"] * (1 + len(s["attacks"][m])) for m in s["metrics"]]
    for p in s["purifiers"]:
        assert stage[f"purify:{p}"] == sum(per_metric)


def test_paper_attacks_count_metric_passes(paper_work):
    s = study.settings("paper")
    for m in s["metrics"]:
        stage = plan.by_stage(paper_work)[f"03 attacks on {m}"]
        assert stage[f"metric_grad:{m}"] == s["n_images"] * 10 * len(s["attacks"][m])
        assert stage[f"metric_fwd:{m}"] == s["n_images"] * 1 * len(s["attacks"][m])


# -- the projection's arithmetic --------------------------------------------------------------
def test_combine_sums_count_times_seconds():
    work = [plan.Work("a", "unet", 10), plan.Work("a", "purify:jpeg", 100),
            plan.Work("b", "unet", 5)]
    timings = {"unet": projection.Timing("unet", 36.0, 2e12),
               "purify:jpeg": projection.Timing("purify:jpeg", 0.36)}
    stages, comps = projection.combine(work, timings)
    hours = dict(zip(stages["stage"], stages["hours"]))
    assert hours == pytest.approx({"a": (360 + 36) / 3600, "b": 180 / 3600})
    assert dict(zip(stages["stage"], stages["dominated by"])) == {"a": "unet", "b": "unet"}
    tflop = dict(zip(comps["component"], comps["TFLOP"]))
    assert tflop["unet"] == pytest.approx(30.0)
    assert math.isnan(tflop["purify:jpeg"])  # no network: not counted


def test_floor_is_flops_over_half_the_h200_peak():
    p = projection.Projection("paper", "cpu", None, None, 0.0, 0.0, 1e6, 1.1, [])
    # 1.1 TFLOP x 1e6 calls at 395 TFLOP/s
    assert p.floor_hours(1.1e6) == pytest.approx(1.1e18 / 395e12 / 3600)


def test_component_timer_runs_on_the_cpu():
    timer = projection.ComponentTimer(torch.device("cpu"), batch=1, size=32, repeats=1)
    t = timer.time("purify:flip")
    assert t.seconds > 0 and t.batch == 1 and "timed in" in t.note
    t = timer.time("sampler_step")
    assert t.seconds >= 0


def test_paper_fcn_filter_trains_on_the_authors_split(paper_work):
    from iqalib.training.fcn_filter import authors_split

    s = study.settings("paper", "06_fcn_filter")
    train, held_out = authors_split([f"{i:04d}" for i in range(s["n_images"])])
    stage = plan.by_stage(paper_work)["06 FCN filter"]
    assert stage["fcn_train"] == s["train"]["epochs"] * len(train)
    # model selection every epoch, then the results grid on the held-out images
    grid = sum(len(held_out) * (1 + len(s["attacks"][m])) for m in s["metrics"])
    assert stage["purify:fcn-filter"] == s["train"]["epochs"] * len(held_out) + grid
