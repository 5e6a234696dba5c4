"""The import structure: no import cycle between iqalib's modules, components never call up
into the front door (``iqalib.api``), and every module imports in a fresh interpreter."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import iqalib

PKG = Path(iqalib.__file__).resolve().parent
#: the checkout these tests belong to (`make lint` runs there)
CHECKOUT = Path(__file__).resolve().parents[1]
#: the layers below the front door: they build components through the registries
BELOW_API = ("iqalib.metrics", "iqalib.attacks", "iqalib.defenses", "iqalib.evaluate")


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict, *, top_level_only: bool) -> set[str]:
    """The iqalib modules ``name`` imports (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node, nested: bool):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                  ast.Lambda))
            if isinstance(child, ast.Import) and not (inner and top_level_only):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not (inner and top_level_only):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.add(sub if sub in modules else base)
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) \
                    and child.test.id == "TYPE_CHECKING":
                continue  # typing-only imports do not run
            visit(child, inner)

    visit(tree, False)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # a package importing its own submodules (to register them) is not a cycle
        graph[name] = {m for m in _imports(name, path, modules, top_level_only=True)
                       if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_components_never_import_the_front_door():
    modules = _modules()
    offenders = [name for name, path in modules.items()
                 if name.startswith(BELOW_API)
                 and "iqalib.api" in _imports(name, path, modules, top_level_only=False)]
    assert offenders == []


@pytest.mark.slow  # imports every heavy dependency (pyiqa, diffusers, distributed): ~15-60 s
def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = ("import importlib, sys\nbad = []\n"
            f"for n in {names!r}:\n"
            "    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]


def test_lint_is_clean():
    """`make lint` (ruff, with the rules pyproject.toml selects) finds nothing in iqalib/ or
    tests/."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    res = subprocess.run([ruff, "check", "--no-cache", "iqalib", "tests"], cwd=CHECKOUT,
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


def test_import_iqalib_leaves_the_heavy_libraries_for_later():
    """`import iqalib` runs in every notebook kernel, CLI call and Dask worker: diffusers (about
    1.5 s), torchvision (about 2 s, it pulls in torch._dynamo), pyiqa and distributed are
    imported where a component needs them, not up front."""
    code = ("import sys, iqalib; print(' '.join(m for m in ('diffusers', 'torchvision', 'pyiqa', "
            "'distributed') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == []
