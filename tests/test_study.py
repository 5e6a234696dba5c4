"""iqalib.study: the profiles name only registered components and follow the study; every
notebook has knobs for every profile; run folders are read back through the results store."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import iqalib
from iqalib import study
from iqalib.evaluate.grid import run_grid
from iqalib.imagesets import TensorImages


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("IQALIB_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", study.PROFILES)
def test_settings_name_only_registered_components(profile):
    defenses = set(iqalib.list_defenses(presets=True))
    metrics, attacks = set(iqalib.list_metrics()), set(iqalib.list_attacks())
    for nb in study.NOTEBOOK_SETTINGS:
        s = study.settings(profile, nb)
        assert set(s["metrics"]) <= metrics and set(s["metrics"]) == set(s["attacks"])
        assert set(s["all_attacks"]) <= attacks
        assert set(s["purifiers"]) <= defenses and set(s["diffusion"]) <= defenses
    assert set(study.settings(profile, "01_data_and_metrics")["score_metrics"]) <= metrics
    a = study.settings(profile, "09_adaptive_attacks")["adaptive"]
    assert a["metric"] in metrics and a["attack"] in attacks
    assert set(a.get("fallback") or a.get("purifiers")) <= defenses
    sw = study.settings(profile, "05_diffpure")["sweep"]
    assert sw["metric"] in metrics and sw["attack"] in attacks
    assert {f"{p}:t{t}" for p in study.DIFFUSION_PURIFIERS for t in sw["t"]} <= defenses
    assert set(study.settings(profile, "10_interactive")["compare"]["defenses"]) <= defenses


@pytest.mark.parametrize("profile", study.PROFILES)
def test_batch_size_is_one_the_run_loop_takes(profile, photos64):
    from iqalib.evaluate.run import resolve_batch_size

    assert resolve_batch_size(study.settings(profile)["batch_size"], photos64, None,
                              default=4) >= 1


def test_every_notebook_section_covers_every_profile():
    for nb, section in study.NOTEBOOK_SETTINGS.items():
        assert set(section) == set(study.PROFILES), nb


def test_profiles_follow_the_study():
    smoke, quick, paper, rehearsal = (study.settings(p) for p in study.PROFILES)
    assert smoke["n_images"] == 2 and smoke["dataset"] == "samples"
    assert quick["n_images"] == 6 and quick["dataset"] == "samples"
    assert paper["dataset"] == "nips17" and paper["n_images"] == 1000
    assert paper["metrics"] == ["linearity", "metaiqa", "spaq"]
    assert all(len(set(paper["attacks"][m])) == 10 for m in paper["metrics"])
    # the sixteen: 04's, 05's DiffPure pair and 06's FCN filter (trained there, as the authors did)
    assert study.settings("paper", "06_fcn_filter")["grid_filter"] == "trained"
    assert sorted(paper["purifiers"] + study.DIFFUSION_PURIFIERS + ["fcn-filter"]) == sorted(
        study.PAPER_PURIFIERS)
    # the MSU group's DiffPure default, t = 5 (adversarial-defenses-for-iqa, diffpure/run.py)
    assert paper["diffusion"] == ["diffpure:t5", "diffpure-unsharp:t5"]
    assert quick["attacks"]["effnet-iqa"] == study.PAPER_ATTACKS
    # the diffusion purifiers are notebook 05's grid, not 04's
    assert not set(quick["purifiers"]) & set(study.DIFFUSION_PURIFIERS)
    # the rehearsal is the paper's study on one image, each attack once on a paper metric
    for key in ("dataset", "metrics", "purifiers"):
        assert rehearsal[key] == paper[key]
    assert rehearsal["n_images"] == 1
    assert sorted(rehearsal["all_attacks"]) == sorted(study.PAPER_ATTACKS)
    assert sum(len(a) for a in rehearsal["attacks"].values()) == len(study.PAPER_ATTACKS)
    assert all(rehearsal["attacks"][m] for m in rehearsal["metrics"])
    # notebook 06 trains on Linearity x AdvCF (the authors' pair) and needs a held-out image
    nb06 = study.settings("rehearsal", "06_fcn_filter")
    assert "advcf" in rehearsal["attacks"][nb06["train"]["metric"]] and nb06["n_images"] == 2
    assert study.settings("paper", "05_diffpure")["sweep"]["t"][0] == study.PAPER_DIFFPURE_T


def test_settings_is_a_copy_and_unknown_names_suggest():
    s = study.settings("quick")
    s["metrics"].append("x")
    assert "x" not in study.settings("quick")["metrics"]
    with pytest.raises(ValueError, match="Did you mean 'quick'"):
        study.settings("quik")
    with pytest.raises(ValueError, match="Did you mean '05_diffpure'"):
        study.settings("quick", "05_difpure")


def test_notebook_knobs_override_the_profile():
    # the quickstart runs on the full-size offline sample set in every profile
    s = study.settings("smoke", "00_quickstart")
    assert s["dataset"] == "samples" and s["size"] is None
    assert study.settings("smoke")["size"] == 128


def test_smoke_images_are_small_and_named_apart():
    small, full = study.images("smoke"), study.images("quick", n=2)
    assert small.batch(small.ids).shape == (2, 3, 128, 128)
    assert full.batch(full.ids).shape[-2:] == (192, 192)
    from iqalib.attacks.cache import dataset_label

    # different labels keep the attack cache from handing 128 px images to a 192 px run
    assert dataset_label(small) != dataset_label(full) and small.ids == full.ids


# --- run folders --------------------------------------------------------------------------------
def test_results_table_reads_the_grid_runs_only(results, toy_metric, photos64):
    imgs = TensorImages(photos64[:, :, :48, :48], ["a", "b", "c"], name="toy")
    kw = {"seed": 0, "progress": False, "cache": results / "adv"}
    r3 = run_grid([toy_metric], ["ifgsm"], ["none", "flip"], imgs,
                  out=study.run_folder("quick", "03_attacks") / "toy", **kw)
    r4 = run_grid([toy_metric], ["ifgsm"], ["none", "jpeg"], imgs,
                  out=study.run_folder("quick", "04_baseline_purifiers"), **kw)
    # a run on a subset (the quickstart) is collected, but is not part of the results tables
    run_grid([toy_metric], ["mifgsm"], ["none"], imgs,
             out=study.run_folder("quick", "00_quickstart"), **kw)
    every = study.collect("quick")
    assert set(every.run) == {"00_quickstart", "03_attacks/toy", "04_baseline_purifiers"}
    got = study.results_table("quick")
    want = pd.concat([r3, r4]).drop_duplicates(subset=["attack", "defense", "image_id"])
    assert len(got) == len(want) == 3 * 3 and set(got.attack) == {"ifgsm"}
    merged = got.merge(want, on=["attack", "defense", "image_id"], suffixes=("", "_want"))
    np.testing.assert_allclose(merged.score_def_attacked, merged.score_def_attacked_want)
    assert study.collect("smoke").empty  # another profile's folder is separate


def test_skipped_names_the_make_weights_target(results, toy_metric, photos64):
    imgs = TensorImages(photos64[:2], name="toy")
    df = run_grid([toy_metric], ["ifgsm"], ["none", "mprnet"], imgs, progress=False,
                  out=study.run_folder("quick", "04_baseline_purifiers"),
                  cache=results / "adv")
    assert set(df.defense) == {"identity"}
    sk = study.skipped("quick", "04_")
    assert list(sk.what) == ["mprnet"]
    assert "make weights WEIGHTS=mprnet" in sk.why.iloc[0]
    assert study.skipped("quick", "03_").empty


def test_save_table_writes_under_the_profile(results):
    path = study.save_table(pd.DataFrame({"a": [1]}), "smoke", "x", index=False)
    assert path == results / "smoke" / "tables" / "x.csv"
    assert pd.read_csv(path).a.tolist() == [1]
