"""The interactive comparison: pick an image, an attack, its strength and a purifier, and see
clean / attacked / purified side by side with the metric's scores and a difference view.

The logic (:meth:`CompareApp.compute`) is separate from the widgets so that tests can drive
the callbacks without a browser; :meth:`CompareApp.widget` wires it to ipywidgets.

The strength slider sets the attack's budget ``eps`` (in 1/255). For I-FGSM and MI-FGSM the step
follows it, ``alpha = eps / steps``: at the study's 10/255 that is its 10 steps of 1/255, and a
larger budget is really used (a fixed 1/255 step could never leave a 10/255 ball in 10 steps).
AMI-FGSM already steps by ``eps / steps``. Attacks without a budget (AdvCF, Korhonen, SSAH,
Zhang et al.: ``Attack.has_eps`` is False) ignore the slider, and the app disables it for them.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import torch

from .api import load_attack, load_defense, load_metric
from .evaluate import measures

#: what the slider means for the attacks whose budget is not an L-inf radius
_BUDGET_NOTES = {
    "madc": "MAD competition: eps bounds the RMSE to the clean image",
}


def live_session() -> bool:
    """True in a notebook a person is looking at (JupyterLab, Notebook, VS Code), False under
    papermill / nbclient or in a plain Python process: the widgets are only worth drawing there.

    A Jupyter server names the notebook in the kernel's ``JPY_SESSION_NAME``; VS Code sets
    ``__vsc_ipynb_file__``; papermill and nbclient set neither."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    if ip is None or not hasattr(ip, "kernel"):
        return False
    return bool(os.environ.get("JPY_SESSION_NAME")) or "__vsc_ipynb_file__" in ip.user_ns


@dataclass
class Comparison:
    """One state of the app: the three images and what the metric says of each."""

    image_id: str
    attack: str
    eps_255: float
    defense: str
    clean: torch.Tensor
    attacked: torch.Tensor
    purified: torch.Tensor
    scores: dict[str, float] = field(default_factory=dict)
    psnr_attacked: float = float("nan")
    psnr_purified: float = float("nan")
    #: the budget the attack ran with (None: it has none and ignored the slider)
    budget_255: float | None = None

    @property
    def changed(self) -> bool:
        """Whether the attack changed the image at all (AdvCF may return the clean image)."""
        return not torch.equal(self.attacked, self.clean)

    @property
    def moved(self) -> float:
        """The attack's score change, attacked - clean."""
        return self.scores["attacked"] - self.scores["clean"]

    @property
    def recovered(self) -> float:
        """Share of the attack's score change the purifier undid (1 = fully, 0 = not at all);
        NaN when the attack did not move the score (there is nothing to undo)."""
        if abs(self.moved) < 1e-12:
            return float("nan")
        return 1.0 - (self.scores["purified"] - self.scores["clean"]) / self.moved

    def attacked_caption(self, metric: str) -> str:
        if not self.changed:
            return "the attack did not change this image"
        return f"{metric} {self.scores['attacked']:.2f}, PSNR {self.psnr_attacked:.1f} dB"

    def purified_caption(self, metric: str) -> str:
        text = f"{metric} {self.scores['purified']:.2f}"
        if not self.changed:
            return text + " (nothing to undo)"
        if math.isnan(self.recovered):
            return text + " (the attack did not move the score)"
        return text + f", undid {self.recovered:.0%} of the change"


