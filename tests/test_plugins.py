"""Plugins (iqalib.plugins): a tiny plugin package "installed" for the test (a dist-info with an
``iqalib.plugins`` entry point on PYTHONPATH) plus a module given with ``--plugin``, both used by
a real grid run through the command line in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalib import plugins
from iqalib.evaluate.grid import load_results

ROOT = Path(__file__).resolve().parents[1]

#: an installed distribution declaring an entry point: its module registers a metric
ENTRY_POINT_PACKAGE = '''
"""A toy no-reference metric: mean gradient magnitude (sharper is better)."""
import torch

from iqalib.metrics.base import IQAMetric
from iqalib.registry import METRICS


@METRICS.register("plug-sharpness", tags=("toy",))
class PlugSharpness(IQAMetric):
    """Mean absolute horizontal + vertical difference (a toy sharpness score); higher is better."""

    name = "plug-sharpness"
    score_range = (0.0, 1.0)

    def forward(self, x):
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        return dx + dy
'''

#: a module given on the command line: a callable registers a purifier
FLAG_MODULE = '''
import torch

from iqalib.defenses.base import Defense
from iqalib.registry import DEFENSES


class BoxBlur(Defense):
    """3x3 box blur (a toy purifier)."""

    name = "plug-box"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def purify(self, x, generator=None):
        k = torch.full((3, 1, 3, 3), 1 / 9, dtype=x.dtype, device=x.device)
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), "replicate"),
                                          k, groups=3)


def register():
    DEFENSES.add("plug-box", BoxBlur, tags=("transform", "filter"))
'''


def _install(site: Path) -> None:
    """Write the plugin package and its dist-info (what pip would leave) into ``site``."""
    (site / "plug_metric").mkdir(parents=True)
    (site / "plug_metric" / "__init__.py").write_text(ENTRY_POINT_PACKAGE)
    dist = site / "plug_metric-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-metric\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[iqalib.plugins]\nsharpness = plug_metric\n")
    (site / "plug_flag.py").write_text(FLAG_MODULE)


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop(plugins.ENV, None)
    return env


def test_plugins_reach_a_grid_run_through_the_command_line(tmp_path):
    site = tmp_path / "site"
    _install(site)
    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            images / f"p{i}.png")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "iqalib", "--plugin", "plug_flag:register", "run",
           "--metrics", "plug-sharpness", "--attacks", "ifgsm", "--defenses", "none", "plug-box",
           "--images", str(images), "--out", str(out), "--cache", str(tmp_path / "adv"),
           "--device", "cpu", "--batch-size", "2"]
    res = subprocess.run(cmd, env=_env(site), capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    df = load_results(out)
    assert set(df["metric"]) == {"plug-sharpness"}
    assert set(df["defense"]) == {"identity", "plug-box"}
    assert len(df[df["defense"] == "plug-box"]) == 2
    # the attack raised the plugin metric's score, and the box blur lowered it again
    row = df[df["defense"] == "plug-box"].iloc[0]
    assert row["score_attacked"] > row["score_clean"] > row["score_def_attacked"]


def test_list_describes_a_plugin_entry(tmp_path, monkeypatch, capsys):
    """``list`` shows a registered plugin like a built-in: whole summary, offline or not."""
    from iqalib import listing
    from iqalib.api import _ensure_registered
    from iqalib.registry import METRICS

    _ensure_registered()
    (tmp_path / "plug_metric.py").write_text(ENTRY_POINT_PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_plugin("plug_metric")
    try:
        assert listing.cli_list(["metrics", "plug-*"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert out.startswith("metrics (1) plug-sharpness [offline")
        assert ("Mean absolute horizontal + vertical difference (a toy sharpness score); higher "
                "is better.") in out
    finally:
        del METRICS._entries["plug-sharpness"], METRICS._lookup["plug-sharpness"]
        plugins._loaded.pop("plug_metric", None)
        sys.modules.pop("plug_metric", None)


def test_a_broken_plugin_fails_loudly_and_names_itself(tmp_path, monkeypatch):
    (tmp_path / "plug_broken.py").write_text("raise RuntimeError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(plugins.PluginError, match=r"plug_broken.*missing dependency xyz"):
        plugins.load_plugin("plug_broken", origin="test")
    assert "plug_broken" not in plugins.loaded()       # not marked loaded: it fails again
    with pytest.raises(plugins.PluginError):
        plugins.load_plugin("plug_broken", origin="test")


def test_a_plugin_loads_once_and_the_flag_reaches_child_processes(tmp_path, monkeypatch):
    (tmp_path / "plug_counter.py").write_text(textwrap.dedent("""
        CALLS = []
        def register():
            CALLS.append(1)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    # setenv, not delenv: delenv of an unset variable records nothing to restore, and the
    # value add_to_environment writes would leak into every later test
    monkeypatch.setenv(plugins.ENV, "")
    assert plugins.load_plugin("plug_counter:register") is True
    assert plugins.load_plugin("plug_counter:register") is False
    import plug_counter

    assert plug_counter.CALLS == [1]
    plugins.add_to_environment(["plug_counter:register", "other.mod"])
    plugins.add_to_environment(["other.mod"])
    assert os.environ[plugins.ENV] == "plug_counter:register,other.mod"


def test_cli_plugin_flag_parsing():
    from iqalib.cli import _split_plugins

    assert _split_plugins(["--plugin", "a.b", "--plugin=c:d", "list", "--plugin", "x"]) == (
        ["a.b", "c:d"], ["list", "--plugin", "x"])
    with pytest.raises(SystemExit, match="needs a module name"):
        _split_plugins(["--plugin"])
