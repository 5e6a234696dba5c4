"""The house style (iqalib.viz), checked on the matplotlib objects the plot functions build:
fixed colours, readable labels, numeric order, shared scales, n in titles, intervals, labels
that do not overlap, image grids without empty panels."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mc
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from iqalib import viz
from iqalib.evaluate import grid, tables

METRICS = ["effnet-iqa", "brisque", "niqe"]
DEFENSES = ["identity", "flip", "median", "jpeg:q30", "jpeg:q90", "diffpure", "fcn-filter"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _hex(c) -> str:
    return mc.to_hex(c)


def _bar_colours(ax) -> list[str]:
    return [_hex(p.get_facecolor()) for p in ax.patches if p.get_height() == p.get_height()]


def _rng_table(metrics, defenses, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"metric": m, "defense": d, "abs_gain_norm": rng.uniform(0.01, 0.2)}
                         for m in metrics for d in defenses])


# -- colours ------------------------------------------------------------------------------------

def test_metric_colours_are_the_same_in_every_panel_and_call():
    _, (a1, a2) = plt.subplots(1, 2)
    viz.bar(_rng_table(METRICS, DEFENSES[:3]), x="defense", y="abs_gain_norm", hue="metric",
            title="a", ax=a1, n=8)
    # the second panel lacks effnet-iqa and lists its metrics in another order
    viz.bar(_rng_table(["niqe", "brisque"], DEFENSES[3:6], seed=1), x="defense",
            y="abs_gain_norm", hue="metric", title="b", ax=a2, n=8)
    legend = {t.get_text(): _hex(h.get_facecolor())
              for t, h in zip(a2.get_legend().get_texts(), a2.get_legend().legend_handles)}
    assert legend == {"brisque": viz.color("metric", "brisque"),
                      "niqe": viz.color("metric", "niqe")}
    # seaborn draws one container per hue level, in the house order
    for ax, names in ((a1, ["effnet-iqa", "brisque", "niqe"]), (a2, ["brisque", "niqe"])):
        for container, name in zip(ax.containers, names):
            assert {_hex(p.get_facecolor()) for p in container.patches} == {
                viz.color("metric", name)}
    assert len({viz.color("metric", m) for m in METRICS}) == len(METRICS)


def test_purifier_colour_comes_from_the_family_tags():
    assert viz.family("jpeg:q30") == viz.family("jpeg") == "JPEG"
    assert viz.family("flip") == "geometric transforms"
    assert viz.family("diffpure-unsharp") == viz.family("diffpure+unsharp") == "diffusion"
    assert viz.family("identity") == viz.family("none") == "baseline"
    assert viz.family("fcn-filter") == "trained FCN"
    # presets share their purifier's colour; members of a family share its hue
    assert viz.color("defense", "jpeg:q10") == viz.color("defense", "jpeg:q90")
    assert viz.color("defense", "median", by_family=True) == viz.FAMILIES["filters"]
    hues = {round(mc.rgb_to_hsv(mc.to_rgb(viz.color("defense", d)))[0], 2)
            for d in ("gaussian-blur", "median", "unsharp")}
    assert len(hues) == 1


def test_a_newly_registered_purifier_gets_its_family_colour():
    from iqalib.registry import DEFENSES as REG

    iqalib_api = pytest.importorskip("iqalib.api")
    iqalib_api._ensure_registered()
    REG.add("my-bilateral", lambda **kw: None, tags=("transform", "filter"))
    try:
        assert viz.family("my-bilateral") == "filters"
        assert viz.color("defense", "my-bilateral", by_family=True) == viz.FAMILIES["filters"]
        # it joins the family after the study's members
        assert viz.order("defense", ["my-bilateral", "median", "flip"]) == [
            "flip", "median", "my-bilateral"]
    finally:
        del REG._entries["my-bilateral"]
        del REG._lookup["my-bilateral"]


def test_purifier_bars_without_hue_take_family_colours():
    t = pd.DataFrame({"defense": DEFENSES, "SROCC": np.linspace(0.3, 0.9, len(DEFENSES))})
    fig = viz.bar(t, x="defense", y="SROCC", title="SROCC", n=8)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert _bar_colours(ax) == [viz.color("defense", d, by_family=True) for d in names]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["baseline", "geometric transforms", "filters", "JPEG", "diffusion",
                      "trained FCN"]


# -- labels ---------------------------------------------------------------------------------------

def test_no_label_is_a_raw_column_name():
    columns = set(grid.COLUMNS) | {"abs_gain_norm", "time_defense_s", "pseudo_mos", "moved",
                                   "score_change/range", "Gain/range", "time_s", "clean_gain"}
    for col in columns:
        # plain words ("attack", "seed") may stay; identifiers never reach an axis
        if not col.isalpha() or col in ("psnr", "ssim", "Q"):
            assert viz.label(col) != col, col
        assert "_" not in viz.label(col), col
    assert viz.label("abs_gain_norm") == "|Δscore| / range"
    assert viz.label("time_defense_s") == "time per image (s)"
    assert viz.label("pseudo_mos") == "pseudo-MOS (0-100, full-reference)"
    assert viz.label("moved") == "score change / range"
    assert viz.label("psnr", better=True) == "PSNR (dB) (higher is better)"
    assert viz.label("new_thing_s") == "new thing (s)"


def test_plots_put_readable_labels_on_their_axes():
    raw = {"abs_gain_norm", "time_defense_s", "Gain/range", "defense", "Q"}
    t = pd.DataFrame({"defense": DEFENSES, "Q": np.linspace(0.6, 0.95, 7),
                      "Gain/range": np.linspace(0.1, 0.01, 7),
                      "time_defense_s": np.logspace(-4, 0, 7)})
    figs = [viz.bar(t, x="defense", y="time_defense_s", title="time", n=8),
            viz.tradeoff_scatter(t, x="Q", y="Gain/range", n=8)]
    for fig in figs:
        ax = fig.axes[0]
        assert ax.get_xlabel() not in raw and ax.get_ylabel() not in raw
        assert ax.get_xlabel() and ax.get_ylabel()
    # times spanning four decades get a log axis
    assert figs[0].axes[0].get_yscale() == "log"


# -- order --------------------------------------------------------------------------------------

def test_t_values_are_in_numeric_order():
    assert viz.order(None, ["t10", "t20", "t5", "t50"]) == ["t5", "t10", "t20", "t50"]
    assert sorted(["t10", "t20", "t5", "t50"]) == ["t10", "t20", "t5", "t50"]   # text order
    assert viz.order("defense", ["jpeg:q90", "fcn-filter", "jpeg:q10", "flip", "identity"]) == [
        "identity", "flip", "jpeg:q10", "jpeg:q90", "fcn-filter"]
    assert viz.order("attack", ["advcf", "ifgsm", "korhonen"]) == ["ifgsm", "korhonen", "advcf"]

    rows = [{"t": t, "purifier": p, "abs_gain_norm": 1.0 / int(t[1:])}
            for t in ("t10", "t20", "t5", "t50") for p in ("diffpure", "diffpure-unsharp")]
    fig = viz.line(pd.DataFrame(rows), x="t", y="abs_gain_norm", hue="purifier", title="sweep",
                   n=8)
    ax = fig.axes[0]
    ticks = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels()]
    assert [text for _, text in sorted(ticks)] == ["t5", "t10", "t20", "t50"]
    # each line runs left to right through t5 .. t50 at x = 5 .. 50
    for line_ in ax.get_lines():
        xs = list(line_.get_xdata())
        if len(xs) == 4:
            assert xs == [5, 10, 20, 50]


def test_log_axis_tick_labels_do_not_overlap():
    ts = [1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100, 150]
    d = pd.DataFrame({"t": ts, "psnr": np.linspace(40, 20, len(ts))})
    fig, ax = plt.subplots(figsize=(4, 3))
    viz.line(d, x="t", y="psnr", title="PSNR", ax=ax, logx=True, n=8)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()]
    assert len(boxes) >= 3
    for a, b in itertools.pairwise(boxes):
        assert a.x1 <= b.x0, "tick labels overlap"
    assert {t.get_text() for t in ax.get_xticklabels()} <= {str(t) for t in ts}


# -- shared scales ---------------------------------------------------------------------------------

def test_heatmaps_share_one_scale_and_one_colour_bar():
    rng = np.random.default_rng(0)
    attacks = pd.Index(["ifgsm", "advcf"], name="attack")
    pivots = {m: pd.DataFrame(rng.uniform(0, 1 + 3 * i, (3, 2)),
                              index=pd.Index(DEFENSES[:3], name="defense"), columns=attacks)
              for i, m in enumerate(METRICS)}
    # one panel lacks a purifier: its row stays, blank
    pivots["niqe"] = pivots["niqe"].drop(index="flip")
    fig = viz.heatmaps(pivots, measure="abs_gain_norm", title="Gain", n=8)
    meshes = [ax.collections[0] for ax in fig.axes if ax.collections]
    panels = fig.axes[:3]
    assert len(fig.axes) == 4                                    # 3 panels + 1 colour bar
    clims = {m.get_clim() for m in meshes[:3]}
    assert len(clims) == 1
    lo, hi = clims.pop()
    all_values = np.concatenate([p.to_numpy().ravel() for p in pivots.values()])
    assert lo == pytest.approx(np.nanmin(all_values)) and hi == pytest.approx(np.nanmax(all_values))
    rows = [[t.get_text() for t in ax.get_yticklabels()] for ax in panels[:1]]
    assert rows[0] == ["identity", "flip", "median"]
    # the colour bar label may wrap to the bar, never lose a word
    assert fig.axes[3].get_ylabel().replace("\n", " ") == "|Δscore| / range (lower is better)"
    # an attack one metric does not run: its column leaves that panel, which is drawn narrower
    pivots["brisque"] = pivots["brisque"].assign(madc=np.nan, ssah=np.nan)
    pivots["effnet-iqa"] = pivots["effnet-iqa"].assign(madc=0.5, ssah=0.5)
    fig = viz.heatmaps(pivots, measure="abs_gain_norm", title="Gain", n=8)
    cols = {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes[:3]}
    assert cols["effnet-iqa"] == ["ifgsm", "madc", "ssah", "advcf"]
    assert cols["brisque"] == ["ifgsm", "advcf"]
    widths = {ax.get_title(): ax.get_position().width for ax in fig.axes[:3]}
    assert widths["brisque"] < 0.7 * widths["effnet-iqa"]


# -- n and intervals ------------------------------------------------------------------------------

def test_n_appears_in_every_title():
    assert viz.n_text(8) == "n = 8 images" and viz.n_text(1) == "n = 1 image"
    data = pd.DataFrame({"image_id": ["a", "b", "a"], "defense": ["flip", "flip", "jpeg"],
                         "SROCC": [0.5, 0.6, 0.7], "Q": [0.8, 0.9, 0.7]})
    assert viz.n_text(data=data) == "n = 2 images"
    figs = {
        "bar": viz.bar(data, x="defense", y="SROCC", title="SROCC"),
        "line": viz.line(data, x="defense", y="SROCC", title="SROCC"),
        "scatter": viz.tradeoff_scatter(data, x="Q", y="SROCC"),
        "heatmap": viz.heatmap(pd.DataFrame([[1.0]]), title="h", n="n = 1 held-out image"),
        "grid": viz.comparison_grid({"clean": torch.rand(3, 3, 8, 8)}, max_rows=2),
    }
    for name, fig in figs.items():
        titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text()
                                                        if fig._suptitle else ""]
        assert any("n = " in t for t in titles), name
    assert "n = 2 of 3 images" in figs["grid"]._suptitle.get_text()


def test_interval_columns_become_error_bars():
    t = pd.DataFrame({"defense": ["flip", "jpeg"], "SROCC": [0.5, 0.7],
                      "SROCC lo": [0.4, 0.65], "SROCC hi": [0.55, 0.9]})
    fig = viz.bar(t, x="defense", y="SROCC", title="SROCC", n=8)
    ax = fig.axes[0]
    spans = sorted((round(min(seg[:, 1]), 6), round(max(seg[:, 1]), 6))
                   for c in ax.collections for seg in c.get_segments())
    assert spans == [(0.4, 0.55), (0.65, 0.9)]
    assert viz.ci_columns(t, "SROCC") == ("SROCC lo", "SROCC hi")
    assert viz.ci_columns(t.rename(columns={"SROCC lo": "SROCC_lo", "SROCC hi": "SROCC_hi"}),
                          "SROCC") == ("SROCC_lo", "SROCC_hi")


def test_long_form_bars_draw_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    long = pd.DataFrame({"defense": ["flip"] * 8 + ["jpeg"] * 8, "image_id": list(range(8)) * 2,
                         "SROCC": rng.uniform(0, 1, 16)})
    ax = viz.bar(long, x="defense", y="SROCC", title="SROCC").axes[0]
    whiskers = [ln for ln in ax.get_lines() if len(ln.get_ydata()) == 2]
    assert len(whiskers) == 2
    for ln, d in zip(whiskers, ["flip", "jpeg"]):
        lo, hi = sorted(ln.get_ydata())
        mean = long[long.defense == d].SROCC.mean()
        assert lo < mean < hi


# -- scatter labels and image grids -----------------------------------------------------------

def test_scatter_point_labels_do_not_overlap():
    # six purifiers within 1 % of each other: the crowded case of the study's trade-off plot
    names = ["identity", "flip", "rotate", "resize", "random-crop", "upscale-bicubic", "median",
             "jpeg:q50", "diffpure"]
    rng = np.random.default_rng(0)
    q = np.r_[0.8 + rng.normal(0, 0.002, 6), 0.7, 0.9, 0.6]
    g = np.r_[0.05 + rng.normal(0, 0.0005, 6), 0.03, 0.08, 0.02]
    fig = viz.tradeoff_scatter(pd.DataFrame({"defense": names, "Q": q, "Gain/range": g}),
                               x="Q", y="Gain/range", n=8)
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text() in names]
    assert sorted(t.get_text() for t in texts) == sorted(names)
    boxes = [t.get_window_extent(r) for t in texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    # colour is the family, marker the member
    colours = {_hex(c.get_facecolor()[0]) for c in ax.collections if len(c.get_offsets())}
    assert colours == {viz.FAMILIES[f] for f in ("baseline", "geometric transforms", "filters",
                                                 "JPEG", "diffusion")}


def test_image_grid_has_no_empty_panels_and_wraps_captions_at_words():
    caption = ("CC-BY-2.0, photograph by a Flickr user, from the NIPS 2017 adversarial "
               "competition development set")
    for count in (5, 7, 8):
        fig = viz.image_grid([torch.rand(3, 8, 8)] * count, titles=[f"im{i}" for i in
                                                                    range(count)],
                             captions=[caption] * count, n=count)
        assert len(fig.axes) == count
        text = fig.axes[0].texts[0].get_text()
        assert text.split() == caption.split()          # no word cut
        assert "\n" in text
    assert viz.grid_shape(8, 6) == (2, 4) and viz.grid_shape(12, 6) == (2, 6)
    assert viz.wrap("abcdefghijklmnop qr", 5) == "abcdefghijklmnop\nqr"


def _tidy() -> pd.DataFrame:
    """A results table in the grid's columns: 2 metrics x 2 attacks x 3 purifiers x 4 images."""
    rng = np.random.default_rng(0)
    rows = []
    for metric in ("effnet-iqa", "brisque"):
        for attack in ("ifgsm", "advcf"):
            for defense in ("none", "jpeg:q50", "flip"):
                for i in range(4):
                    c = 50 + 10 * i
                    rows.append({
                        "image_id": f"img{i}", "dataset": "toy", "metric": metric,
                        "attack": attack, "attack_params": "{}", "defense": defense.split(":")[0],
                        "defense_params": "{}", "seed": 0, "score_clean": c,
                        "score_attacked": c + 20, "score_def_clean": c + rng.normal(),
                        "score_def_attacked": c + rng.uniform(0, 20), "psnr": 30.0 + i,
                        "ssim": 0.9, "time_attack_s": 0.5, "time_defense_s": 0.01,
                        "git_sha": "abc", "metric_range_lo": 0.0, "metric_range_hi": 100.0,
                        "metric_lower_better": False, "attack_spec": attack,
                        "defense_spec": defense})
    return pd.DataFrame(rows)


