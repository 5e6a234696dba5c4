"""The interactive comparison: pick an image, an attack, its strength and a purifier, and see
clean / attacked / purified side by side with the metric's scores and a difference view.

The logic (:meth:`CompareApp.compute`) is separate from the widgets so that tests can drive
the callbacks without a browser; :meth:`CompareApp.widget` wires it to ipywidgets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .api import load_attack, load_defense, load_metric


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

    @property
    def recovered(self) -> float:
        """Share of the attack's score change the purifier undid (1 = fully, 0 = not at all)."""
        moved = self.scores["attacked"] - self.scores["clean"]
        if abs(moved) < 1e-12:
            return float("nan")
        return 1.0 - (self.scores["purified"] - self.scores["clean"]) / moved


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 150.0 if mse == 0 else float(10 * torch.log10(torch.tensor(1.0 / mse)))


class CompareApp:
    """Clean / attacked / purified comparison for one metric over an image set.

    ``images`` is an :class:`iqalib.datasets.ImageSet` (or anything with ``.ids`` and
    ``.load(id)``); attacked images are cached per (image, attack, strength).
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

    def _attack(self, name: str, eps_255: float):
        probe = load_attack(name, self.metric, seed=self.seed)
        if getattr(probe, "has_eps", False) and "eps" in probe.hparams:
            return load_attack(name, self.metric, eps=eps_255 / 255, seed=self.seed)
        return probe

    def _defense(self, spec: str):
        if spec not in self._defense_cache:
            self._defense_cache[spec] = load_defense(spec, device=self.device)
        return self._defense_cache[spec]

    def compute(self, image_id: str, attack: str, eps_255: float, defense: str) -> Comparison:
        clean = self.images.load(image_id).to(self.metric.device)
        key = (image_id, attack, float(eps_255))
        if key not in self._adv_cache:
            self._adv_cache[key] = self._attack(attack, eps_255)(clean)
        attacked = self._adv_cache[key]
        purified = self._defense(defense)(attacked)
        scores = {name: float(self.metric.score(x)[0])
                  for name, x in (("clean", clean), ("attacked", attacked), ("purified", purified))}
        same_size = purified.shape == clean.shape
        return Comparison(image_id, attack, float(eps_255), defense, clean.cpu(), attacked.cpu(),
                          purified.cpu(), scores, _psnr(attacked, clean),
                          _psnr(purified, clean) if same_size else float("nan"))

    def figure(self, c: Comparison):
        """Four panels: clean, attacked, purified, and the amplified attacked-clean difference."""
        import matplotlib.pyplot as plt

        from .viz import _hwc, difference_map

        fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
        panels = [("clean", c.clean, f"{c.scores['clean']:.2f}"),
                  (f"attacked ({c.attack})", c.attacked,
                   f"{c.scores['attacked']:.2f}, PSNR {c.psnr_attacked:.1f} dB"),
                  (f"purified ({c.defense})", c.purified,
                   f"{c.scores['purified']:.2f}, recovered {c.recovered:.0%}"),
                  ("|attacked - clean| x10", difference_map(c.attacked, c.clean), "")]
        lower = " (lower is better)" if self.metric.lower_better else ""
        for ax, (title, img, label) in zip(axes, panels):
            ax.imshow(_hwc(img))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(f"{self.metric.name} {label}" if label else "", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{c.image_id}: {self.metric.name}{lower}", fontsize=11)
        fig.tight_layout()
        return fig

    def widget(self):
        """The ipywidgets app: dropdowns for image / attack / purifier, a strength slider."""
        import ipywidgets as W
        import matplotlib.pyplot as plt
        from IPython.display import display

        image = W.Dropdown(options=list(self.images.ids), description="image")
        attack = W.Dropdown(options=self.attacks, description="attack")
        eps = W.FloatSlider(value=10, min=1, max=32, step=1, description="eps (/255)",
                            continuous_update=False)
        defense = W.Dropdown(options=self.defenses, description="purifier")
        out = W.Output()

        def redraw(*_):
            with out:
                out.clear_output(wait=True)
                fig = self.figure(self.compute(image.value, attack.value, eps.value, defense.value))
                display(fig)
                plt.close(fig)

        for w in (image, attack, eps, defense):
            w.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([image, attack]), W.HBox([eps, defense]), out])
