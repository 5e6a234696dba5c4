"""iqalib.interactive.CompareApp: compute / figure, and the widget's callbacks, driven headless
with the toy metric (smoke-sized: 64 px photos, I-FGSM, cheap purifiers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from iqalib.evaluate.grid import TensorImages
from iqalib.interactive import CompareApp


@pytest.fixture
def app(toy_metric, photos64):
    imgs = TensorImages(photos64, ["astronaut", "chelsea", "coffee"], name="toy")
    return CompareApp(imgs, toy_metric, attacks=("ifgsm", "mifgsm"),
                      defenses=("identity", "flip", "gaussian-blur"), device="cpu")


def test_compute_scores_and_psnr(app, toy_metric, photos64):
    c = app.compute("chelsea", "ifgsm", 10, "gaussian-blur")
    assert torch.equal(c.clean, photos64[1:2])
    assert (c.attacked - c.clean).abs().max() <= 10 / 255 + 1e-6   # the eps it was given
    for k, x in (("clean", c.clean), ("attacked", c.attacked), ("purified", c.purified)):
        assert c.scores[k] == pytest.approx(float(toy_metric(x)[0]), rel=1e-5)
    assert c.scores["attacked"] > c.scores["clean"]               # the attack worked
    ref = peak_signal_noise_ratio(c.clean[0].numpy(), c.attacked[0].numpy(), data_range=1.0)
    assert c.psnr_attacked == pytest.approx(ref, rel=1e-4)
    moved = c.scores["attacked"] - c.scores["clean"]
    assert c.recovered == pytest.approx(1 - (c.scores["purified"] - c.scores["clean"]) / moved)


def test_identity_recovers_nothing_and_eps_changes_the_attack(app):
    c = app.compute("astronaut", "ifgsm", 10, "identity")
    assert torch.equal(c.purified, c.attacked) and c.recovered == pytest.approx(0.0)
    weak = app.compute("astronaut", "ifgsm", 2, "identity")
    assert (weak.attacked - weak.clean).abs().max() <= 2 / 255 + 1e-6
    assert weak.scores["attacked"] < c.scores["attacked"]


def test_figure_has_four_panels(app):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = app.figure(app.compute("coffee", "ifgsm", 10, "flip"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "clean" and "flip" in titles[2] and len(titles) == 4
    plt.close(fig)


def test_widget_callbacks_recompute(app, monkeypatch):
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    import ipywidgets as W

    calls = []
    real = app.compute

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(app, "compute", spy)
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    box = app.widget()
    assert calls == [("astronaut", "ifgsm", 10.0, "identity")]   # drawn once at start
    controls = [w for row in box.children[:2] for w in row.children]
    by_name = {w.description: w for w in controls}
    status, out = box.children[2], box.children[3]
    assert isinstance(out, W.Output) and isinstance(status, W.HTML)
    assert status.value.startswith("drawn in") and app.last_redraw_s > 0
    assert not any(w.disabled for w in controls)                 # busy only while computing
    by_name["purifier"].value = "flip"
    assert calls[-1] == ("astronaut", "ifgsm", 10.0, "flip")
    by_name["image"].value = "coffee"
    by_name["eps (/255)"].value = 4
    assert calls[-1] == ("coffee", "ifgsm", 4.0, "flip")
    by_name["attack"].value = "mifgsm"
    assert calls[-1][1] == "mifgsm" and len(calls) == 5
    # the attacked images are cached per (image, attack, eps): asking again does not re-attack
    n = len(app._adv_cache)
    by_name["purifier"].value = "gaussian-blur"
    assert len(app._adv_cache) == n
    assert set(by_name["image"].options) == {"astronaut", "chelsea", "coffee"}
    assert np.isfinite(real(*calls[-1]).scores["purified"])


def test_the_slider_changes_the_attack_above_10(app, toy_metric):
    """The step follows the budget (alpha = eps / steps): 10, 20 and 32 give different images,
    each using its budget; at 10/255 it is exactly the study's default I-FGSM (10 x 1/255)."""
    import iqalib

    images = {e: app.compute("chelsea", "ifgsm", e, "identity").attacked for e in (10, 20, 32)}
    assert not torch.equal(images[10], images[20])
    assert not torch.equal(images[20], images[32])
    assert not torch.equal(images[10], images[32])
    clean = app.images.load("chelsea")
    for e, x in images.items():
        linf = float((x - clean).abs().max())
        assert linf <= e / 255 + 1e-6
        assert linf > (e - 1) / 255          # the budget is reached, not capped at 10/255
    default = iqalib.load_attack("ifgsm", toy_metric)(clean)
    assert torch.equal(images[10], default)
    assert "10 steps of eps/10" in app.budget_note("ifgsm")


def test_attacks_without_a_budget_disable_the_slider(toy_metric, photos64, monkeypatch):
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")

    imgs = TensorImages(photos64[:1], ["astronaut"], name="toy")
    app = CompareApp(imgs, toy_metric, attacks=("ifgsm", "advcf"), defenses=("identity",),
                     device="cpu")
    assert app.has_budget("ifgsm") and not app.has_budget("advcf")
    assert "no eps budget" in app.budget_note("advcf")
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    box = app.widget()
    eps = box.children[1].children[0]
    attack = box.children[0].children[1]
    assert not eps.disabled
    attack.value = "advcf"
    assert eps.disabled and eps.description == "no budget"
    # the slider does not re-run an attack that has no budget
    n = len(app._adv_cache)
    eps.value = 20
    assert len(app._adv_cache) == n
    attack.value = "ifgsm"
    assert not eps.disabled


def test_an_unchanged_image_is_said_so(app):
    """AdvCF can return the clean image: no "PSNR 150 dB", no "recovered nan%"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = app.compute("coffee", "ifgsm", 10, "flip")
    c.attacked = c.clean.clone()
    c.scores["attacked"] = c.scores["clean"]
    assert not c.changed
    fig = app.figure(c)
    text = " ".join(ax.get_xlabel() + " " + ax.get_title() for ax in fig.axes)
    assert "the attack did not change this image" in text
    assert "150" not in text and "nan" not in text
    plt.close(fig)


def test_live_session_is_false_outside_a_notebook_and_under_papermill(monkeypatch):
    from iqalib import interactive

    assert interactive.live_session() is False          # pytest: no kernel

    class Kernel:
        def __init__(self):
            self.kernel = object()
            self.user_ns = {}

    monkeypatch.setattr("IPython.get_ipython", lambda: Kernel())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert interactive.live_session() is False          # a kernel without a server: papermill
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/10_interactive.ipynb")
    assert interactive.live_session() is True           # JupyterLab names the notebook