def test_summary_tables_plot_end_to_end():
    """The real summary of a results table through the plot functions."""
    df = _tidy()
    s = tables.summary(df)
    fig = viz.heatmap(tables.pivot(df, "abs_gain_norm"), title="Gain", measure="abs_gain_norm",
                      n=viz.n_images(df))
    ax = fig.axes[0]
    assert ax.get_title() == "Gain (n = 4 images)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["none", "flip", "jpeg:q50"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("attack", "purifier")
    fig = viz.tradeoff_scatter(s, x="q", y="abs_gain_norm", n=viz.n_images(df))
    assert fig.axes[0].get_xlabel().startswith("Q = ")


# -- figures of several panels, intervals per purifier -------------------------------------------

def test_panels_share_one_legend_one_scale_and_fixed_colours():
    data = pd.concat([_rng_table(METRICS, DEFENSES[:4]).assign(ssim=0.9),
                      _rng_table(["brisque"], DEFENSES[4:], seed=2).assign(ssim=0.8)])
    fig = viz.panels("bar", data, x="defense", y=["abs_gain_norm", "ssim"], hue="metric",
                     title="Clean cost", n=8)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 2 and all(ax.get_legend() is None for ax in axes)
    assert len(fig.legends) == 1
    legend = {t.get_text(): _hex(h.get_facecolor())
              for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert legend == {m: viz.color("metric", m) for m in METRICS}
    assert [ax.get_ylabel() for ax in axes] == ["|Δscore| / range (lower is better)",
                                                "SSIM (higher is better)"]
    assert "n = 8 images" in fig._suptitle.get_text()
    # split by a column: one panel per metric, one y scale
    fig = viz.panels("bar", data, x="defense", y="abs_gain_norm", col="metric", title="t", n=8)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == METRICS
    assert len({ax.get_ylim() for ax in axes}) == 1


def test_intervals_rank_purifiers_and_fade_the_distinguishably_worse():
    t = pd.DataFrame({"SROCC": [0.9, 0.85, 0.3, 0.1], "SROCC lo": [0.8, 0.6, 0.1, -0.2],
                      "SROCC hi": [0.95, 0.95, 0.5, 0.3],
                      "vs_best": ["best", "tied", "worse", ""]},
                     index=pd.Index(["flip", "jpeg:q50", "median", "none"], name="defense"))
    t.attrs.update({"n_images": 8, "level": 0.95})
    fig = viz.intervals(t, "SROCC")
    ax = fig.axes[0]
    assert [x.get_text() for x in ax.get_yticklabels()] == ["none", "median", "jpeg:q50", "flip"]
    assert "n = 8 images" in ax.get_title() and "95% interval" in ax.get_xlabel()
    whiskers = {round(ln.get_xdata()[0], 6): ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2}
    assert set(whiskers) == {0.8, 0.6, 0.1, -0.2}
    assert _hex(whiskers[0.8].get_color()) == viz.color("defense", "flip", by_family=True)
    points = {round(ln.get_xdata()[0], 6): ln for ln in ax.get_lines() if len(ln.get_xdata()) == 1}
    assert _hex(points[0.3].get_markerfacecolor()) == "#ffffff"          # worse: hollow
    assert _hex(points[0.85].get_markerfacecolor()) != "#ffffff"         # tied: filled
    with pytest.raises(KeyError, match="paper_table_ci"):
        viz.intervals(t.drop(columns=["SROCC lo"]), "SROCC")


def test_comparison_grid_scores_never_sit_under_the_next_row():
    cols = {name: torch.rand(3, 3, 32, 32) for name in ("clean", "ifgsm", "advcf", "flip")}
    scores = {name: [1.0, 2.0, 3.0] for name in cols}
    fig = viz.comparison_grid(cols, scores, metric_name="effnet-iqa", cell_inches=1.9)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    rows = {}
    for ax in fig.axes:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
    tops = sorted(rows, reverse=True)
    for upper, lower in itertools.pairwise(tops):
        label_bottom = min(ax.xaxis.label.get_window_extent(r).y0 for ax in rows[upper])
        image_top = max(ax.get_window_extent(r).y1 for ax in rows[lower])
        assert label_bottom >= image_top


def test_image_grid_title_clears_the_panel_titles():
    for count in (2, 12, 42):
        fig = viz.image_grid([torch.rand(3, 8, 8)] * count, titles=[f"blur, level {i}" for i in
                                                                    range(count)],
                             title="The synthetic distortions", n=1)
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        top = fig._suptitle.get_window_extent(r)
        assert top.y1 <= fig.bbox.height + 1
        for ax in fig.axes:
            assert not top.overlaps(ax.title.get_window_extent(r)), count
