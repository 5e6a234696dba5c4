"""pyiqa's no-reference metrics behind the :class:`~iqalib.metrics.base.IQAMetric` contract.

pyiqa (Chen et al., "TOPIQ" / IQA-PyTorch, https://github.com/chaofengc/IQA-PyTorch) builds
every metric through ``pyiqa.create_metric``. We always build it with ``as_loss=True,
loss_reduction='none'`` so the score is differentiable and keeps one value per image (the
default reduction would average the batch away), and we reshape pyiqa's ``[B]`` / ``[B,1]``
outputs to ``[B]``.

Three pyiqa habits are fixed here:

* **Devices.** ``InferenceModel`` remembers the device it was built on in a plain attribute
  and, when built on a GPU, keeps its ``dummy_param`` (which decides where inputs go) outside
  the module's parameters, so ``.to()`` cannot move it. Some networks (BRISQUE, NIQE) also
  hold their model tensors as plain attributes. We always build on the CPU, where
  ``dummy_param`` is a real parameter, and :meth:`PyiqaMetric._apply` moves plain tensor
  attributes too, so ``metric.to(device)`` moves everything.
* **Gradient mode.** ``as_loss=True`` makes pyiqa switch gradients *on* inside its forward,
  even under ``torch.no_grad()``; we follow the caller's grad mode instead.
* **Downloads.** pyiqa fetches weights from the internet while constructing a metric. By
  default (``allow_download=False``) we intercept the fetch and raise
  :class:`~iqalib.errors.MissingWeightsError` naming the file, the URL and pyiqa's cache
  folder, instead of a network traceback. Files already in pyiqa's cache load offline.

BRISQUE and NIQE are registered with offline parameters (see :mod:`iqalib.metrics.classical`);
PIQE needs no parameters. Any other pyiqa NR name is reachable through
:func:`create_pyiqa_metric` (``iqalib.load_metric`` falls back to it).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import Tensor

from ..errors import ImageError, IqalibError, MissingWeightsError, UnknownNameError
from ..registry import METRICS, Registry, _norm
from .base import IQAMetric, check_batch

#: pyiqa "NR" entries that score a set of images (or need text), not one image each
_NOT_PER_IMAGE = frozenset({"fid", "fid_dinov2", "sfid", "inception_score", "clipscore"})
#: pyiqa metrics whose score is piecewise constant in the pixels (rounding, histograms,
#: thresholds): their gradient is zero, so gradient attacks cannot move them
NO_GRADIENT = frozenset({"piqe", "entropy"})
#: smallest side pyiqa's implementation accepts (NIQE cuts 96x96 blocks): a clear error
#: instead of a padding traceback
MIN_SIDE = {"niqe": 96, "niqe_matlab": 96}
#: range used when pyiqa states none or an open-ended one ("0, ~"): min-max scaling needs
#: finite ends, and (0, 1) leaves scores unscaled; pass ``score_range=`` to choose another
FALLBACK_RANGE = (0.0, 1.0)


class FullReferenceMetricError(IqalibError, ValueError):
    """A full-reference pyiqa metric was asked for; iqalib attacks no-reference metrics."""


class _DownloadBlocked(Exception):
    def __init__(self, url: str, dest: str):
        super().__init__(url)
        self.url, self.dest = url, dest


def pyiqa_nr_names() -> list[str]:
    """pyiqa's per-image no-reference metric names (pyiqa spelling)."""
    import pyiqa

    return [n for n in pyiqa.list_models(metric_mode="NR") if n not in _NOT_PER_IMAGE]


def _resolve_pyiqa_name(name: str) -> str | None:
    """pyiqa's spelling of ``name`` (``topiq-nr`` -> ``topiq_nr``), or None if unknown."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    if name in DEFAULT_CONFIGS:
        return name
    table = {_norm(k): k for k in DEFAULT_CONFIGS}
    return table.get(_norm(name))


def parse_score_range(text: Any) -> tuple[float, float] | None:
    """pyiqa's ``score_range`` string (``'~0, ~150'``) as floats; None when an end is open."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        lo, hi = text
        return float(lo), float(hi)
    ends = [p.strip().lstrip("~").strip() for p in str(text).split(",")]
    if len(ends) != 2 or not all(ends):
        return None
    try:
        return float(ends[0]), float(ends[1])
    except ValueError:
        return None


@contextlib.contextmanager
def _no_downloads(enabled: bool):
    """Make every pyiqa / torch.hub download raise :class:`_DownloadBlocked` instead."""
    if not enabled:
        yield
        return
    import torch.hub
    from pyiqa.utils import download_util

    def blocked(url, dst, *args, **kwargs):
        raise _DownloadBlocked(url, str(dst))

    saved = (download_util.download_url_to_file, torch.hub.download_url_to_file)
    download_util.download_url_to_file = blocked
    torch.hub.download_url_to_file = blocked
    # timm / transformers backbones fetch through huggingface_hub: its offline switch makes
    # it answer from the local cache at once instead of retrying the network for a minute
    try:
        from huggingface_hub import constants as hf_constants
    except ImportError:  # pragma: no cover - huggingface_hub is a diffusers dependency
        hf_constants = None
    hf_saved = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        download_util.download_url_to_file, torch.hub.download_url_to_file = saved
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = hf_saved


