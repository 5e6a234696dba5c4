"""The resumable grid: rows, determinism, resume, failures, a killed run, Dask == local."""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import _grid_toys as toys
import numpy as np
import pandas as pd
import pytest
import torch

from iqalib.errors import MissingWeightsError
from iqalib.evaluate import grid, measures
from iqalib.evaluate.grid import COLUMNS, load_results, run_grid

TESTS = Path(__file__).resolve().parent
VOLATILE = ["time_attack_s", "time_defense_s", "git_sha"]


@pytest.fixture(autouse=True)
def fresh_prefix_memo():
    """Purifier outputs remembered in this process must not leak between tests that count
    purifier calls."""
    grid._MEMO = grid.PrefixMemo()
    yield


def _stable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=VOLATILE).reset_index(drop=True)


def _run(tmp, metric, defenses, photos, **kw):
    kw.setdefault("chunk_size", 2)
    return run_grid([metric], [toys.SignAttack], defenses, photos, out=tmp / "out",
                    cache=tmp / "adv", progress=False, **kw)


def test_rows_and_values(tmp_path, toy_metric, photos64):
    df = _run(tmp_path, toy_metric, ["none", toys.FlipDefense(), toys.CropDefense()], photos64)
    assert list(df.columns) == COLUMNS
    assert len(df) == 3 * 3  # images x defenses (one metric, one attack)
    assert set(df["defense_spec"]) == {"none", "toy-flip", "toy-crop"}
    x = photos64
    with torch.no_grad():
        clean = toy_metric(x).double().numpy()
    base = df[df["defense_spec"] == "none"].sort_values("image_id")
    np.testing.assert_allclose(base["score_clean"], clean, rtol=1e-6)
    # the baseline's purified scores are the raw ones
    np.testing.assert_array_equal(base["score_def_attacked"], base["score_attacked"])
    np.testing.assert_array_equal(base["score_def_clean"], base["score_clean"])
    # attacked scores are those of the cached PNGs, and the attack raised them
    adv = toys.SignAttack(toy_metric, seed=0)(x)
    with torch.no_grad():
        np.testing.assert_allclose(base["score_attacked"], toy_metric(adv).double().numpy(),
                                   rtol=1e-6)
    assert (base["score_attacked"].to_numpy() > clean).all()
    np.testing.assert_allclose(base["psnr"], measures.psnr(adv, x).numpy(), rtol=1e-6)
    flip = df[df["defense_spec"] == "toy-flip"].sort_values("image_id")
    np.testing.assert_allclose(flip["ssim"], measures.ssim(adv.flip(-2, -1), x).numpy(), rtol=1e-6)
    crop = df[df["defense_spec"] == "toy-crop"]
    assert crop["psnr"].notna().all() and (crop["psnr"] < base["psnr"].to_numpy()).all()
    assert (df["metric_range_lo"] == 0).all() and (df["metric_range_hi"] == 1).all()
    assert df["attack_params"].map(lambda s: '"seed": 0' in s).all()
    assert (tmp_path / "out" / "results.parquet").exists()
    pd.testing.assert_frame_equal(load_results(tmp_path / "out"), df)


def test_same_seed_same_table_and_resume(tmp_path, toy_metric, photos64):
    defenses = ["none", toys.NoiseDefense()]
    a = _run(tmp_path / "a", toy_metric, defenses, photos64)
    b = _run(tmp_path / "b", toy_metric, defenses, photos64)
    pd.testing.assert_frame_equal(_stable(a), _stable(b))
    c = _run(tmp_path / "c", toy_metric, defenses, photos64, seed=1)
    noisy = lambda d: d[d["defense_spec"] == "toy-noise"]["score_def_clean"].to_numpy()
    assert not np.allclose(noisy(a), noisy(c))  # the seed reaches stochastic purifiers
    # rerun in place: every unit is skipped, nothing is rewritten
    parts = sorted((tmp_path / "a" / "out" / "parts").glob("*.parquet"))
    assert len(parts) == 2  # 3 images in chunks of 2
    mtimes = [p.stat().st_mtime_ns for p in parts]
    again = _run(tmp_path / "a", toy_metric, defenses, photos64)
    assert [p.stat().st_mtime_ns for p in parts] == mtimes
    pd.testing.assert_frame_equal(again, a)
    # a different grid in the same folder is a different set of units
    more = _run(tmp_path / "a", toy_metric, defenses + [toys.FlipDefense()], photos64)
    assert len(more) == 9 and len(list((tmp_path / "a" / "out" / "parts").glob("*"))) == 4


