"""Every numbered notebook: committed without outputs, and executed end to end (smoke profile).

Results and figures go to a temporary folder, so a test run never touches the user's
data/results or figures/. A notebook that reads other notebooks' results
(:data:`iqalib.study.NOTEBOOK_INPUTS`) runs in one folder after them, as `make reproduce` runs
it; under pytest-xdist the notebooks run as two chains (two test classes, `--dist loadscope`),
the grid chain on one worker beside the independent notebooks on the other. A notebook test run
on its own (``pytest -k 12_``) executes its inputs first.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from iqalib import study
from iqalib.nbcheck import problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BY_STEM = {nb.stem: nb for nb in NOTEBOOKS}
#: the notebooks that read or are read by another one, and those that stand alone
_LINKED = set(study.NOTEBOOK_INPUTS) | {i for ins in study.NOTEBOOK_INPUTS.values() for i in ins}
GRID_CHAIN = [nb for nb in NOTEBOOKS if nb.stem in _LINKED]
INDEPENDENT = [nb for nb in NOTEBOOKS if nb.stem not in _LINKED]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found"
    assert NOTEBOOKS[0].name == "00_quickstart.ipynb"
    for nb, inputs in study.NOTEBOOK_INPUTS.items():
        assert nb in BY_STEM and all(i in BY_STEM for i in inputs), (nb, inputs)
        assert all(i < nb for i in inputs), f"{nb} reads a later notebook"


def _makefile_inputs() -> dict[str, set[str]]:
    """The Makefile's dependency lines between executed notebooks, as {notebook: inputs}."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    variables = {m[1]: m[2] for m in re.finditer(r"^(\w+)\s*:=\s*(.*)$", text, re.MULTILINE)}
    deps: dict[str, set[str]] = {}
    for targets, prereqs in re.findall(r"^(\$\(BUILD\)/[0-9][^%:]*):([^=].*)$", text, re.MULTILINE):
        prereqs = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), prereqs)
        inputs = set(re.findall(r"/([0-9][0-9]_\w+)", prereqs))
        for t in re.findall(r"/([0-9][0-9]_\w+)\.ipynb", targets):
            deps.setdefault(t, set()).update(inputs)
    return deps


def test_makefile_orders_the_notebooks_as_the_study_says():
    """`make reproduce JOBS=2` must not start a notebook before the ones whose results it
    reads: the Makefile's dependency lines say what iqalib.study.NOTEBOOK_INPUTS says."""
    deps = _makefile_inputs()
    assert deps, "found no notebook dependency lines in the Makefile"
    assert deps == {nb: set(ins) for nb, ins in study.NOTEBOOK_INPUTS.items()}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean(nb):
    assert problems(nb) == []


def test_params_files_only_name_the_profile():
    """What a profile runs lives in iqalib.study; a params file that set sizes (N_IMAGES) would
    override every notebook's profile settings at once."""
    files = {p.stem: p for p in (ROOT / "notebooks/params").glob("*.yaml")}
    assert set(files) == set(study.PROFILES)
    for name, path in files.items():
        params = yaml.safe_load(path.read_text())
        assert params["PROFILE"] == name
        assert set(params) <= {"PROFILE", "SEED", "DEVICE", "INTERACTIVE"}, path.name


class _Sandbox:
    """One results + figures folder that a chain of notebooks shares, and what ran in it."""

    def __init__(self, root: Path):
        self.root = root
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.params = yaml.safe_load((ROOT / "notebooks/params/smoke.yaml").read_text())

    def execute(self, stem: str) -> None:
        import papermill as pm

        out = self.root / "executed" / f"{stem}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            pm.execute_notebook(str(BY_STEM[stem]), str(out), parameters=self.params,
                                kernel_name="python3", cwd=str(BY_STEM[stem].parent),
                                progress_bar=False, log_output=False)
        except BaseException:
            self.failed.add(stem)
            raise
        self.done.add(stem)

    def run_with_inputs(self, nb: Path) -> None:
        for stem in study.notebook_inputs(nb.stem):
            if stem in self.failed:
                pytest.fail(f"{nb.name} reads the results of {stem}, which failed above")
            if stem not in self.done:
                self.execute(stem)
        before = {p: p.stat().st_mtime_ns for p in (self.root / "figures").glob("*.png")}
        self.execute(nb.stem)
        written = [p for p in (self.root / "figures").glob("*.png")
                   if before.get(p) != p.stat().st_mtime_ns]
        assert written, f"{nb.name} wrote no figure"
        assert all(p.with_suffix(".svg").exists() for p in written), "every PNG needs its SVG"


@pytest.fixture(scope="class")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("workbook")
    env = {"IQALIB_RESULTS": str(root / "results"), "IQALIB_FIGURES": str(root / "figures"),
           "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield _Sandbox(root)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class _Chain:
    def test_runs_with_smoke_profile(self, nb, sandbox):
        sandbox.run_with_inputs(nb)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("nb", GRID_CHAIN, ids=lambda p: p.name)
class TestGridChain(_Chain):
    """03-09 and 12 in number order in one folder (each reads an earlier one's results)."""


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("nb", INDEPENDENT, ids=lambda p: p.name)
class TestIndependentNotebooks(_Chain):
    """The notebooks that read no other notebook's results (00-02, 10, 11)."""