def _pyiqa_cache_hint() -> str:
    try:
        from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

        return DEFAULT_CACHE_DIR
    except (ImportError, AttributeError):  # pragma: no cover - pyiqa layout changed
        return "~/.cache/torch/hub/pyiqa"


class PyiqaMetric(IQAMetric):
    """A pyiqa no-reference metric as a differentiable :class:`IQAMetric` returning ``[B]``.

    Args:
        pyiqa_name: pyiqa's metric name (``pyiqa.list_models(metric_mode='NR')``).
        name: our name for it (defaults to ``pyiqa_name``).
        pretrained_model_path: a local weight / parameter file handed to pyiqa's network.
        score_range: overrides pyiqa's ``score_range``; default pyiqa's, else ``(0, 1)``.
        allow_download: let pyiqa fetch missing weights (needs the internet). Default False:
            a needed download raises :class:`MissingWeightsError` instead.
        device: where to put the metric (``None``: stay on the CPU; ``"auto"`` allowed).
        compute_dtype: cast inputs to this dtype before pyiqa (e.g. ``torch.float64``).
            Default None keeps the input's dtype, which is how pyiqa published its
            calibration scores. Note: pyiqa's float32 BRISQUE computes a local variance as
            E[x^2] - E[x]^2 on 0..255 values, so the same image can score ~0.7% differently
            depending on its batch mates; float64 removes that jitter (scores then differ
            from the float32 ones by up to ~4% on heavily distorted images).
        **options: pyiqa network options (e.g. ``pretrained=False`` for a random init).
    """

    def __init__(self, pyiqa_name: str, *, name: str | None = None,
                 pretrained_model_path: str | os.PathLike | None = None,
                 score_range: tuple[float, float] | None = None,
                 allow_download: bool = False, device: Any = None,
                 compute_dtype: torch.dtype | None = None, **options: Any):
        super().__init__()
        import pyiqa
        from pyiqa.default_model_configs import DEFAULT_CONFIGS

        resolved = _resolve_pyiqa_name(pyiqa_name)
        if resolved is None:
            raise UnknownNameError(f"pyiqa has no metric {pyiqa_name!r}")
        cfg = DEFAULT_CONFIGS[resolved]
        if cfg.get("metric_mode") == "FR":
            raise FullReferenceMetricError(
                f"{resolved!r} is a full-reference metric (it needs a reference image); iqalib "
                "attacks no-reference metrics: pick one of pyiqa.list_models(metric_mode='NR')")
        if resolved in _NOT_PER_IMAGE:
            raise FullReferenceMetricError(
                f"{resolved!r} scores a set of images (or needs a caption), not one image")
        self.pyiqa_name = resolved
        self.name = name or resolved
        if pretrained_model_path is not None:
            options["pretrained_model_path"] = str(pretrained_model_path)
        # built on the CPU so that pyiqa's dummy_param is a registered parameter (see module doc)
        try:
            with _no_downloads(not allow_download):
                inner = pyiqa.create_metric(resolved, as_loss=True, loss_reduction="none",
                                            device=torch.device("cpu"), **options)
        except _DownloadBlocked as e:
            raise MissingWeightsError(
                f"pyiqa's {resolved!r} needs {os.path.basename(e.url)!r}, which is not "
                f"downloaded (url: {e.url}). Put the file at {e.dest} (pyiqa's cache, "
                f"{_pyiqa_cache_hint()}), pass pretrained_model_path=..., or create the metric "
                "with allow_download=True on a machine with internet access.") from None
        except OSError as e:  # URLError, requests / huggingface_hub connection errors
            raise MissingWeightsError(
                f"pyiqa's {resolved!r} could not fetch its weights ({type(e).__name__}: {e}). "
                f"Download them with internet access into {_pyiqa_cache_hint()} or pass "
                "pretrained_model_path=...") from e
        self.inner = inner.eval()
        # frozen: attacks differentiate w.r.t. the image, never the metric's weights (this
        # halves the backward cost); call .requires_grad_(True) to fine-tune a metric
        self.inner.requires_grad_(False)
        self.lower_better = bool(cfg.get("lower_better", False))
        self.score_range = (tuple(float(v) for v in score_range) if score_range is not None
                            else parse_score_range(cfg.get("score_range")) or FALLBACK_RANGE)
        self.options = dict(options)
        #: False where the gradient is identically zero (see NO_GRADIENT)
        self.differentiable = resolved not in NO_GRADIENT
        self.compute_dtype = compute_dtype
        if device is not None:
            from ..device import resolve_device

            self.to(resolve_device(device))

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        # pyiqa networks keep some tensors as plain attributes (BRISQUE's support vectors,
        # NIQE's Gaussian): follow the device move but keep their dtype (NIQE needs float64)
        for mod in self.modules():
            for key, val in list(vars(mod).items()):
                if torch.is_tensor(val) and not isinstance(val, torch.nn.Parameter):
                    target = fn(val[:0] if val.ndim else val).device
                    if val.device != target:
                        setattr(mod, key, val.to(target))
        dev = self.device
        if hasattr(self.inner, "device"):
            self.inner.device = dev
        return out

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x)
        need = MIN_SIDE.get(self.pyiqa_name, 1)
        if min(x.shape[-2:]) < need:
            raise ImageError(f"{self.name} needs images of at least {need}x{need} pixels, got "
                             f"{tuple(x.shape[-2:])}; upscale or use a larger crop")
        # pyiqa's as_loss forces grad on; honour the caller's torch.no_grad() instead
        self.inner.as_loss = torch.is_grad_enabled()
        try:
            out = self.inner(x if self.compute_dtype is None else x.to(self.compute_dtype))
        finally:
            self.inner.as_loss = True
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.reshape(x.shape[0], -1)
        if out.shape[1] != 1:
            raise RuntimeError(f"pyiqa {self.pyiqa_name!r} returned {out.shape[1]} values per "
                               "image; expected one score")
        # NIQE computes in float64: hand back the input's dtype like every other metric
        return out[:, 0].to(x.dtype)

    def extra_repr(self) -> str:
        return f"pyiqa_name={self.pyiqa_name!r}, " + super().extra_repr()


