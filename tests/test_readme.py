"""The README's examples run: every Python block of "## Extending" as its own module (so
component sources are inspectable, as in a user's file), the quick-start's names resolve, and
every "see ..." points at a heading that exists."""
from __future__ import annotations

import importlib
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.MULTILINE | re.DOTALL)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture
def registries_restored():
    """Whatever the examples register is removed afterwards (the registries are global)."""
    from iqalib.api import _ensure_registered
    from iqalib.registry import ATTACKS, DEFENSES, METRICS

    _ensure_registered()
    before = {r: (dict(r._entries), dict(r._lookup)) for r in (METRICS, ATTACKS, DEFENSES)}
    yield
    for r, (entries, lookup) in before.items():
        r._entries.clear()
        r._entries.update(entries)
        r._lookup.clear()
        r._lookup.update(lookup)


def test_extending_examples_run(tmp_path, monkeypatch, capsys, registries_restored):
    blocks = _python_blocks(_section("Extending"))
    assert len(blocks) == 4, "expected the metric, purifier, attack and image-folder examples"
    # the image-folder example reads ./my_photos: two offline sample photos stand in for yours
    from iqalib.datasets import load_dataset

    samples = load_dataset("samples", n=2)
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for image_id in samples.ids:
        src = samples.path(image_id)
        shutil.copy(src, photos / src.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for i, code in enumerate(blocks):
        name = f"readme_extending_{i}"
        (tmp_path / f"{name}.py").write_text(code)
        try:
            importlib.import_module(name)
        finally:
            sys.modules.pop(name, None)
    out = capsys.readouterr().out

    import iqalib
    from iqalib import viz

    # what the examples promise
    assert {"colourfulness"} <= set(iqalib.list_metrics())
    assert "box-blur:k5" in iqalib.list_defenses(presets=True)
    assert viz.family("box-blur") == "filters"
    assert "fgsm" in iqalib.list_attacks()
    assert "BoxBlur(size=5" in out
    assert (tmp_path / "my_results").is_dir()


def test_the_examples_attack_and_purify_for_real(registries_restored, tmp_path, monkeypatch):
    """Beyond running: the example attack raises its metric, the example metric is the published
    formula (checked on a grey image, where colourfulness is 0)."""
    import torch

    blocks = _python_blocks(_section("Extending"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "readme_metric.py").write_text(blocks[0])
    try:
        mod = importlib.import_module("readme_metric")
    finally:
        sys.modules.pop("readme_metric", None)
    grey = torch.full((1, 3, 16, 16), 0.5)
    assert float(mod.metric.score(grey)[0]) == pytest.approx(0.0, abs=1e-6)
    assert (mod.metric.score(mod.attacked) > mod.metric.score(mod.x)).all()
    assert float((mod.attacked - mod.x).abs().max()) <= 10 / 255 + 0.5 / 255 + 1e-6


def test_quickstart_names_resolve():
    import iqalib
    from iqalib.registry import ATTACKS, DEFENSES, METRICS

    iqalib.list_metrics()                    # registers the built-in components
    quick = _python_blocks(_section("What this is"))[0]
    for name in re.findall(r'load_metric\("([^"]+)"', quick):
        assert name in METRICS, name
    for name in re.findall(r'load_attack\("([^"]+)"', quick):
        assert name in ATTACKS, name
    for spec in re.findall(r'load_defense\("([^"]+)"', quick):
        for part in spec.split("+"):
            DEFENSES.split_spec(part)        # raises on an unknown name or preset
    grid = re.search(r"run_grid\((.*)\)", quick).group(1)
    for name in re.findall(r'"([^"]+)"', grid):
        assert name in METRICS or name in ATTACKS or name in DEFENSES, name
    assert iqalib.list_defenses("diffpure*")


def test_every_see_reference_names_a_heading():
    headings = set(re.findall(r"^#+ (.+)$", README, flags=re.MULTILINE))
    for ref in re.findall(r'see "([^"]+)"', README):
        assert ref in headings, f'README says see "{ref}" but has no such heading'
