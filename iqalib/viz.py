"""The workbook's house style: every figure drawn the same way, from the tidy results table.

One colour per metric, per attack and per purifier *family*; one fixed order; readable labels with
units; ``n`` in every title; intervals where the data carry them. Every figure is saved as PNG
and SVG under ``paths.figures_dir()`` by :func:`save_figure`.

A short guide
-------------
::

    from iqalib import viz
    viz.use_style()                                   # once per notebook (fonts, grid, dpi)

    # one measure per purifier, bars coloured by metric, n in the title
    viz.bar(table, x="defense", y="abs_gain_norm", hue="metric", title="Clean cost", n=8)
    # a row of heatmaps on ONE colour scale with ONE colour bar
    viz.heatmaps({m: tables.pivot(df[df.metric == m], "abs_gain_norm") for m in metrics},
                 measure="abs_gain_norm", title="Gain per attack x purifier", n=8)
    # the trade-off: colour = purifier family, marker = member, labels that do not overlap
    viz.tradeoff_scatter(paper_table.reset_index(), x="Q", y="Gain/range", n=8)
    # a measure against a parameter: numeric order, readable log ticks
    viz.line(sweep, x="t", y="abs_gain_norm", hue="purifier", logx=True, title="...", n=8)
    viz.save_figure(fig, "04_tradeoff")

Rules of the house:

- Pass ``n=`` (an int, "n = 8 images", or let it come from an ``image_id`` column): summaries
  and pivots have no ``image_id``, so ``n_images(df)`` of the results table is what to pass.
- Panels of one figure that show one measure share its scale: :func:`heatmaps` for heatmaps;
  for bars / lines on ``ax=``, draw them with the same ``hue`` column (colours are fixed per
  name, not per call) and ``ax.set_ylim`` from the union if the values should compare.
- Purifiers on an axis or in a legend come in the family order; colour means family in bars and
  scatters (a family legend is added), and family-shaded member colours + markers in lines.
- Multi-panel figures: :func:`suptitle` (with n) and :func:`caption` (what the whiskers are).
- Existing signatures keep working (``heatmap``, ``bar``, ``line``, ``tradeoff_scatter``,
  ``comparison_grid``, ``save_figure``); the new keywords (``n``, ``measure``, ``vmin`` /
  ``vmax``, ``cbar``, ``logy``, ``title``) are optional.

The pieces, for figures drawn by hand:

- :func:`label` a column's axis label with units (``"time_defense_s"`` -> ``"time per image
  (s)"``); ``label(col, better=True)`` adds "(lower is better)" where the measure has a direction.
  Plot functions never put a raw column name on an axis.
- :func:`color` / :func:`palette` the fixed colour of a metric, an attack or a purifier (its
  family's colour, shaded per member); :func:`family` a purifier's family, read from the
  registry's tags, so a purifier you register with ``tags=("transform", "filter")`` is drawn in
  the filters' colour; :func:`marker` a member's marker within its family.
- :func:`order` the fixed order of metrics, attacks or purifiers (families first, presets in
  numeric order); :func:`natural_key` numeric order for anything else ("t5" < "t10" < "t50").
- :func:`n_text` / :func:`titled` "n = 8 images" from a number or from the data's ``image_id``.
- :func:`ci_columns` finds an interval for a measure: columns ``"<measure> lo"`` / ``"<measure>
  hi"`` (also ``_lo`` / ``_hi`` / ``ci_lo`` / ``ci_hi``). Without them, several rows per point
  (the long form) are drawn as the mean with seaborn's 95 % bootstrap interval (seed 0).
- :func:`wrap` captions wrapped at word boundaries; :func:`image_grid` a grid of images with no
  empty panels.

Plot functions read only tables (the results table or summaries of it), so every figure can be
regenerated from ``data/results`` without rerunning attacks.
"""
from __future__ import annotations

import colorsys
import contextlib
import functools
import re
import textwrap
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import paths

# -- style -----------------------------------------------------------------------------------

#: matplotlib settings every figure is drawn with (seaborn's "ticks" look, readable sizes)
RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "svg.fonttype": "none",     # text stays text in the SVGs
}


def use_style() -> None:
    """Apply the house style to every later figure of this session (call once per notebook)."""
    import matplotlib as mpl

    mpl.rcParams.update(RC)


@contextlib.contextmanager
def _styled():
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        yield


# -- labels ----------------------------------------------------------------------------------

#: axis labels for the results table's columns and the summaries' measures (units included)
LABELS = {
    "abs_gain_norm": "|Δscore| / range",
    "gain/range": "|Δscore| / range",
    "gain": "Gain |Δscore| / |clean score|",
    "clean_abs_gain_norm": "clean |Δscore| / range",
    "clean_gain": "Gain on clean images",
    "score_change/range": "score change / range",
    "moved": "score change / range",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "q": "Q = (SSIM + PSNR/80) / 2",
    "srocc": "SROCC",
    "plcc": "PLCC",
    "robustness": "robustness R",
    "recovered": "share of the score change undone",
    "time_s": "time per image (s)",
    "time_defense_s": "time per image (s)",
    "time_attack_s": "attack time / image (s)",
    "pseudo_mos": "pseudo-MOS (0-100, full-reference)",
    "predicted": "predicted score",
    "train_loss": "training loss (MSE)",
    "val_ssim": "held-out SSIM to clean",
    "score": "score",
    "score_clean": "score of the clean image",
    "score_attacked": "score of the attacked image",
    "score_def_clean": "score of the purified clean image",
    "score_def_attacked": "score of the purified attacked image",
    "quality": "score on the range (1 = best end)",
    "level": "distortion level",
    "t": "DiffPure t (diffusion steps)",
    "t*": "DiffPure t* (diffusion steps)",
    "eps": "ε (/255)",
    "eps_255": "ε (/255)",
    "epoch": "epoch",
    "loss": "loss",
    "defense": "purifier",
    "defense_label": "purifier",
    "defense_spec": "purifier",
    "purifier": "purifier",
    "attack": "attack",
    "attack_label": "attack",
    "attack_spec": "attack",
    "metric": "metric",
    "image_id": "image",
    "n": "n (images)",
    "setting": "attack setting",
    "distortion": "distortion",
}

#: which way is better, for the measures that have a direction
LOWER_BETTER = {"abs_gain_norm", "gain/range", "gain", "clean_abs_gain_norm", "clean_gain",
                "time_s", "time_defense_s", "time_attack_s"}
HIGHER_BETTER = {"psnr", "ssim", "q", "srocc", "plcc", "robustness", "recovered", "val_ssim"}


def _key(name: str) -> str:
    return str(name).strip().lower()


def direction(measure: str) -> str | None:
    """``"lower"``, ``"higher"`` or None: which way the measure is better."""
    k = _key(measure)
    return "lower" if k in LOWER_BETTER else "higher" if k in HIGHER_BETTER else None


def label(column: str, *, better: bool = False) -> str:
    """A readable axis label for ``column``, with units: ``label("time_defense_s")`` is
    ``"time per image (s)"``. ``better=True`` appends "(lower is better)" / "(higher is better)"
    for measures with a direction. Unknown names are humanised (``foo_bar_s`` -> "foo bar (s)")."""
    k = _key(column)
    if k in LABELS:
        text = LABELS[k]
    else:
        text = str(column)
        unit = ""
        m = re.fullmatch(r"(.*?)_(s|db|ms)", text, flags=re.IGNORECASE)
        if m:
            text, unit = m.group(1), {"s": " (s)", "db": " (dB)", "ms": " (ms)"}[m.group(2).lower()]
        text = text.replace("_", " ") + unit
    d = direction(k) if better else None
    return f"{text} ({d} is better)" if d else text


# -- numeric order ---------------------------------------------------------------------------

def natural_key(value: Any) -> tuple:
    """Sort key that orders the numbers inside strings numerically: t5 < t10 < t20 < t50,
    jpeg:q10 < jpeg:q100; numbers sort before text."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return ((0, float(value), ""),)
    parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p.lower())
                 for i, p in enumerate(parts) if p != "")


def _as_numbers(values: Sequence[Any]) -> np.ndarray | None:
    """The numbers in ``values`` ("t10" -> 10, 0.5 -> 0.5) when each holds exactly one; else None."""
    out = []
    for v in values:
        if isinstance(v, (int, float, np.integer, np.floating)):
            out.append(float(v))
            continue
        found = re.findall(r"\d+(?:\.\d+)?", str(v))
        if len(found) != 1:
            return None
        out.append(float(found[0]))
    return np.asarray(out, dtype=float)


# -- the registries: families, colours, markers, order --------------------------------------

#: purifier families in drawing order, with their colours (Okabe-Ito based, colour-blind safe)
FAMILIES = {
    "baseline": "#6e6e6e",
    "geometric transforms": "#0072b2",
    "filters": "#009e73",
    "JPEG": "#e69f00",
    "restorers": "#7b52ab",
    "diffusion": "#d55e00",
    "trained FCN": "#8c564b",
    "other": "#222222",
}
#: which registry tag puts a purifier in which family (first match wins)
FAMILY_TAGS = (("baseline", "baseline"), ("trained", "trained FCN"), ("diffusion", "diffusion"),
               ("restorer", "restorers"), ("denoiser", "restorers"), ("compression", "JPEG"),
               ("filter", "filters"), ("geometric", "geometric transforms"))

#: the study's members in their fixed order; purifiers registered later follow alphabetically
DEFENSE_ORDER = ("identity", "resize", "upscale-nearest", "upscale-bilinear", "upscale-bicubic",
                 "flip", "rotate", "random-crop", "gaussian-blur", "median", "unsharp", "jpeg",
                 "jpeg-diff", "ffdnet", "mprnet", "realesrgan", "diffpure", "diffpure-unsharp",
                 "fcn-filter")

METRIC_COLORS = {
    "linearity": "#0072b2", "metaiqa": "#d55e00", "spaq": "#009e73", "effnet-iqa": "#cc79a7",
    "brisque": "#e69f00", "niqe": "#56b4e9", "piqe": "#8c6d31",
}
ATTACK_COLORS = {
    "none": "#9e9e9e",
    "ifgsm": "#1f77b4", "mifgsm": "#6baed6", "amifgsm": "#08306b",
    "korhonen": "#2ca02c", "madc": "#98df8a", "ssah": "#17becf",
    "zhang-dists": "#9467bd", "zhang-lpips": "#c5b0d5", "zhang-lpips-vgg": "#6a3d9a",
    "zhang-ssim": "#e377c2", "advcf": "#d62728",
    "uap": "#8c564b", "cumulative-uap": "#c49c94", "generative-uap": "#bcbd22",
    "adaptive": "#ff7f0e",
}
#: for names no table above knows: assigned from this list in order of first use, then kept
FALLBACK_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
                   "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd", "#2f4b7c", "#a05195")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h")

_assigned: dict[str, dict[str, str]] = {}


def _kind(column: str | None) -> str | None:
    """"metric", "attack", "defense" or None, from a column name."""
    if column is None:
        return None
    k = _key(column)
    if k.startswith(("defense", "defence", "purifier")):
        return "defense"
    if k.startswith("attack"):
        return "attack"
    if k.startswith("metric"):
        return "metric"
    return None


def _registry(kind: str):
    from . import registry
    from .api import _ensure_registered

    _ensure_registered()
    return {"metric": registry.METRICS, "attack": registry.ATTACKS,
            "defense": registry.DEFENSES}[kind]


def _canonical(kind: str, name: str) -> tuple[str | None, str]:
    """(registered name or None, preset) of a table label such as ``"jpeg:q30"`` or
    ``"DiffPure (FFDNet prior)"``; compositions ``a+b`` resolve to their first part."""
    text = str(name).strip()
    first = text.split("+")[0]
    base, _, preset = first.partition(":")
    base = re.split(r"[\s(\[]", base.strip(), maxsplit=1)[0]
    from .errors import UnknownNameError

    try:
        return _registry(kind).entry(base).name, preset
    except UnknownNameError:   # not a registered name: a plain label
        return None, preset


def family(defense: str) -> str:
    """The family of a purifier label (``"jpeg:q30"`` -> ``"JPEG"``), from the registry's tags.

    Families, in order: baseline, geometric transforms, filters, JPEG, restorers, diffusion,
    trained FCN, other. A composition ``a+b`` takes the family of ``a``."""
    name, _ = _canonical("defense", defense)
    if name is None:
        return "baseline" if _key(defense) in ("none", "no defense", "no purifier") else "other"
    tags = set(_registry("defense").entry(name).tags)
    for tag, fam in FAMILY_TAGS:
        if tag in tags:
            return fam
    return "other"


def _members(fam: str) -> list[str]:
    """The registered purifiers of one family in their fixed order."""
    reg = _registry("defense")
    return list(_members_cached(fam, len(reg)))


@functools.lru_cache(maxsize=64)
def _members_cached(fam: str, registered: int) -> tuple[str, ...]:
    # keyed by the registry's size: a purifier registered later (a plugin) joins its family
    names = [n for n in _registry("defense").names() if family(n) == fam]
    known = [n for n in DEFENSE_ORDER if n in names]
    return tuple(known + sorted(n for n in names if n not in known))


def _shade(hex_color: str, amount: float) -> str:
    """Lighter (amount > 0) or darker (amount < 0) version of a colour, same hue."""
    import matplotlib.colors as mc

    h, lum, s = colorsys.rgb_to_hls(*mc.to_rgb(hex_color))
    lum = lum + (1 - lum) * amount if amount > 0 else lum * (1 + amount)
    return mc.to_hex(colorsys.hls_to_rgb(h, min(max(lum, 0.0), 1.0), s))


def _fallback(kind: str, name: str) -> str:
    table = _assigned.setdefault(kind, {})
    if name not in table:
        used = len(table)
        table[name] = FALLBACK_COLORS[used] if used < len(FALLBACK_COLORS) else \
            FALLBACK_COLORS[zlib.crc32(name.encode()) % len(FALLBACK_COLORS)]
    return table[name]


def color(kind: str | None, name: str, *, by_family: bool = False) -> str:
    """The fixed colour of a metric, an attack or a purifier (``kind`` "metric" / "attack" /
    "defense"; a column name such as "purifier" works too).

    A purifier gets its family's colour, shaded per member (``by_family=True``: the family colour
    itself); presets share their purifier's colour. Names no table knows get a colour on first use
    that stays theirs for the session, so panels drawn one after another agree."""
    kind = _kind(kind) or kind
    text = str(name)
    if kind == "metric":
        base, _ = _canonical("metric", text)
        return METRIC_COLORS.get(base or _key(text)) or _fallback("metric", base or text)
    if kind == "attack":
        base, _ = _canonical("attack", text)
        return ATTACK_COLORS.get(base or _key(text)) or _fallback("attack", base or text)
    if kind == "defense":
        fam = family(text)
        if by_family or fam in ("baseline", "other"):
            return FAMILIES[fam]
        base, _ = _canonical("defense", text)
        members = _members(fam)
        if base not in members or len(members) == 1:
            return FAMILIES[fam]
        # spread the members from darker to lighter around the family colour
        i = members.index(base)
        return _shade(FAMILIES[fam], -0.35 + 0.75 * i / (len(members) - 1))
    return _fallback(str(kind), text)


def marker(defense: str) -> str:
    """A purifier's marker: its position among its family's members (colour says the family)."""
    fam = family(defense)
    base, _ = _canonical("defense", defense)
    members = _members(fam) if fam != "other" else []
    i = members.index(base) if base in members else zlib.crc32(str(defense).encode())
    return MARKERS[i % len(MARKERS)]


def order(kind: str | None, names: Iterable[Any]) -> list:
    """``names`` (unique) in the house order: purifiers by family then member then preset
    (numeric), metrics and attacks in the study's order, anything else in numeric order."""
    kind = _kind(kind) or kind
    unique = list(dict.fromkeys(names))
    if kind == "defense":
        fams = list(FAMILIES)

        def key(n):
            fam = family(n)
            base, preset = _canonical("defense", n)
            members = _members(fam) if base else []
            pos = members.index(base) if base in members else len(members)
            return (fams.index(fam), pos, "+" in str(n), natural_key(preset), natural_key(n))
    elif kind in ("metric", "attack"):
        fixed = list(METRIC_COLORS if kind == "metric" else ATTACK_COLORS)

        def key(n):
            base, preset = _canonical(kind, n)
            b = base or _key(n)
            return (fixed.index(b) if b in fixed else len(fixed), natural_key(b),
                    natural_key(preset), natural_key(n))
    else:
        key = natural_key
    return sorted(unique, key=key)