def test_failures_are_recorded_then_retried(tmp_path, toy_metric, photos64):
    flag = tmp_path / "weights.ok"
    needs = toys.NeedsFileDefense(flag=str(flag))
    df = _run(tmp_path, toy_metric, ["none", needs, toys.BrokenDefense()], photos64)
    assert set(df["defense_spec"]) == {"none"}
    lines = df.attrs["failures"]
    assert "skipped: toy-broken (missing weights: make weights WEIGHTS=toy-broken) in 2 units" in lines
    assert any("toy-needs-file" in line for line in lines)
    # the weights arrive: a rerun computes only the failed purifiers
    flag.touch()
    parts_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "parts").glob("*")}
    df2 = _run(tmp_path, toy_metric, ["none", needs, toys.BrokenDefense()], photos64)
    assert set(df2["defense_spec"]) == {"none", "toy-needs-file"} and len(df2) == 6
    for name, mt in parts_before.items():
        assert (tmp_path / "out" / "parts" / name).stat().st_mtime_ns == mt
    assert [line for line in df2.attrs["failures"] if "toy-needs-file" in line] == []
    with pytest.raises(MissingWeightsError):
        _run(tmp_path / "strict", toy_metric, [toys.BrokenDefense()], photos64, strict=True)


def test_unknown_metric_is_skipped_not_fatal(tmp_path, toy_metric, photos64):
    df = run_grid([type(toy_metric), "no-such-metric-zzz"], [toys.SignAttack], ["none"], photos64[:2],
                  out=tmp_path / "out", cache=tmp_path / "adv", progress=False)
    assert set(df["metric"]) == {"toy-sharpness"} and len(df) == 2
    assert any(line.startswith("skipped: no-such-metric-zzz") for line in df.attrs["failures"])


def test_load_results_reads_parts_of_an_unfinished_run(tmp_path, toy_metric, photos64):
    df = _run(tmp_path, toy_metric, ["none"], photos64)
    os.unlink(tmp_path / "out" / "results.parquet")
    pd.testing.assert_frame_equal(load_results(tmp_path / "out"), df)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nothing")


_KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from conftest import ToySharpness, _photo_crops
    import _grid_toys as toys
    from iqalib.evaluate.grid import run_grid
    x = torch.cat([_photo_crops(64), _photo_crops(64).flip(-1)])
    attack = toys.CountingSignAttack(ToySharpness())  # counts in $TOY_ATTACK_LOG
    run_grid([ToySharpness()], [attack], ["none", toys.SlowDefense(delay={delay})], x,
             out={out!r}, cache={cache!r}, chunk_size=1, progress=False)
