"""Figures for the workbook: image comparison grids, the study's plots, and the ipywidgets
comparison app. Every figure is saved as PNG and SVG under ``paths.figures_dir()``.

Plot functions read only the tidy results table (or summaries computed from it) so that
every figure can be regenerated from ``data/results`` without rerunning attacks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from . import paths


def _hwc(x: torch.Tensor) -> np.ndarray:
    """[3,H,W] or [1,3,H,W] in [0,1] -> HxWx3 numpy for imshow."""
    if x.ndim == 4:
        x = x[0]
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def save_figure(fig, name: str, folder: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.svg``; return the paths."""
    folder = Path(folder) if folder is not None else paths.figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        path = folder / f"{name}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        out.append(path)
    return out


def difference_map(a: torch.Tensor, b: torch.Tensor, gain: float = 10.0) -> torch.Tensor:
    """|a - b| amplified ``gain`` times (clipped), for seeing small perturbations."""
    return ((a - b).abs() * gain).clamp(0, 1)


def comparison_grid(columns: Mapping[str, torch.Tensor], scores: Mapping[str, Sequence[float]] | None = None,
                    *, row_labels: Sequence[str] | None = None, metric_name: str = "score",
                    max_rows: int = 4, cell_inches: float = 2.4):
    """A grid: one row per image, one column per stage (e.g. clean / attacked / purified).

    ``columns`` maps a column title to a batch ``[B,3,H,W]``; ``scores`` maps the same titles to
    per-image scores printed under each image.
    """
    import matplotlib.pyplot as plt

    titles = list(columns)
    n_rows = min(max_rows, min(int(v.shape[0]) for v in columns.values()))
    fig, axes = plt.subplots(n_rows, len(titles), squeeze=False,
                             figsize=(cell_inches * len(titles), cell_inches * n_rows + 0.3))
    for r in range(n_rows):
        for c, title in enumerate(titles):
            ax = axes[r, c]
            ax.imshow(_hwc(columns[title][r]))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=10)
            if scores is not None and title in scores:
                ax.set_xlabel(f"{metric_name} {float(scores[title][r]):.2f}", fontsize=9)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[r]), fontsize=9)
    fig.tight_layout()
    return fig


# --- plots of the study's tables -----------------------------------------------------------

def tradeoff_scatter(summary, *, x: str = "Q", y: str = "Gain", hue: str = "defense",
                     title: str | None = None, ax=None):
    """Gain (lower is better) against Q (higher is better) per purifier: the study's trade-off."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.8))
    sns.scatterplot(data=summary, x=x, y=y, hue=hue, style=hue if summary[hue].nunique() <= 20 else None,
                    s=70, ax=ax, legend="brief")
    for _, row in summary.iterrows():
        ax.annotate(str(row[hue]), (row[x], row[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel(f"{x} (higher keeps the image closer to the clean one)")
    ax.set_ylabel(f"{y} (lower puts the metric back)")
    ax.set_title(title or f"{y} vs {x} per purifier")
    ax.legend(fontsize=7, ncol=2, loc="best")
    return ax.figure


def heatmap(pivot, *, title: str, cmap: str = "viridis_r", fmt: str = ".2f", ax=None,
            cbar_label: str | None = None):
    """A labelled heatmap of a pivot table (rows x columns), e.g. attack x purifier Gain."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        w = max(5.0, 0.75 * pivot.shape[1] + 2.5)
        h = max(3.0, 0.45 * pivot.shape[0] + 1.5)
        _, ax = plt.subplots(figsize=(w, h))
    sns.heatmap(pivot, annot=True, fmt=fmt, cmap=cmap, ax=ax, annot_kws={"fontsize": 7},
                cbar_kws={"label": cbar_label or ""})
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=45)
    return ax.figure


def bar(summary, *, x: str, y: str, title: str, hue: str | None = None, ax=None, sort=True):
    """Sorted bars of one measure per purifier (e.g. SROCC)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = summary.sort_values(y, ascending=False) if sort else summary
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.45 * data[x].nunique() + 2), 4))
    sns.barplot(data=data, x=x, y=y, hue=hue, ax=ax)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return ax.figure


def line(data, *, x: str, y: str, hue: str | None = None, title: str, ax=None, logx=False):
    """A measure against a parameter (e.g. score recovery against DiffPure's t)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o", ax=ax, errorbar=("ci", 95))
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    return ax.figure
