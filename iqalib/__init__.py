"""iqalib: adversarial purification for no-reference image-quality metrics.

Images are float tensors ``[B,3,H,W]`` RGB in [0,1]; every score is a tensor ``[B]``.

>>> import iqalib
>>> metric = iqalib.load_metric("brisque")
>>> attack = iqalib.load_attack("ifgsm", metric)
>>> defense = iqalib.load_defense("jpeg")            # or "jpeg:q30", "diffpure+unsharp"
"""
from .allocator import tune_malloc

# before any tensor work: keep freed tensor memory in the process (iqalib.allocator says why)
tune_malloc()

from .api import (list_attacks, list_defenses, list_metrics, load_attack, load_defense,
                  load_metric)
from .attacks.base import Attack
from .defenses.base import Compose, Defense
from .device import resolve_device, seed_everything
from .errors import DownloadError, ImageError, IqalibError, MissingWeightsError, UnknownNameError
from .metrics.base import IQAMetric, check_images
from .registry import ATTACKS, DEFENSES, METRICS, UnknownKeywordError

__version__ = "0.1.0"


def run_grid(*args, **kwargs):
    """Run the metric x attack x defense grid; see :func:`iqalib.evaluate.grid.run_grid`."""
    from .evaluate.grid import run_grid as _run_grid

    return _run_grid(*args, **kwargs)


__all__ = [
    "load_metric", "load_attack", "load_defense", "list_metrics", "list_attacks",
    "list_defenses", "run_grid", "resolve_device", "seed_everything", "check_images",
    # extending: register your own components (see the README's "Extending")
    "METRICS", "ATTACKS", "DEFENSES", "IQAMetric", "Attack", "Defense", "Compose",
    "IqalibError", "ImageError", "MissingWeightsError", "DownloadError", "UnknownNameError",
    "UnknownKeywordError",
]