def palette(kind: str | None, names: Iterable[Any], *, by_family: bool = False) -> dict:
    """``{name: colour}`` for ``names`` (see :func:`color`)."""
    return {n: color(kind, str(n), by_family=by_family) for n in order(kind, names)}


def family_legend(ax, defenses: Iterable[str], *, title: str = "purifier family", **kwargs):
    """A legend of the families present among ``defenses`` (one patch per family)."""
    from matplotlib.patches import Patch

    fams = [f for f in FAMILIES if f in {family(d) for d in defenses}]
    handles = [Patch(color=FAMILIES[f], label=f) for f in fams]
    kwargs.setdefault("loc", "best")
    return ax.legend(handles=handles, title=title, **kwargs)


# -- n and captions ---------------------------------------------------------------------------

def n_images(data) -> int | None:
    """The number of distinct images behind a table (its ``image_id`` column), or None."""
    cols = getattr(data, "columns", ())
    if "image_id" in cols:
        return int(data["image_id"].nunique())
    return None


def n_text(n: int | str | None = None, data=None, *, what: str = "images") -> str:
    """"n = 8 images" from ``n`` or from ``data``'s ``image_id``; a string ``n`` is used as is
    ("n = 1 held-out image"); "" when neither says."""
    if isinstance(n, str):
        return n if n.startswith("n =") else f"n = {n}"
    if n is None and data is not None:
        n = n_images(data)
    if n is None:
        return ""
    n = int(n)
    noun = what[:-1] if n == 1 and what.endswith("s") else what
    return f"n = {n} {noun}"


def titled(title: str | None, n: int | str | None = None, data=None) -> str:
    """``title`` with the n of the data appended: "Gain per purifier (n = 8 images)"."""
    extra = n_text(n, data)
    title = title or ""
    if not extra or extra in title:
        return title
    return f"{title} ({extra})" if title else extra


def wrap(text: str, width: int) -> str:
    """``text`` wrapped at word boundaries to lines of at most ``width`` characters (a word
    longer than a line stays whole, never cut)."""
    return textwrap.fill(str(text), width=max(4, int(width)), break_long_words=False,
                         break_on_hyphens=True)


def caption(fig, text: str, *, width: int | None = None, fontsize: float = 8):
    """A wrapped caption under the figure (e.g. what the whiskers show, the n)."""
    w_in = fig.get_size_inches()[0]
    width = width or int(w_in * 72 / (fontsize * 0.55))
    return fig.text(0.01, -0.01, wrap(text, width), ha="left", va="top", fontsize=fontsize,
                    transform=fig.transFigure)