class CompareApp:
    """Clean / attacked / purified comparison for one metric over an image set.

    ``images`` is an :class:`iqalib.datasets.ImageSet` (or anything with ``.ids`` and
    ``.load(id)``); attacked images are cached per (image, attack, strength), purifiers per name.
    """

    def __init__(self, images, metric="brisque", *, attacks=("ifgsm",),
                 defenses=("identity", "flip", "jpeg", "gaussian-blur"), device="auto", seed=0):
        self.images = images
        self.metric = load_metric(metric, device=device) if isinstance(metric, str) else metric
        self.attacks = list(attacks)
        self.defenses = list(defenses)
        self.device = device
        self.seed = seed
        self._adv_cache: dict[tuple, torch.Tensor] = {}
        self._defense_cache: dict[str, object] = {}
        self._probes: dict[str, object] = {}
        self._score_cache: dict[tuple, float] = {}
        #: seconds the last widget redraw took (compute + figure), for the record
        self.last_redraw_s: float | None = None

    # -- the attack's budget -------------------------------------------------------------------
    def _probe(self, name: str):
        """The attack with its defaults (to read its settings)."""
        if name not in self._probes:
            self._probes[name] = load_attack(name, self.metric, seed=self.seed)
        return self._probes[name]

    def has_budget(self, name: str) -> bool:
        """Whether the slider changes ``name`` (it has a numeric ``eps``)."""
        probe = self._probe(name)
        return bool(getattr(probe, "has_eps", False)) and isinstance(
            probe.hparams.get("eps"), (int, float))

    def budget_note(self, name: str) -> str:
        """One line saying what the slider does for attack ``name``."""
        probe = self._probe(name)
        if not self.has_budget(name):
            return f"{name} has no eps budget: the slider does not apply"
        if name in _BUDGET_NOTES:
            return _BUDGET_NOTES[name]
        steps = probe.hparams.get("steps")
        if steps:
            return f"L-inf budget eps; {steps} steps of eps/{steps} (the study: 10/255, 1/255 steps)"
        return "the attack's eps budget"

    def _attack(self, name: str, eps_255: float):
        probe = self._probe(name)
        if not self.has_budget(name):
            return probe
        kwargs = {"eps": eps_255 / 255}
        if "alpha" in probe.hparams and probe.hparams.get("steps"):
            # tie the step to the budget: eps / steps is the study's 1/255 at eps = 10/255
            kwargs["alpha"] = eps_255 / 255 / probe.hparams["steps"]
        return load_attack(name, self.metric, seed=self.seed, **kwargs)

    def _defense(self, spec: str):
        if spec not in self._defense_cache:
            self._defense_cache[spec] = load_defense(spec, device=self.device)
        return self._defense_cache[spec]

    # -- one state -----------------------------------------------------------------------------
    def compute(self, image_id: str, attack: str, eps_255: float, defense: str) -> Comparison:
        clean = self.images.load(image_id).to(self.metric.device)
        budget = float(eps_255) if self.has_budget(attack) else None
        key = (image_id, attack, budget)
        if key not in self._adv_cache:
            self._adv_cache[key] = self._attack(attack, float(eps_255))(clean)
        attacked = self._adv_cache[key]
        purified = self._defense(defense)(attacked)
        # a purifier change only needs the purified image scored: the other two are cached
        for name, k, x in (("clean", (image_id,), clean), ("attacked", key, attacked)):
            if (name, k) not in self._score_cache:
                self._score_cache[(name, k)] = float(self.metric.score(x)[0])
        scores = {"clean": self._score_cache[("clean", (image_id,))],
                  "attacked": self._score_cache[("attacked", key)],
                  "purified": float(self.metric.score(purified)[0])}
        psnr_att = float(measures.psnr(attacked, clean)[0])
        psnr_pur = float(measures.psnr(measures.match_size(purified, clean), clean)[0])
        return Comparison(image_id, attack, float(eps_255), defense, clean.cpu(), attacked.cpu(),
                          purified.cpu(), scores, psnr_att, psnr_pur, budget)

    def figure(self, c: Comparison):
        """Four panels: clean, attacked, purified, and the amplified attacked-clean difference."""
        import matplotlib.pyplot as plt

        from .viz import RC, _hwc, _image_axis, difference_map

        name = self.metric.name
        budget = f", eps {c.budget_255:g}/255" if c.budget_255 is not None else ""
        diff_title = "|attacked - clean| x10" if c.changed else "no difference"
        panels = [("clean", c.clean, f"{name} {c.scores['clean']:.2f}"),
                  (f"attacked ({c.attack}{budget})", c.attacked, c.attacked_caption(name)),
                  (f"purified ({c.defense})", c.purified, c.purified_caption(name)),
                  (diff_title, difference_map(c.attacked, c.clean), "")]
        lower = "lower is better" if self.metric.lower_better else "higher is better"
        with plt.rc_context(RC):
            fig, axes = plt.subplots(1, 4, figsize=(13, 3.7))
            for ax, (title, img, text) in zip(axes, panels):
                ax.imshow(_hwc(img))
                ax.set_title(title, fontsize=9)
                ax.set_xlabel(text, fontsize=8)
                _image_axis(ax)
            fig.suptitle(f"{c.image_id}: {name} ({lower})", fontsize=10)
            fig.tight_layout()
        return fig

    # -- the widgets ---------------------------------------------------------------------------
    def widget(self):
        """The ipywidgets app: dropdowns for image / attack / purifier, a strength slider that is
        disabled for attacks without a budget, and a status line that says when it is busy."""
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from IPython.display import display

        image = W.Dropdown(options=list(self.images.ids), description="image")
        attack = W.Dropdown(options=self.attacks, description="attack")
        eps = W.FloatSlider(value=10, min=1, max=32, step=1, description="eps (/255)",
                            continuous_update=False)
        defense = W.Dropdown(options=self.defenses, description="purifier")
        status = W.HTML(value="")
        out = W.Output()
        controls = (image, attack, eps, defense)

        def sync_slider():
            budget = self.has_budget(attack.value)
            eps.disabled = not budget
            eps.description = "eps (/255)" if budget else "no budget"
            eps.tooltip = self.budget_note(attack.value)

        def redraw(*_):
            t0 = time.perf_counter()
            sync_slider()
            for w in controls:
                w.disabled = True
            status.value = (f"<i>computing: {attack.value} on {image.value}, "
                            f"purifier {defense.value} ...</i>")
            try:
                c = self.compute(image.value, attack.value, eps.value, defense.value)
                fig = self.figure(c)
                with out:
                    out.clear_output(wait=True)
                    display(fig)
                plt.close(fig)
                self.last_redraw_s = time.perf_counter() - t0
                status.value = (f"drawn in {self.last_redraw_s:.1f} s. "
                                f"{self.budget_note(attack.value)}.")
            except Exception as e:  # show it where the user looks, then keep the app usable
                status.value = f"<b>failed:</b> {type(e).__name__}: {e}"
                raise
            finally:
                for w in controls:
                    w.disabled = False
                sync_slider()

        for w in controls:
            w.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([image, attack]), W.HBox([eps, defense]), status, out])
