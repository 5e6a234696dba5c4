"""Every numbered notebook: committed without outputs, and executed end to end (smoke profile).

Results and figures go to a temporary folder, so a test run never touches the user's
data/results or figures/. Notebooks run in number order in one folder, as `make reproduce`
runs them, because later notebooks read earlier ones' results.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from iqalib.nbcheck import problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: the notebooks that read no other notebook's results (the Makefile's dependency lines say
#: which read which): under pytest-xdist they run as one chain beside the grid chain (03-09,
#: 12), each chain in number order on one worker
INDEPENDENT = {"00", "01", "02", "10", "11"}


def _chain(nb: Path):
    group = "notebooks-independent" if nb.name[:2] in INDEPENDENT else "notebooks-grid"
    return pytest.param(nb, marks=pytest.mark.xdist_group(group), id=nb.name)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found"
    assert NOTEBOOKS[0].name == "00_quickstart.ipynb"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean(nb):
    assert problems(nb) == []


def test_params_files_only_name_the_profile():
    """What a profile runs lives in iqalib.study; a params file that set sizes (N_IMAGES) would
    override every notebook's profile settings at once."""
    from iqalib import study

    files = {p.stem: p for p in (ROOT / "notebooks/params").glob("*.yaml")}
    assert set(files) == set(study.PROFILES)
    for name, path in files.items():
        params = yaml.safe_load(path.read_text())
        assert params["PROFILE"] == name
        assert set(params) <= {"PROFILE", "SEED", "DEVICE", "INTERACTIVE"}, path.name


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("workbook")
    env = {"IQALIB_RESULTS": str(root / "results"), "IQALIB_FIGURES": str(root / "figures"),
           "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("nb", [_chain(nb) for nb in NOTEBOOKS])
def test_runs_with_smoke_profile(nb, sandbox):
    import papermill as pm

    params = yaml.safe_load((ROOT / "notebooks/params/smoke.yaml").read_text())
    out = sandbox / "executed" / nb.name
    out.parent.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime_ns for p in (sandbox / "figures").glob("*.png")}
    pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name="python3",
                        cwd=str(nb.parent), progress_bar=False, log_output=False)
    written = [p for p in (sandbox / "figures").glob("*.png")
               if before.get(p) != p.stat().st_mtime_ns]
    assert written, f"{nb.name} wrote no figure"
    assert all(p.with_suffix(".svg").exists() for p in written), "every PNG needs its SVG"