def suptitle(fig, title: str, n: int | str | None = None, data=None):
    """A figure title with the n appended (for figures of several panels)."""
    return fig.suptitle(titled(title, n, data), fontsize=RC["axes.titlesize"] + 1)


# -- intervals -------------------------------------------------------------------------------

_CI_SUFFIXES = ((" lo", " hi"), ("_lo", "_hi"), (" ci_lo", " ci_hi"), ("_ci_lo", "_ci_hi"))


def ci_columns(data, measure: str) -> tuple[str, str] | None:
    """The (low, high) interval columns of ``measure`` in ``data``, if it carries them."""
    cols = set(getattr(data, "columns", ()))
    for lo, hi in _CI_SUFFIXES:
        if f"{measure}{lo}" in cols and f"{measure}{hi}" in cols:
            return f"{measure}{lo}", f"{measure}{hi}"
    return None


def _long_form(data, keys: Sequence[str | None]) -> bool:
    """True when several rows share one point (x, hue): seaborn then draws mean + 95 % CI."""
    keys = [k for k in keys if k is not None]
    return bool(len(data)) and bool(data.duplicated(subset=keys).any())


# -- images ----------------------------------------------------------------------------------

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


def _image_axis(ax) -> None:
    """An axis that shows an image: no ticks, grid or frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


def grid_shape(count: int, max_cols: int = 6) -> tuple[int, int]:
    """(rows, cols) for ``count`` panels with at most ``max_cols`` a row and as few empty cells as
    possible: a column count that divides ``count`` when one within a third of ``max_cols`` does."""
    if count <= max_cols:
        return 1, max(count, 1)
    best = max_cols
    for cols in range(max_cols, max(2, (2 * max_cols) // 3) - 1, -1):
        if count % cols == 0:
            best = cols
            break
    return -(-count // best), best


def image_grid(images: Sequence[torch.Tensor], *, titles: Sequence[str] | None = None,
               captions: Sequence[str] | None = None, max_cols: int = 6,
               cell_inches: float = 1.8, title: str | None = None, n: int | str | None = None):
    """A grid of images with a title and a wrapped caption under each (e.g. its licence).

    Only as many panels as images: a last row that is not full is centred, not padded with
    empty panels. Captions wrap at word boundaries to the panel's width."""
    import matplotlib.pyplot as plt

    count = len(images)
    rows, cols = grid_shape(count, max_cols)
    cap_lines = 0
    # 6 pt text is about 3.6 pt a character; keep a margin so neighbours' captions never touch
    width_chars = int(cell_inches * 0.9 * 72 / 3.6)
    wrapped = [wrap(c, width_chars) for c in captions] if captions is not None else None
    if wrapped:
        cap_lines = max(w.count("\n") + 1 for w in wrapped)
    row_h = cell_inches + 0.3 + 0.1 * cap_lines
    with _styled():
        # above the first row: the panel titles, then the figure's title (inches)
        head = (0.22 if titles is not None else 0.05) + (0.4 if title or n is not None else 0.0)
        fig = plt.figure(figsize=(cell_inches * cols, row_h * rows + head))
        gs = fig.add_gridspec(rows, 2 * cols, hspace=0.12 + 0.06 * cap_lines, wspace=0.1,
                              left=0.01, right=0.99, bottom=0.02 + 0.05 * cap_lines / rows,
                              top=1 - head / (row_h * rows + head))
        axes = []
        for k in range(count):
            r, c = divmod(k, cols)
            in_row = min(cols, count - r * cols)
            start = (cols - in_row) + 2 * c          # centre a short last row
            ax = fig.add_subplot(gs[r, start:start + 2])
            ax.imshow(_hwc(images[k]))
            _image_axis(ax)
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=7)
            if wrapped:
                ax.text(0.5, -0.03, wrapped[k], transform=ax.transAxes, ha="center", va="top",
                        fontsize=6, linespacing=1.1)
            axes.append(ax)
        if title or n is not None:
            fig.suptitle(titled(title, n), fontsize=RC["axes.titlesize"], y=1 - 0.08 / fig.get_figheight(),
                         va="top")
    return fig


def comparison_grid(columns: Mapping[str, torch.Tensor], scores: Mapping[str, Sequence[float]] | None = None,
                    *, row_labels: Sequence[str] | None = None, metric_name: str = "score",
                    max_rows: int = 4, cell_inches: float = 2.4, title: str | None = None,
                    n: int | str | None = None):
    """A grid: one row per image, one column per stage (e.g. clean / attacked / purified).

    ``columns`` maps a column title to a batch ``[B,3,H,W]``; ``scores`` maps the same titles to
    per-image scores printed under each image. The figure title says how many of the batch's
    images are shown ("4 of 8 images")."""
    import matplotlib.pyplot as plt

    titles = list(columns)
    total = min(int(v.shape[0]) for v in columns.values())
    n_rows = min(max_rows, total)
    with _styled():
        # each row: the square image plus a line for its score under it (never under the next row)
        fig, axes = plt.subplots(n_rows, len(titles), squeeze=False, layout="constrained",
                                 figsize=(cell_inches * len(titles),
                                          (cell_inches + 0.3) * n_rows + 0.6))
        for r in range(n_rows):
            for c, col in enumerate(titles):
                ax = axes[r, c]
                ax.imshow(_hwc(columns[col][r]))
                _image_axis(ax)
                if r == 0:
                    ax.set_title(col, fontsize=9)
                if scores is not None and col in scores:
                    ax.set_xlabel(f"{metric_name} {float(scores[col][r]):.2f}", fontsize=8)
                if c == 0 and row_labels is not None:
                    ax.set_ylabel(str(row_labels[r]), fontsize=8)
        shown = n if n is not None else (f"n = {n_rows} of {total} images" if n_rows < total
                                         else n_text(total))
        fig.suptitle(titled(title, shown), fontsize=RC["axes.titlesize"])
    return fig


# -- plots of the study's tables -------------------------------------------------------------