def create_pyiqa_metric(name: str, unknown: Registry = METRICS, **kwargs: Any) -> PyiqaMetric:
    """Any pyiqa per-image NR metric by name (pyiqa or our spelling: ``topiq-nr``).

    Full-reference names raise :class:`FullReferenceMetricError`; unknown names raise
    :class:`~iqalib.errors.UnknownNameError` with close matches among our names and pyiqa's.
    """
    resolved = _resolve_pyiqa_name(name)
    if resolved is None:
        ours = list(unknown._lookup) if hasattr(unknown, "_lookup") else list(unknown)
        theirs = [_norm(n) for n in pyiqa_nr_names()]
        msg = unknown._unknown_message(name, ours + theirs)
        raise UnknownNameError(f"{msg} pyiqa also provides: {', '.join(sorted(theirs))}.")
    return PyiqaMetric(resolved, **kwargs)


# -- the classical metrics we register, all offline ------------------------------------
#: the normalisation ranges of the MSU group (``metrics/defences/utils/bounds.json`` of
#: msu-video-group/adversarial-defenses-for-iqa: the worst and best scores they observed), used
#: in the attacks' loss and the normalised measures; pyiqa's nominal ranges are (0, 150) and
#: (0, 100)
MSU_BOUNDS = {"brisque": (-10.61309814453125, 95.60858154296875),
              "niqe": (1.4140845773108388, 28.737131730780796)}


@METRICS.register("brisque", aliases=["brisque-live", "pyiqa-brisque"],
                  tags=("classical", "pyiqa", "offline"))
def brisque(**kwargs: Any) -> PyiqaMetric:
    """BRISQUE (Mittal et al., IEEE TIP 2012) via pyiqa with the LIVE SVR model; lower is better."""
    from .classical import brisque_model_path

    kwargs.setdefault("pretrained_model_path", brisque_model_path())
    kwargs.setdefault("score_range", MSU_BOUNDS["brisque"])
    return PyiqaMetric("brisque", name="brisque", **kwargs)


@METRICS.register("niqe", aliases=["pyiqa-niqe"], tags=("classical", "pyiqa", "offline"))
def niqe(**kwargs: Any) -> PyiqaMetric:
    """NIQE (Mittal et al., IEEE SPL 2013) via pyiqa with the pristine model; lower is better."""
    from .classical import niqe_model_path

    kwargs.setdefault("pretrained_model_path", niqe_model_path())
    kwargs.setdefault("score_range", MSU_BOUNDS["niqe"])
    return PyiqaMetric("niqe", name="niqe", **kwargs)


@METRICS.register("piqe", aliases=["pyiqa-piqe"],
                  tags=("classical", "pyiqa", "offline", "zero-gradient"))
def piqe(**kwargs: Any) -> PyiqaMetric:
    """PIQE (Venkatanath et al., NCC 2015) via pyiqa; lower is better; zero gradient.

    pyiqa's PIQE rounds the luma to 8 bits and counts thresholded blocks, so its gradient is
    zero everywhere (``metric.differentiable`` is False): use it to score, not to attack.
    """
    return PyiqaMetric("piqe", name="piqe", **kwargs)
