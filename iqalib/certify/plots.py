"""Figures of notebook 11, in the house style of :mod:`iqalib.viz`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import viz

#: the smoothed metrics' bar colour (they are metrics, not members of a purifier family)
CERTIFIED_COLOUR = "#4c72b0"


def width_figure(sweep: pd.DataFrame, measure: str = "width/range"):
    """Certified width (mean over images) against the L2 radius: one panel per metric x sigma,
    one line per smoothing kind and bound."""
    import matplotlib.pyplot as plt

    d = sweep.assign(bound=sweep["kind"] + " (" + sweep["method"] + ")")
    d = d.groupby(["metric", "sigma", "bound", "eps"], as_index=False)[measure].mean()
    # radii such as 0, 0.05, 0.1, 1 crowd a linear axis: evenly spaced, labelled by value
    radii = sorted(d["eps"].unique())
    d["step"] = d["eps"].map({e: i for i, e in enumerate(radii)})
    metrics, sigmas = sorted(d["metric"].unique()), sorted(d["sigma"].unique())
    fig, axes = plt.subplots(len(metrics), len(sigmas), squeeze=False, sharey=True,
                             figsize=(4.2 * len(sigmas) + 1.5, 3.4 * len(metrics)))
    for i, m in enumerate(metrics):
        for j, s in enumerate(sigmas):
            viz.line(d[(d.metric == m) & (d.sigma == s)], x="step", y=measure, hue="bound",
                     title=f"{m}, sigma {s:g}", ax=axes[i][j])
            axes[i][j].set_xticks(range(len(radii)), [f"{e:g}" for e in radii])
            axes[i][j].set_xlabel("L2 radius eps ([0,1] units)")
            axes[i][j].set_ylabel("certified width / range")
            if (i, j) != (0, len(sigmas) - 1) and axes[i][j].get_legend() is not None:
                axes[i][j].get_legend().remove()
    n = sweep["image_id"].nunique()
    viz.suptitle(fig, "Certified interval width of the smoothed score vs the L2 radius", n)
    fig.tight_layout()
    return fig


def check_figure(check: pd.DataFrame):
    """Per smoothing kind: each image's certified interval at the attack's radius (bar), the
    smoothed clean score (dot) and the scores after the L2 attack that raises / lowers it
    (triangles). A triangle outside its bar would be a violated certificate."""
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(check["kind"]))
    fig, axes = plt.subplots(1, len(kinds), squeeze=False, figsize=(4.8 * len(kinds), 3.8))
    for ax, k in zip(axes[0], kinds):
        g = check[check["kind"] == k]
        ids = list(dict.fromkeys(g["image_id"]))
        for x, img in enumerate(ids):
            r = g[g["image_id"] == img].set_index("direction")
            lo, hi = r["lower"].iloc[0], r["upper"].iloc[0]
            ax.plot([x, x], [lo, hi], color="#9bb8d3", lw=7, solid_capstyle="butt", zorder=1)
            ax.plot([x], [r["clean"].iloc[0]], "o", color="#333333", ms=4, zorder=3)
            for direction, mk in (("raise", "^"), ("lower", "v")):
                if direction in r.index:
                    ok = bool(r.loc[direction, "inside"])
                    ax.plot([x], [r.loc[direction, "attacked"]], mk, ms=7, zorder=4,
                            color="#2a7f3f" if ok else "#c0392b")
        ax.set_xticks(range(len(ids)), ids, rotation=60, ha="right")
        e, s = g["eps"].iloc[0], g["sigma"].iloc[0]
        inside = g["inside"].mean()
        ax.set_title(f"{k}: eps {e:g}, sigma {s:g} ({inside:.0%} inside)")
        ax.set_ylabel(f"smoothed {g['metric'].iloc[0]} score")
    viz.suptitle(fig, "Certified intervals vs an adaptive L2 attack (EOT)",
                 check["image_id"].nunique())
    fig.tight_layout()
    return fig


def side_by_side_figure(side: pd.DataFrame, n: int | None = None):
    """Mean quality gain / range an adaptive L2 attack achieved through each defense (bars),
    the certified worst case of the smoothed metrics (black ticks) and the clean SROCC.
    Empirical purifiers take their family's colour (:func:`iqalib.viz.color`); the smoothed
    metrics share one colour. ``n``: the number of images, stated in the title."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.4))
    order = list(side["defense"])
    x = np.arange(len(order))
    colours = [CERTIFIED_COLOUR if c else viz.color("defense", str(d))
               for d, c in zip(side["defense"], side["certified"])]
    a1.bar(x, side["attack_gain/range"], color=colours)
    cert = side["certified/range"].to_numpy(dtype=float)
    has = np.isfinite(cert)
    a1.scatter(x[has], cert[has], marker="_", s=400, color="black", zorder=3,
               label="certified worst case")
    a1.set_xticks(x, order, rotation=45, ha="right")
    a1.set_ylabel("quality gain / range (lower is better)")
    a1.set_title("adaptive L2 attack at the same radius")
    handles = [Patch(color=CERTIFIED_COLOUR, label="smoothed metric (certified)")]
    if has.any():
        handles += a1.get_legend_handles_labels()[0]
    a1.legend(handles=handles, fontsize=7)
    a2.bar(x, side["clean_srocc"], color=colours)
    a2.set_xticks(x, order, rotation=45, ha="right")
    a2.set_ylabel("SROCC of defended vs plain clean score")
    a2.set_title("clean fidelity (higher is better)")
    viz.suptitle(fig, "Certified smoothing beside the empirical purifiers", n)
    fig.tight_layout()
    return fig


__all__ = ["check_figure", "side_by_side_figure", "width_figure"]