def _boxes_overlap(a, b, pad: float = 1.0) -> bool:
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], *,
                 fontsize: float = 7, color: str = "#333333") -> list:
    """Label points so that no two labels overlap each other or cover a point (a small greedy
    label-repel): each label tries offsets around its point at growing distances and takes the
    first free place inside the axes; a label set away from its point gets a thin leader line."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    points = [to_px((x, y)) for x, y in zip(xs, ys)]
    marker_r = 4.0 * fig.dpi / 72
    taken = [Bbox.from_extents(px - marker_r, py - marker_r, px + marker_r, py + marker_r)
             for px, py in points]
    axes_box = ax.get_window_extent(renderer)
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    placed = []
    # crowded points first: they have the fewest free places
    crowd = [sum(np.hypot(px - qx, py - qy) < 40 for qx, qy in points) for px, py in points]
    for i in sorted(range(len(texts)), key=lambda k: (-crowd[k], k)):
        best = None
        for radius in (4, 10, 18, 28, 40, 55):
            for dx, dy in directions:
                off = (dx * radius, dy * radius)
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(str(texts[i]), (xs[i], ys[i]), xytext=off,
                                  textcoords="offset points", ha=ha, va=va, fontsize=fontsize,
                                  color=color)
                box = ann.get_window_extent(renderer)
                clash = sum(_boxes_overlap(box, t) for t in taken)
                inside = (box.x0 >= axes_box.x0 and box.x1 <= axes_box.x1
                          and box.y0 >= axes_box.y0 and box.y1 <= axes_box.y1)
                score = clash + (0 if inside else 0.5)
                if best is None or score < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (score, ann, box, radius)
                else:
                    ann.remove()
                if score == 0:
                    break
            if best[0] == 0:
                break
        _, ann, box, radius = best
        if radius > 10:
            ann.remove()
            ann = ax.annotate(str(texts[i]), (xs[i], ys[i]), xytext=ann.xyann,
                              textcoords="offset points", ha=ann.get_ha(), va=ann.get_va(),
                              fontsize=fontsize, color=color,
                              arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5,
                                          "shrinkA": 0, "shrinkB": 3})
        taken.append(box)
        placed.append(ann)
    return placed


def tradeoff_scatter(summary, *, x: str = "Q", y: str = "Gain", hue: str = "defense",
                     title: str | None = None, ax=None, n: int | str | None = None,
                     labels: bool = True):
    """Gain (lower is better) against Q (higher is better) per purifier: the study's trade-off.

    Colour = the purifier's family, marker = the member within its family, and every point
    carries its name, placed where it overlaps nothing. Interval columns (``"<x> lo"`` ...)
    become error bars."""
    import matplotlib.pyplot as plt

    data = summary.reset_index(drop=True)
    kind = _kind(hue)
    with _styled():
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 5))
        names = order(kind, data[hue].astype(str)) if hue in data else []
        for name in names:
            rows = data[data[hue].astype(str) == name]
            c = color(kind, name, by_family=True) if kind == "defense" else color(kind, name)
            mk = marker(name) if kind == "defense" else "o"
            xerr = yerr = None
            for col, which in ((x, "x"), (y, "y")):
                cis = ci_columns(rows, col)
                if cis:
                    # clipped at 0: with one image every resample is the point itself, and a
                    # percentile of equal draws can miss it by a rounding error
                    err = np.clip(np.vstack([rows[col] - rows[cis[0]],
                                             rows[cis[1]] - rows[col]]), 0, None)
                    if which == "x":
                        xerr = err
                    else:
                        yerr = err
            if xerr is not None or yerr is not None:
                ax.errorbar(rows[x], rows[y], xerr=xerr, yerr=yerr, fmt="none", ecolor=c,
                            elinewidth=0.8, alpha=0.6, zorder=2)
            ax.scatter(rows[x], rows[y], color=c, marker=mk, s=46, edgecolor="white",
                       linewidth=0.6, zorder=3)
        ax.set_xlabel(label(x, better=True))
        ax.set_ylabel(label(y, better=True))
        ax.set_title(titled(title or f"{label(y)} against {label(x)}", n, data))
        ax.margins(0.08)
        if kind == "defense":
            family_legend(ax, names, loc="center left", bbox_to_anchor=(1.01, 0.5))
        if labels and len(data):
            place_labels(ax, data[x].to_numpy(float), data[y].to_numpy(float),
                         data[hue].astype(str).tolist())
    return ax.figure


def scatter(data, *, x: str, y: str, title: str, hue: str | None = None,
            style: str | None = None, ax=None, n: int | str | None = None,
            identity: bool = False):
    """Points of ``y`` against ``x`` with readable axis labels, fixed colours for ``hue`` (metrics,
    attacks and purifiers keep theirs; other names get a colour on first use) and markers for
    ``style``; ``identity=True`` draws the line y = x (e.g. a prediction against its target)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = data.copy()
    hue_order = pal = style_order = None
    if hue is not None:
        d[hue] = d[hue].astype(str)
        hue_order = order(_kind(hue) or hue, d[hue])
        pal = {h: color(_kind(hue) or hue, h) for h in hue_order}
    if style is not None:
        d[style] = d[style].astype(str)
        style_order = order(_kind(style) or style, d[style])
    with _styled():
        if ax is None:
            _, ax = plt.subplots(figsize=(6.2, 4.6))
        sns.scatterplot(data=d, x=x, y=y, hue=hue, hue_order=hue_order, palette=pal,
                        style=style, style_order=style_order, ax=ax, s=26, linewidth=0.3,
                        edgecolor="white")
        if identity:
            lo = float(np.nanmin(d[[x, y]].to_numpy(dtype=float)))
            hi = float(np.nanmax(d[[x, y]].to_numpy(dtype=float)))
            ax.plot([lo, hi], [lo, hi], color="#999999", lw=1, ls="--", zorder=1, label="y = x")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(y))
        ax.set_title(titled(title, n, d))
        if ax.get_legend() is not None:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return ax.figure


def _cmap_for(measure: str | None, cmap: str | None) -> str:
    if cmap:
        return cmap
    # the better end is always the light (yellow) end of viridis
    return "viridis_r" if measure and direction(measure) == "lower" else "viridis"


def _axis_order(name: str | None, labels: Iterable[Any]) -> list:
    """The house order for a named axis (purifiers, attacks, metrics, "t", ...); an unnamed
    axis keeps the order it was given in."""
    return order(name, labels) if name is not None else list(dict.fromkeys(labels))


def _ordered_pivot(pivot, rows: Sequence | None = None, cols: Sequence | None = None):
    rows = rows if rows is not None else _axis_order(pivot.index.name, pivot.index)
    cols = cols if cols is not None else _axis_order(pivot.columns.name, pivot.columns)
    return pivot.reindex(index=rows, columns=cols)


