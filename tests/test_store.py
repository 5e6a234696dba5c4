"""The results store: one tidy table per run folder, collected across folders, with what was
skipped and why; rows are keyed by the image's content too."""
from __future__ import annotations

import _grid_toys as toys
import pandas as pd
import pytest

from iqalib.evaluate import store
from iqalib.evaluate.grid import run_grid


@pytest.fixture
def two_runs(tmp_path, toy_metric, photos64):
    kw = {"cache": tmp_path / "adv", "progress": False, "chunk_size": 2}
    run_grid([toy_metric], [toys.SignAttack], ["none", toys.FlipDefense()], photos64,
             out=tmp_path / "root" / "04_purifiers", **kw)
    run_grid([toy_metric], [toys.SignAttack], ["none", toys.CropDefense(), toys.BrokenDefense()],
             photos64,
             out=tmp_path / "root" / "05_more" / "sub", **kw)
    return tmp_path / "root"


def test_collect_reads_every_run_folder_once(two_runs):
    df = store.collect(two_runs)
    assert list(df.columns) == [*store.COLUMNS, "run"]
    assert set(df["run"]) == {"04_purifiers", "05_more/sub"}
    # the undefended rows both folders computed are kept once, from the first folder
    base = df[df["defense"] == "identity"]
    assert len(base) == 3 and set(base["run"]) == {"04_purifiers"}
    assert len(df) == 9 and not df.duplicated(subset=store.ROW_KEY).any()
    only = store.collect(two_runs, runs=["05_more"])
    assert set(only["run"]) == {"05_more/sub"} and len(only) == 6


def test_skipped_says_what_and_why(two_runs):
    sk = store.skipped(two_runs)
    assert list(sk.columns) == store.SKIPPED_COLUMNS
    row = sk[sk["what"] == "toy-broken"].iloc[0]
    assert row["run"] == "05_more/sub" and "make weights WEIGHTS=toy-broken" in row["why"]
    assert not sk.duplicated().any()


def test_load_results_of_a_table_written_before_content_keys(tmp_path, two_runs):
    df = store.load_results(two_runs / "04_purifiers").drop(columns="image_sha")
    legacy = tmp_path / "legacy"
    (legacy / "parts").mkdir(parents=True)
    df.to_parquet(legacy / "results.parquet", index=False)
    back = store.load_results(legacy)
    assert (back["image_sha"] == "").all() and len(back) == len(df)


def test_write_part_checks_its_columns(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        store.write_part(tmp_path, "k", pd.DataFrame({"image_id": ["a"]}))
    store.write_part(tmp_path, "k", store.empty_table(), retry="r1")
    assert store.part_path(tmp_path, "k", "r1").exists()
    assert store.key_of_part(store.part_path(tmp_path, "k", "r1")) == "k"