""")


def _script(tmp, name, delay):
    path = tmp / f"{name}.py"
    path.write_text(_KILL_SCRIPT.format(tests=str(TESTS), out=str(tmp / name / "out"),
                                        cache=str(tmp / name / "adv"), delay=delay))
    return path


@pytest.mark.slow
def test_killed_run_resumes_and_loses_nothing(tmp_path):
    script = _script(tmp_path, "killed", 0.3)
    parts = tmp_path / "killed" / "out" / "parts"
    env = {**os.environ, "TOY_ATTACK_LOG": str(tmp_path / "killed.log")}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while not list(parts.glob("*.parquet")) and time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait(30)
    done = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in parts.glob("*.parquet")}
    assert 1 <= len(done) < 6, "the run should have been killed between its first and last unit"
    assert not (tmp_path / "killed" / "out" / "results.parquet").exists()
    attacks_before = (tmp_path / "killed.log").read_text().splitlines()

    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, env=env, check=False)
    assert res.returncode == 0, res.stderr
    # finished units were not redone: same files, same bytes, and their images not re-attacked
    for name, (mtime, data) in done.items():
        assert (parts / name).stat().st_mtime_ns == mtime and (parts / name).read_bytes() == data
    attacks_total = (tmp_path / "killed.log").read_text().splitlines()
    assert len(attacks_total) - len(attacks_before) <= 6 - len(done)
    assert len(list(parts.glob("*.parquet"))) == 6
    assert not list((tmp_path / "killed").rglob("*.tmp"))

    # the resumed table equals an uninterrupted run's (the same script, run here in-process)
    from conftest import ToySharpness, _photo_crops

    x = torch.cat([_photo_crops(64), _photo_crops(64).flip(-1)])
    ref = run_grid([ToySharpness()], [toys.CountingSignAttack(ToySharpness())],
                   ["none", toys.SlowDefense(delay=0.0)], x, out=tmp_path / "whole" / "out",
                   cache=tmp_path / "whole" / "adv", chunk_size=1, progress=False)
    resumed = load_results(tmp_path / "killed" / "out")
    assert len(ref) == 12
    # the slow defense's name differs only by its delay parameter: compare everything else
    pd.testing.assert_frame_equal(_stable(resumed).drop(columns="defense_params"),
                                  _stable(ref).drop(columns="defense_params"))


@pytest.mark.slow
def test_dask_gives_the_same_scores_as_local(tmp_path, photos64):
    import cloudpickle
    import conftest
    from distributed import Client, LocalCluster

    # the toy classes live in test modules the workers cannot import: ship them by value
    cloudpickle.register_pickle_by_value(toys)
    cloudpickle.register_pickle_by_value(conftest)
    try:
        defenses = ["none", toys.FlipDefense(), toys.NoiseDefense()]
        local = run_grid([conftest.ToySharpness()], [toys.SignAttack], defenses, photos64,
                         out=tmp_path / "local", cache=tmp_path / "adv-local", chunk_size=1,
                         progress=False)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            # a scheduler address, as `--scheduler tcp://...` gives it
            dist = run_grid([conftest.ToySharpness()], [toys.SignAttack], defenses, photos64,
                            out=tmp_path / "dask", cache=tmp_path / "adv-dask", chunk_size=1,
                            progress=False, scheduler=cluster.scheduler_address)
            assert cluster.scheduler_address.startswith("tcp://")
            # the units ran in the two worker processes, which wrote the part files
            prefixes = client.run_on_scheduler(
                lambda dask_scheduler: {k: dict(p.state_counts)
                                        for k, p in dask_scheduler.task_prefixes.items()})
            # one task per chunk of each kind reached memory
            assert {k: prefixes[f"iqalib-{k}"]["memory"] for k in ("clean", "attack", "rows")} \
                == {"clean": 3, "attack": 3, "rows": 3}
            pids = client.run(os.getpid)
            assert len(pids) == 2 and os.getpid() not in pids.values()
    finally:
        cloudpickle.unregister_pickle_by_value(toys)
        cloudpickle.unregister_pickle_by_value(conftest)
    assert len(dist) == 9 and len(list((tmp_path / "dask" / "parts").glob("*"))) == 3
    pd.testing.assert_frame_equal(_stable(local), _stable(dist))


def test_units_are_picklable_specs(tmp_path, toy_metric, photos64):
    import pickle

    units = grid.plan_units([toy_metric, "brisque"], [toys.SignAttack], ["none", "jpeg:q30"],
                            photos64, out=tmp_path, chunk_size=2)
    kinds = [u.kind for u in units]
    # per chunk (2): one clean task for the light group; per metric (2) x chunk: attack + rows
    assert kinds.count("clean") == 2 and kinds.count("attack") == 4 and kinds.count("rows") == 4
    assert len({u.key for u in units}) == len(units)
    seen = set()
    for u in units:  # dependencies come first
        assert set(u.deps) <= seen
        seen.add(u.key)
    rows = [u for u in units if u.kind == "rows"]
    u = pickle.loads(pickle.dumps(rows[2]))
    assert u.metric.spec == "brisque" and u.defenses[1].spec == "jpeg:q30"
    assert tuple(u.images.ids) == rows[2].ids == ("img0000", "img0001")
    # the key changes with the seed, the images and the defenses
    other = grid.plan_units([toy_metric], [toys.SignAttack], ["none", "jpeg:q30"], photos64,
                            out=tmp_path, chunk_size=2, seed=1)
    assert {u.key for u in other}.isdisjoint(u.key for u in units)
    flipped = grid.plan_units([toy_metric], [toys.SignAttack], ["none", "jpeg:q30"],
                              photos64.flip(-1), out=tmp_path, chunk_size=2)
    assert {u.key for u in flipped}.isdisjoint(u.key for u in units)


def test_cli_runs_registry_specs(tmp_path, monkeypatch, capsys, photos64):
    from conftest import ToySharpness

    from iqalib.cli import main
    from iqalib.registry import ATTACKS, METRICS

    if "toy-grid-metric" not in METRICS:
        METRICS.add("toy-grid-metric", ToySharpness)
    if "toy-grid-sign" not in ATTACKS:
        ATTACKS.add("toy-grid-sign", toys.SignAttack)
    monkeypatch.setattr(grid, "_load_dataset_cached",
                        lambda name, n, size: grid.TensorImages(photos64[:n], name=name))
    rc = main(["run", "--metrics", "toy-grid-metric", "--attacks", "toy-grid-sign",
               "--defenses", "none", "--images", "mini", "--n", "2", "--out",
               str(tmp_path / "q"), "--cache", str(tmp_path / "adv")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 rows" not in text and "2 rows" in text and "SROCC" in text
    df = load_results(tmp_path / "q")
    assert set(df["dataset"]) == {"mini"} and set(df["metric"]) == {"toy-grid-metric"}
    assert main(["table", str(tmp_path / "q")]) == 0
    assert "SROCC" in capsys.readouterr().out


def test_two_runs_into_one_folder_keep_both_tables(tmp_path, toy_metric, photos64):
    """results.parquet is the folder's whole table: a second run_grid into the same folder
    must not drop the first one's rows (notebooks share run folders)."""
    kw = {"out": tmp_path / "run", "cache": tmp_path / "adv", "progress": False, "device": "cpu"}
    first = run_grid([toy_metric], [toys.SignAttack], ["none"], photos64[:2], **kw)
    second = run_grid([toy_metric], [toys.SignAttack], [toys.FlipDefense()], photos64[:2], **kw)
    both = load_results(tmp_path / "run")
    assert len(both) == len(first) + len(second) == 4
    assert set(both["defense"]) == set(first["defense"]) | set(second["defense"])