def heatmap(pivot, *, title: str, cmap: str | None = None, fmt: str = ".2f", ax=None,
            cbar_label: str | None = None, measure: str | None = None, vmin: float | None = None,
            vmax: float | None = None, cbar: bool = True, n: int | str | None = None):
    """A labelled heatmap of a pivot table (rows x columns), e.g. purifier x attack Gain.

    Rows and columns take the house order when they are purifiers / attacks / metrics; the colour
    map runs from dark to light towards the better end of ``measure`` (viridis). Give ``vmin`` /
    ``vmax`` to share a scale with other panels, or use :func:`heatmaps`."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = _ordered_pivot(pivot)
    with _styled():
        if ax is None:
            w = max(5.0, 0.75 * data.shape[1] + 2.5)
            h = max(3.0, 0.4 * data.shape[0] + 1.5)
            _, ax = plt.subplots(figsize=(w, h))
        sns.heatmap(data, annot=True, fmt=fmt, cmap=_cmap_for(measure, cmap), ax=ax,
                    annot_kws={"fontsize": 7}, vmin=vmin, vmax=vmax, cbar=cbar,
                    cbar_kws={"label": cbar_label or (label(measure, better=True) if measure
                                                      else "")} if cbar else None)
        ax.set_title(titled(title, n))
        ax.set_xlabel(label(data.columns.name) if data.columns.name else "")
        ax.set_ylabel(label(data.index.name) if data.index.name else "")
        ax.tick_params(axis="y", rotation=0)
        ax.tick_params(axis="x", rotation=45)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
        ax.grid(False)
    return ax.figure


def heatmaps(pivots: Mapping[str, Any], *, title: str, measure: str | None = None,
             cmap: str | None = None, fmt: str = ".2f", vmin: float | None = None,
             vmax: float | None = None, cbar_label: str | None = None,
             n: int | str | None = None, cell_inches: float = 0.55, drop_empty: bool = True):
    """A row of heatmaps (one per key, e.g. per metric) on ONE colour scale with ONE colour bar.

    Every panel gets the same rows and the same columns in the house order (missing cells stay
    blank), so a cell means the same thing in every panel; ``drop_empty`` (default) leaves out a
    panel's columns that are empty in it (an attack a metric does not run) and sizes each panel
    to its columns. ``vmin`` / ``vmax`` default to the range over all panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frames = list(pivots.values())
    first = frames[0]
    rows = _axis_order(first.index.name, [i for p in frames for i in p.index])
    cols = _axis_order(first.columns.name, [c for p in frames for c in p.columns])
    panels = {k: _ordered_pivot(p, rows, cols) for k, p in pivots.items()}
    if drop_empty:
        panels = {k: p.loc[:, p.notna().any(axis=0)] if p.notna().any().any() else p
                  for k, p in panels.items()}
    widths = [max(1, p.shape[1]) for p in panels.values()]
    values = np.concatenate([p.to_numpy(dtype=float).ravel() for p in panels.values()])
    values = values[np.isfinite(values)]
    lo = float(values.min()) if vmin is None and values.size else vmin
    hi = float(values.max()) if vmax is None and values.size else vmax
    if not values.size:
        # nothing finite to show (SROCC over one image, say): empty cells on a nominal scale
        lo, hi = (0.0 if lo is None else lo), (1.0 if hi is None else hi)
    k = len(panels)
    with _styled():
        fig, axes = plt.subplots(
            1, k, squeeze=False, sharey=True, layout="constrained",
            gridspec_kw={"width_ratios": widths},
            figsize=(max(4.0, cell_inches * sum(widths) + 0.6 * k) + 2.6,
                     max(2.8, 0.36 * len(rows) + 1.8)))
        for i, (ax, (name, data)) in enumerate(zip(axes[0], panels.items())):
            sns.heatmap(data, annot=True, fmt=fmt, cmap=_cmap_for(measure, cmap), ax=ax,
                        vmin=lo, vmax=hi, cbar=False, annot_kws={"fontsize": 7})
            ax.set_title(str(name))
            ax.set_xlabel(label(data.columns.name) if data.columns.name else "")
            ax.set_ylabel((label(data.index.name) if data.index.name else "") if i == 0 else "")
            ax.tick_params(axis="y", rotation=0)
            ax.tick_params(axis="x", rotation=45)
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
            ax.grid(False)
        # the bar's label wraps to the bar's length (a heatmap of 3 rows has a short bar)
        fits = int(0.8 * fig.get_figheight() * 72 / (RC["axes.labelsize"] * 0.6))
        fig.colorbar(axes[0, 0].collections[0], ax=axes[0].tolist(), shrink=0.9, pad=0.02,
                     label=wrap(cbar_label or (label(measure, better=True) if measure else ""),
                                fits))
        suptitle(fig, title, n)
    return fig


def _bar_errorbars(ax, data, x, y, hue, x_order, hue_order, cis):
    """Error bars from precomputed interval columns, at the centres of seaborn's bars (a bar's
    category is the x tick nearest its centre; with ``hue`` its container is its hue level)."""
    containers = [c for c in ax.containers if hasattr(c, "patches")]
    for k, container in enumerate(containers):
        sub = data if hue is None else data[data[hue].astype(str) == hue_order[k]]
        for bar_patch in container.patches:
            centre = bar_patch.get_x() + bar_patch.get_width() / 2
            cat = x_order[round(centre)] if 0 <= round(centre) < len(x_order) else None
            row = sub[sub[x].astype(str) == cat]
            if row.empty or not np.isfinite(bar_patch.get_height()):
                continue
            v, lo, hi = (float(row[c].iloc[0]) for c in (y, *cis))
            ax.errorbar(centre, v, yerr=[[v - lo], [hi - v]], fmt="none", ecolor="#333333",
                        elinewidth=0.8, capsize=2, zorder=4)


