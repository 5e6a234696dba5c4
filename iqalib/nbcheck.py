"""Check that committed notebooks carry no outputs and have a tagged ``parameters`` cell."""
from __future__ import annotations

import json
from pathlib import Path


def problems(path: Path) -> list[str]:
    """What is wrong with one notebook, as human-readable lines (empty when fine)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    cells = nb.get("cells", [])
    code = [c for c in cells if c.get("cell_type") == "code"]
    if any(c.get("outputs") for c in code):
        out.append(f"{path}: has outputs; strip them (nbstripout {path})")
    if any(c.get("execution_count") is not None for c in code):
        out.append(f"{path}: has execution counts; strip them (nbstripout {path})")
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in code):
        out.append(f"{path}: no code cell tagged 'parameters' (papermill needs one)")
    if not cells or cells[0].get("cell_type") != "markdown":
        out.append(f"{path}: the first cell must be markdown saying what the notebook shows")
    return out


def cli(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "notebooks")
    found = [p for nb in sorted(folder.glob("*.ipynb")) for p in problems(nb)]
    print("\n".join(found) if found else f"notebooks in {folder}: clean")
    return 1 if found else 0