def test_a_resized_set_is_not_served_the_full_size_attacks(tmp_path, toy_metric):
    """The attack cache is keyed by content, which includes the resize: the same ids at 64 px
    are other images than at 96 px."""
    from iqalib.datasets import load_dataset

    kw = {"out": tmp_path / "run", "cache": tmp_path / "adv", "progress": False, "device": "cpu"}
    small = run_grid([toy_metric], [toys.SignAttack], ["none"], load_dataset("samples", n=1, size=64), **kw)
    large = run_grid([toy_metric], [toys.SignAttack], ["none"], load_dataset("samples", n=1, size=96), **kw)
    assert small["dataset"].iloc[0] == "samples@64x64" and large["dataset"].iloc[0] == "samples@96x96"
    pngs = sorted((tmp_path / "adv").rglob("*.png"))
    assert len(pngs) == 2, "both sizes must be attacked and cached separately"
    assert small["image_sha"].iloc[0] != large["image_sha"].iloc[0]


# -- no repeated work (issue 12) ---------------------------------------------------------------
def test_clean_side_is_computed_once_per_purifier_and_image(tmp_path, toy_metric,
                                                           toy_lower_metric, photos64):
    """purify(clean) is shared by every attack and metric: with 2 metrics x 2 attacks the clean
    images are purified once each (the grid used to purify them in every unit: 4 times)."""
    from iqalib.fingerprint import tensor_digest

    toys.CountingDefense.seen.clear()
    attacks = [toys.SignAttack, toys.SignAttack(toy_metric, eps=8 / 255)]
    df = run_grid([toy_metric, toy_lower_metric], attacks, ["none", toys.CountingDefense()],
                  photos64, out=tmp_path / "out", cache=tmp_path / "adv", chunk_size=2,
                  progress=False)
    assert len(df) == 2 * 2 * 2 * 3  # metrics x attacks x defenses x images
    seen = collections.Counter(toys.CountingDefense.seen)
    clean = [tensor_digest(img) for img in photos64]
    assert [seen[c] for c in clean] == [1, 1, 1]
    # and every attacked image once (the two metrics' attacks happen to coincide: the lower-is-
    # better toy is the negated one, and equal inputs share the purifier's output)
    assert set(seen.values()) == {1} and len(seen) <= 3 + 2 * 2 * 3
    # the shared clean side is the one each row reports
    mine = df[df["defense_spec"] == "toy-counting"]
    for metric in (toy_metric, toy_lower_metric):
        rows = mine[mine["metric"] == metric.name].sort_values(["attack_params", "image_id"])
        with torch.no_grad():
            expect = metric(photos64.flip(-1)).double().numpy()
        np.testing.assert_allclose(rows["score_def_clean"], np.tile(expect, 2), rtol=1e-6)


def test_a_composition_reuses_its_prefix(tmp_path, toy_metric, photos64):
    """heavy+flip after heavy (same images, same seed) reuses heavy's output: the network runs
    as often as for heavy alone."""
    from iqalib.defenses.base import Compose

    kw = {"chunk_size": 3, "progress": False, "cache": tmp_path / "adv"}
    toys.HeavyCountingDefense.calls.clear()
    alone = run_grid([toy_metric], [toys.SignAttack], [toys.HeavyCountingDefense()], photos64,
                     out=tmp_path / "alone", **kw)
    calls_alone = sum(toys.HeavyCountingDefense.calls)
    toys.HeavyCountingDefense.calls.clear()
    grid._MEMO = grid.PrefixMemo()  # nothing remembered from the first run
    both = run_grid([toy_metric], [toys.SignAttack],
                    [toys.HeavyCountingDefense(),
                     Compose([toys.HeavyCountingDefense(), toys.FlipDefense()])], photos64,
                    out=tmp_path / "both", **kw)
    assert calls_alone == 6  # 3 clean + 3 attacked images
    assert sum(toys.HeavyCountingDefense.calls) == calls_alone
    heavy = both[both["defense"] == "toy-heavy"].sort_values("image_id")
    composed = both[both["defense"] == "toy-heavy+toy-flip"].sort_values("image_id")
    pd.testing.assert_frame_equal(_stable(heavy), _stable(alone.sort_values("image_id")))
    blur = toys.HeavyCountingDefense()
    with torch.no_grad():
        adv = toys.SignAttack(toy_metric)(photos64)
        expect = toy_metric(blur(adv).flip(-2, -1)).double().numpy()
    np.testing.assert_allclose(composed["score_def_attacked"], expect, rtol=1e-6)
    # the composition is charged the prefix's time too
    assert (composed["time_defense_s"].to_numpy() >= heavy["time_defense_s"].to_numpy()).all()


def test_a_stochastic_prefix_is_reused_with_its_generator_state(tmp_path, toy_metric, photos64):
    from iqalib.defenses.base import Compose

    noise, composed = toys.NoiseDefense(), Compose([toys.NoiseDefense(), toys.CropDefense()])
    df = _run(tmp_path, toy_metric, [noise, composed], photos64)
    n = df[df["defense"] == "toy-noise"].sort_values("image_id")
    c = df[df["defense"] == "toy-noise+toy-crop"].sort_values("image_id")
    # crop(noise(x)) computed by hand with the grid's per-chunk generators (chunks of 2)
    x = photos64
    expect = []
    for chunk in (x[:2], x[2:]):
        y = toys.NoiseDefense()(chunk, generator=torch.Generator().manual_seed(0))
        expect.append(toy_metric(toys.CropDefense()(y)).detach().double())
    np.testing.assert_allclose(c["score_def_clean"], torch.cat(expect).numpy(), rtol=1e-6)
    assert not np.allclose(n["score_def_clean"], c["score_def_clean"])