def bar(summary, *, x: str, y: str, title: str, hue: str | None = None, ax=None, sort=True,
        n: int | str | None = None, logy: bool | None = None):
    """Bars of one measure (``y``) per category (``x``), optionally split by ``hue``.

    ``sort``: True puts purifiers / attacks / metrics on ``x`` in the house order and anything
    else by value (descending); "value" sorts by value; False keeps the data's order. Without
    ``hue``, purifier bars take their family colour (with a family legend). Interval columns
    (``"<y> lo"`` / ``"<y> hi"``) become error bars; several rows per bar are drawn as the mean
    with a 95 % bootstrap interval. ``logy`` (default: for times spanning over 100x) uses a log
    axis."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = summary.copy()
    xs = data[x].astype(str)
    data[x] = xs
    x_kind = _kind(x)
    if sort == "value" or (sort is True and x_kind is None):
        x_order = list(data.groupby(x)[y].mean().sort_values(ascending=False).index)
    elif sort:
        x_order = order(x_kind, xs)
    else:
        x_order = list(dict.fromkeys(xs))
    hue_order = None
    if hue is not None:
        data[hue] = data[hue].astype(str)
        hue_order = order(_kind(hue) or hue, data[hue])
        pal = {h: color(_kind(hue) or hue, h) for h in hue_order}
    elif x_kind is not None:
        pal = {c: color(x_kind, c, by_family=True) for c in x_order}
    else:
        pal = None
    cis = ci_columns(data, y)
    long_form = cis is None and _long_form(data, [x, hue])
    with _styled():
        if ax is None:
            width = max(5.0, 0.32 * len(x_order) * max(1, len(hue_order or [1])) ** 0.5 + 2.2)
            _, ax = plt.subplots(figsize=(width, 4))
        kwargs = {"hue": hue, "hue_order": hue_order} if hue is not None else \
            ({"hue": x, "hue_order": x_order, "legend": False} if pal else {})
        sns.barplot(data=data, x=x, y=y, order=x_order, palette=pal, ax=ax,
                    errorbar=("ci", 95) if long_form else None, seed=0, err_kws={"linewidth": 0.8},
                    saturation=1,
                    **kwargs)
        if cis:
            _bar_errorbars(ax, data, x, y, hue, x_order, hue_order, cis)
        if logy is None:
            vals = data[y].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals) & (vals > 0)]
            logy = (_key(y).startswith("time") and vals.size > 1
                    and vals.max() / vals.min() > 100)
        if logy:
            ax.set_yscale("log")
        ax.set_title(titled(title, n, data))
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(y, better=True))
        ax.tick_params(axis="x", rotation=60)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
            t.set_rotation_mode("anchor")
        if hue is not None:
            ax.legend(title=label(hue), loc="upper left", bbox_to_anchor=(1.0, 1.0))
        elif x_kind == "defense":
            family_legend(ax, x_order, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax.figure


def _log_ticks(ax, values: Sequence[float], labels_: Sequence[str], fontsize: float) -> None:
    """Ticks at the data's own x values on a log axis, thinned so their labels never overlap."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.figure.canvas.draw()
    width_px = ax.get_window_extent().width
    lo, hi = np.log10(min(values)), np.log10(max(values))
    span = max(hi - lo, 1e-9) * 1.1
    char_px = fontsize * 0.62 * ax.figure.dpi / 72
    kept_v, kept_l = [], []
    for v, text in sorted(zip(values, labels_)):
        if kept_v:
            gap_px = (np.log10(v) - np.log10(kept_v[-1])) / span * width_px
            need = (len(text) + len(kept_l[-1])) / 2 * char_px + 4
            if gap_px < need:
                continue
        kept_v.append(v)
        kept_l.append(text)
    ax.xaxis.set_major_locator(FixedLocator(kept_v))
    ax.set_xticklabels(kept_l)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def line(data, *, x: str, y: str, hue: str | None = None, title: str, ax=None, logx=False,
         n: int | str | None = None, markers: bool | None = None):
    """A measure against a parameter (e.g. score recovery against DiffPure's t).

    x values are placed by their number ("t5" -> 5), so they read in numeric order; on a log axis
    the ticks sit at the data's own values with non-overlapping labels. Interval columns become a
    band; several rows per point are drawn as the mean with a 95 % bootstrap interval. Markers
    (default: up to 30 x values) mark the measured points; long curves such as training epochs
    are drawn as plain lines."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = data.copy()
    raw = list(dict.fromkeys(d[x]))
    numbers = _as_numbers(raw)
    if numbers is None:
        # categories: plot them at positions in numeric order
        cats = order(x, raw)
        pos = {c: i for i, c in enumerate(cats)}
        d["_x"] = d[x].map(pos).astype(float)
        tick_v, tick_l = list(range(len(cats))), [str(c) for c in cats]
        logx = False
    else:
        lookup = dict(zip(raw, numbers))
        d["_x"] = d[x].map(lookup).astype(float)
        tick_v = sorted(set(numbers.tolist()))
        tick_l = [f"{v:g}" for v in tick_v]
        if any(isinstance(v, str) for v in raw):
            names = {lookup[v]: str(v) for v in raw}
            tick_l = [names[v] for v in tick_v]
    hue_order = pal = None
    if hue is not None:
        d[hue] = d[hue].astype(str)
        hue_order = order(_kind(hue) or hue, d[hue])
        pal = {h: color(_kind(hue) or hue, h) for h in hue_order}
    cis = ci_columns(d, y)
    long_form = cis is None and _long_form(d, ["_x", hue])
    with _styled():
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        sns.lineplot(data=d.sort_values("_x"), x="_x", y=y, hue=hue, hue_order=hue_order,
                     palette=pal, style=hue, style_order=hue_order,
                     markers=len(tick_v) <= 30 if markers is None else markers, dashes=False,
                     ax=ax, errorbar=("ci", 95) if long_form else None, seed=0,
                     err_kws={"alpha": 0.15})
        if cis:
            for h, g in (d.groupby(hue) if hue is not None else [(None, d)]):
                g = g.sort_values("_x")
                ax.fill_between(g["_x"], g[cis[0]], g[cis[1]], alpha=0.15, linewidth=0,
                                color=pal[h] if pal else None)
        if logx:
            ax.set_xscale("log")
            _log_ticks(ax, tick_v, tick_l, RC["xtick.labelsize"])
        else:
            if numbers is None or len(tick_v) <= 12:
                ax.set_xticks(tick_v)
                ax.set_xticklabels(tick_l)
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(y, better=True))
        ax.set_title(titled(title, n, d))
        if hue is not None and ax.get_legend() is not None:
            ax.legend(title=label(hue), fontsize=7)
    return ax.figure


# -- figures of several panels ------------------------------------------------------------------

def _legend_entries(axes) -> dict:
    """``{label: handle}`` of every panel's legend, in first-seen order (each panel's legend is
    then removed: a figure of panels carries one legend)."""
    entries: dict = {}
    for ax in axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        for text, handle in zip(leg.get_texts(), leg.legend_handles):
            entries.setdefault(text.get_text(), handle)
        title = leg.get_title().get_text()
        entries.setdefault("\x00title", title)
        leg.remove()
    return entries


def panels(kind: str, data, *, x: str, y: str | Sequence[str], title: str,
           col: str | None = None, hue: str | None = None, titles: Sequence[str] | None = None,
           n: int | str | None = None, sharey: bool | None = None, caption_text: str | None = None,
           panel_inches: tuple[float, float] | None = None, **kwargs):
    """A row of :func:`bar` or :func:`line` panels (``kind`` "bar" / "line") with ONE legend,
    one title with n, and an optional caption.

    Either several measures (``y`` a list: one panel each, e.g. PSNR, SSIM, time; ``data`` may
    then be a list of tables, one per measure, e.g. a per-image table where intervals exist and a
    summary where they do not) or one measure split by a column (``col``, e.g. one panel per metric; the panels then share the y scale
    unless ``sharey=False``). ``hue`` keeps its fixed colours in every panel, so a colour means
    one thing across the figure. Other keywords go to the plot function (``logx``, ``sort``...).
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    draw = {"bar": bar, "line": line}[kind]
    frames = list(data) if isinstance(data, (list, tuple)) else None
    if frames is not None:
        if col is not None or isinstance(y, str) or len(frames) != len(y):
            raise ValueError("panels: a list of tables needs a list of measures y, one each")
        jobs = [(f, m, label(m)) for f, m in zip(frames, y)]
        data = pd.concat(frames, ignore_index=True)
        sharey = bool(sharey)
    elif col is not None:
        if not isinstance(y, str):
            raise ValueError("panels: give one measure y with col, or a list of measures without")
        keys = order(col, data[col].astype(str).unique())
        jobs = [(data[data[col].astype(str) == k], y, k) for k in keys]
        sharey = True if sharey is None else sharey
    else:
        ys = [y] if isinstance(y, str) else list(y)
        jobs = [(data, m, label(m)) for m in ys]
        sharey = bool(sharey)
    if titles is not None:
        jobs = [(d, m, t) for (d, m, _), t in zip(jobs, titles)]
    k = len(jobs)
    if panel_inches is None:
        cats = data[x].nunique() if kind == "bar" else 6
        hues = max(1, data[hue].nunique()) if hue is not None and kind == "bar" else 1
        panel_inches = (max(3.6, 0.26 * cats * hues ** 0.5 + 1.4), 3.4)
    with _styled():
        fig, axes = plt.subplots(1, k, squeeze=False, layout="constrained",
                                 figsize=(panel_inches[0] * k + 1.6, panel_inches[1]))
        axes = axes[0]
        for ax, (d, m, t) in zip(axes, jobs):
            draw(d, x=x, y=m, hue=hue, title=t, ax=ax, **kwargs)
            ax.set_title(t)          # the n goes once into the figure's title, not every panel's
        if sharey and k > 1:
            lo = min(ax.get_ylim()[0] for ax in axes)
            hi = max(ax.get_ylim()[1] for ax in axes)
            for ax in axes:
                ax.set_ylim(lo, hi)
        entries = _legend_entries(axes)
        legend_title = entries.pop("\x00title", "")
        if entries:
            fig.legend(list(entries.values()), list(entries), title=legend_title,
                       loc="outside right center")
        suptitle(fig, title, n, data)
        if caption_text:
            caption(fig, caption_text)
    return fig


