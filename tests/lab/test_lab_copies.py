"""``make lab`` works on copies (iqalib.lab): made when missing, refreshed when the tracked
notebook changed and the copy's cells were not edited (outputs do not count), kept otherwise;
``--allow-root`` under root."""
from __future__ import annotations

import json

from iqalib import lab


def _nb(path, sources, outputs=None):
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": outputs or [], "source": s} for i, s in enumerate(sources)]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))


def _sources(path):
    return [c["source"] for c in json.loads(path.read_text())["cells"]]


def test_copies_are_made_refreshed_and_kept(tmp_path):
    src, dst = tmp_path / "notebooks", tmp_path / "build" / "lab"
    src.mkdir()
    _nb(src / "a.ipynb", ["x = 1"])
    _nb(src / "b.ipynb", ["y = 1"])
    assert lab.sync_copies(src, dst) == {"a.ipynb": "copied", "b.ipynb": "copied"}
    assert lab.sync_copies(src, dst) == {"a.ipynb": "unchanged", "b.ipynb": "unchanged"}

    # JupyterLab saved a with outputs; the user edited b's code
    _nb(dst / "a.ipynb", ["x = 1"], outputs=[{"output_type": "stream", "name": "stdout",
                                              "text": "1\n"}])
    _nb(dst / "b.ipynb", ["y = 2  # mine"])
    # then a pull changed both tracked notebooks
    _nb(src / "a.ipynb", ["x = 10"])
    _nb(src / "b.ipynb", ["y = 10"])
    assert lab.sync_copies(src, dst) == {"a.ipynb": "refreshed", "b.ipynb": "kept (edited)"}
    assert _sources(dst / "a.ipynb") == ["x = 10"]
    assert _sources(dst / "b.ipynb") == ["y = 2  # mine"]
    # the tracked notebooks were only read
    assert _sources(src / "b.ipynb") == ["y = 10"]


def test_command_adds_allow_root_only_for_root(monkeypatch, tmp_path):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    cmd = lab.command(tmp_path, ["--port", "8890"])
    assert "--allow-root" in cmd and cmd[-2:] == ["--port", "8890"]
    assert "--ServerApp.ip=127.0.0.1" in cmd and f"--notebook-dir={tmp_path}" in cmd
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    assert "--allow-root" not in lab.command(tmp_path)