# -- no silent wrong result (issue 14) ---------------------------------------------------------
def test_two_tensors_with_the_same_ids_do_not_share_rows(tmp_path, toy_metric, photos64):
    kw = {"out": tmp_path / "out", "cache": tmp_path / "adv", "progress": False}
    run_grid([toy_metric], [toys.SignAttack], ["none"], photos64[:2], **kw)
    other = photos64[1:3]  # ids img0000, img0001 again, other pixels
    df = run_grid([toy_metric], [toys.SignAttack], ["none"], other, **kw).sort_values("image_id")
    with torch.no_grad():
        np.testing.assert_allclose(df["score_clean"], toy_metric(other).double().numpy(),
                                   rtol=1e-6)
        adv = toys.SignAttack(toy_metric)(other)
        np.testing.assert_allclose(df["score_attacked"], toy_metric(adv).double().numpy(),
                                   rtol=1e-6)
    # the folder's table keeps both images that were called img0000
    assert load_results(tmp_path / "out")["image_id"].value_counts()["img0000"] == 2


def _png_folder(folder: Path, images: torch.Tensor, names) -> Path:
    from iqalib.images import save_image

    folder.mkdir(parents=True)
    for name, img in zip(names, images):
        save_image(img, folder / f"{name}.png")
    return folder


def test_two_folders_that_share_a_name_do_not_share_attacked_images(tmp_path, toy_metric,
                                                                    photos64):
    from iqalib.datasets import load_dataset

    a = _png_folder(tmp_path / "a" / "imgs", photos64[:2], ["p", "q"])
    b = _png_folder(tmp_path / "b" / "imgs", photos64[[2, 0]].flip(-1), ["p", "q"])
    kw = {"cache": tmp_path / "adv", "progress": False}
    run_grid([toy_metric], [toys.SignAttack], ["none"], load_dataset(a), out=tmp_path / "ra", **kw)
    df = run_grid([toy_metric], [toys.SignAttack], ["none"], load_dataset(b), out=tmp_path / "rb",
                  **kw).sort_values("image_id")
    clean = load_dataset(b).batch(["p", "q"])
    adv = toys.SignAttack(toy_metric)(clean)
    np.testing.assert_allclose(df["psnr"], measures.psnr(adv, clean).numpy(), rtol=1e-6)
    assert (df["psnr"] > 30).all()  # reusing the other folder's images gave 7-9 dB


def test_editing_a_component_recomputes_its_rows(tmp_path, toy_metric, photos64, monkeypatch):
    """A rerun after the user edits their purifier's code gives the new code's rows."""
    import importlib

    module = tmp_path / "mods" / "user_purifier.py"
    module.parent.mkdir()
    source = textwrap.dedent("""
        from iqalib.defenses.base import Defense

        class Darken(Defense):
            name = "user-darken"

            def purify(self, x, generator):
                return x * FACTOR
    """)
    module.write_text(source.replace("FACTOR", "0.5"))
    monkeypatch.syspath_prepend(str(module.parent))
    import user_purifier

    kw = {"out": tmp_path / "out", "cache": tmp_path / "adv", "progress": False}
    first = run_grid([toy_metric], [toys.SignAttack], [user_purifier.Darken()], photos64[:1], **kw)
    module.write_text(source.replace("FACTOR", "0.9"))
    os.utime(module, ns=(time.time_ns() + 10**9,) * 2)  # a later mtime, even on coarse clocks
    # edited on disk, not reloaded (a notebook): the old code still runs, and its rows must not
    # be filed under the new code's key
    stale = run_grid([toy_metric], [toys.SignAttack], [user_purifier.Darken()], photos64[:1], **kw)
    np.testing.assert_allclose(stale["score_def_clean"], first["score_def_clean"])
    importlib.reload(user_purifier)
    second = run_grid([toy_metric], [toys.SignAttack], [user_purifier.Darken()], photos64[:1], **kw)
    with torch.no_grad():
        expect = toy_metric(photos64[:1] * 0.9).double().numpy()
    np.testing.assert_allclose(second["score_def_clean"], expect, rtol=1e-6)
    assert not np.allclose(first["score_def_clean"], second["score_def_clean"])
    # the folder's table holds the latest rows of each row key
    pd.testing.assert_frame_equal(load_results(tmp_path / "out"), second)