def intervals(table, measure: str = "SROCC", *, title: str | None = None, ax=None,
              n: int | str | None = None, level: float | None = None):
    """One measure per purifier with its interval (``"<measure> lo"`` / ``"<measure> hi"``, as
    :func:`iqalib.evaluate.uncertainty.paper_table_ci` gives them), best at the top.

    Colour = the purifier's family. With a ``vs_best`` column (``paper_table_ci``), the best is a
    filled marker, the purifiers it cannot be told from ("tied") are filled too and the
    distinguishably worse ones hollow and faded, so the reader sees which ranks are noise."""
    import matplotlib.pyplot as plt

    lo_col, hi_col = ci_columns(table, measure) or (None, None)
    if lo_col is None:
        raise KeyError(f"intervals: {measure!r} has no interval columns ('{measure} lo' / "
                       f"'{measure} hi'); use uncertainty.paper_table_ci")
    t = table[np.isfinite(table[measure].to_numpy(dtype=float))]
    lower = direction(measure) == "lower"
    names = list(t[measure].sort_values(ascending=lower).index)          # best first
    n = n if n is not None else table.attrs.get("n_images")
    level = level if level is not None else table.attrs.get("level", 0.95)
    with _styled():
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 0.3 * len(names) + 1.5))
        for i, name in enumerate(names):
            y = len(names) - 1 - i
            v, lo, hi = (float(t.at[name, c]) for c in (measure, lo_col, hi_col))
            status = str(t.at[name, "vs_best"]) if "vs_best" in t.columns else ""
            c = color("defense", str(name), by_family=True)
            faded = status == "worse"
            ax.plot([lo, hi], [y, y], color=c, lw=2.2, alpha=0.35 if faded else 0.9,
                    solid_capstyle="butt")
            ax.plot([v], [y], marker=marker(str(name)), ms=6, color=c,
                    mfc="white" if faded else c, alpha=0.6 if faded else 1.0, zorder=3)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([str(nm) for nm in reversed(names)])
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_xlabel(f"{label(measure, better=True)}, {level:.0%} interval")
        ax.set_ylabel("")
        ax.grid(axis="y", visible=False)
        ax.set_title(titled(title or f"{label(measure)} per purifier", n))
        family_legend(ax, names, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        if "vs_best" in t.columns:
            from matplotlib.lines import Line2D

            leg = ax.get_legend()
            ax.add_artist(leg)
            ax.legend(handles=[Line2D([], [], marker="o", ls="", color="#555555",
                                      label="tied with the best"),
                               Line2D([], [], marker="o", ls="", color="#555555", mfc="white",
                                      alpha=0.6, label="worse than the best")],
                      loc="lower left", bbox_to_anchor=(1.0, 0.0), title="paired bootstrap")
    return ax.figure


__all__ = [
    "FAMILIES", "LABELS", "RC", "bar", "caption", "ci_columns", "color", "comparison_grid",
    "difference_map", "direction", "family", "family_legend", "grid_shape", "heatmap",
    "heatmaps", "image_grid", "intervals", "label", "line", "marker", "n_images", "n_text",
    "natural_key", "order", "palette", "panels", "place_labels", "save_figure", "scatter",
    "suptitle", "titled", "tradeoff_scatter", "use_style", "wrap",
]