def test_default_attack_cache_lives_beside_an_outside_run_folder(tmp_path, toy_metric, photos64):
    units = grid.plan_units([toy_metric], [toys.SignAttack], ["none"], photos64,
                            out=tmp_path / "run")
    assert {u.cache_root for u in units} == {str(tmp_path / "run" / "adv")}


def test_a_non_finite_score_is_a_failure_naming_the_image(tmp_path, photos64):
    x = torch.cat([photos64[:2], torch.full((1, 3, 64, 64), 0.5)])  # img0002 is flat
    df = run_grid([toys.NanOnFlatMetric()], [toys.SignAttack], ["none", toys.FlipDefense()], x,
                  out=tmp_path / "out", cache=tmp_path / "adv", chunk_size=3, progress=False)
    assert set(df["image_id"]) == {"img0000", "img0001"} and len(df) == 4
    assert np.isfinite(df[["score_clean", "score_attacked", "score_def_clean",
                           "score_def_attacked"]].to_numpy()).all()
    assert any(line.startswith("skipped: image img0002 (non-finite") for line in df.attrs["failures"])
    from iqalib.evaluate import store

    why = store.skipped(tmp_path)
    assert (why["what"] == "image img0002").any()


def test_a_bad_image_costs_that_image_only(tmp_path, toy_metric, photos64):
    from iqalib.datasets import load_dataset

    folder = _png_folder(tmp_path / "imgs", photos64, ["a", "b", "c"])
    png = folder / "b.png"
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) * 2 // 3])  # header intact
    df = run_grid([toy_metric], [toys.SignAttack], ["none", toys.FlipDefense()],
                  load_dataset(folder), out=tmp_path / "out", cache=tmp_path / "adv",
                  chunk_size=3, progress=False)
    assert sorted(set(df["image_id"])) == ["a", "c"] and len(df) == 4
    assert any(line.startswith("skipped: image b ") for line in df.attrs["failures"])
    # a NaN image in a tensor chunk: its chunk mates get their rows
    x = photos64.clone()
    x[1, :, 3, 3] = float("nan")
    df = run_grid([toy_metric], [toys.SignAttack], ["none"], x, out=tmp_path / "out2",
                  cache=tmp_path / "adv", chunk_size=3, progress=False)
    assert sorted(df["image_id"]) == ["img0000", "img0002"]
    assert any("img0001" in line and "NaN" in line for line in df.attrs["failures"])


def test_a_failure_of_an_older_version_of_a_task_is_dropped(tmp_path, toy_metric, photos64):
    """When a purifier that failed is fixed (other code: another key), its old failure record
    must not keep reporting it as skipped."""
    from iqalib.evaluate import store

    kw = {"out": tmp_path / "out", "cache": tmp_path / "adv", "progress": False, "chunk_size": 3}
    run_grid([toy_metric], [toys.SignAttack], [toys.BrokenDefense()], photos64, **kw)
    assert (store.skipped(tmp_path)["what"] == "toy-broken").any()
    fixed = type("BrokenDefense", (toys.FlipDefense,), {"name": "toy-broken"})  # same label
    df = run_grid([toy_metric], [toys.SignAttack], [fixed()], photos64, **kw)
    assert len(df) == 3 and store.skipped(tmp_path).empty
