"""The metric contract: an ``nn.Module`` mapping ``[B,3,H,W]`` RGB in [0,1] to scores ``[B]``."""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..errors import ImageError

#: how far outside [0,1] a value may lie before it is refused (float rounding, not data)
RANGE_TOLERANCE = 1e-3

_INPUTS_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "iqalib_inputs_checked", default=False)


@contextlib.contextmanager
def inputs_checked() -> Iterator[None]:
    """Within this block :func:`check_batch` checks type, shape and dtype only, not finiteness.

    ``torch.isfinite(x).all()`` in a metric's forward is a host read: on a GPU every attack
    step would wait for the device. An attack checks its input once, enters this block for its
    loop, and checks its result once after it (:meth:`iqalib.attacks.base.Attack.__call__`)."""
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def check_batch(x: Tensor, what: str = "input") -> Tensor:
    """Validate an image batch: float, [B,3,H,W], finite. Values are not clipped silently.

    This is the check a metric's ``forward`` may run on intermediate images; public entry
    points (scoring, attacking, purifying, the grid) use :func:`check_images`, which also
    checks the [0,1] range."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor [B,3,H,W] in [0,1], got {type(x).__name__}")
    if x.ndim == 3:
        raise ImageError(f"{what} has shape {tuple(x.shape)}: add a batch dimension (x[None])")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageError(f"{what} must be [B,3,H,W] RGB, got shape {tuple(x.shape)}; "
                         "use iqalib.images.load_image to convert grayscale/RGBA files")
    if not x.is_floating_point():
        hint = ("divide by 255 (x.float() / 255)" if x.dtype == torch.uint8
                else "convert it with x.float() and scale it to [0,1]")
        raise ImageError(f"{what} must be a float tensor in [0,1], got {x.dtype}; {hint}")
    if not _INPUTS_CHECKED.get() and not torch.isfinite(x).all():
        raise ImageError(f"{what} contains NaN or Inf values")
    return x


def check_images(x: Tensor, what: str = "input") -> Tensor:
    """The input contract of every public entry point: :func:`check_batch` (float,
    ``[B,3,H,W]``, finite) and values in [0,1] (within :data:`RANGE_TOLERANCE`).

    One message says what to do: 0..255 values are to be divided by 255; other values outside
    [0,1] (a normalised tensor, an overshooting filter) are to be clamped or un-normalised."""
    check_batch(x, what)
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            if hi > 2 and lo >= -RANGE_TOLERANCE:
                hint = "it looks like 0..255 values: divide by 255"
            else:
                hint = ("undo any mean/std normalisation, or clamp with x.clamp(0, 1) if the "
                        "overshoot is expected")
            raise ImageError(f"{what} has values in [{lo:.4g}, {hi:.4g}], outside [0,1]; {hint}")
    return x


class IQAMetric(nn.Module):
    """A differentiable no-reference image-quality metric.

    Subclasses set ``name``, ``lower_better`` and ``score_range`` (the normalisation range
    the paper's group uses) and implement :meth:`forward`, returning a ``[B]`` tensor.
    The caller decides about ``torch.no_grad``.
    """

    name: str = "metric"
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    #: catalogue names of the checkpoints this metric needs (see iqalib.weights)
    weights: tuple[str, ...] = ()

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is better."""
        return -1.0 if self.lower_better else 1.0

    @property
    def range_width(self) -> float:
        lo, hi = self.score_range
        return float(hi - lo)

    def normalise(self, scores: Tensor) -> Tensor:
        """Min-max scale scores by :attr:`score_range` (1 = best end when higher is better)."""
        lo, _ = self.score_range
        return (scores - lo) / self.range_width

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def score(self, x: Tensor, batch_size: int | str = 8, *,
              allow_nonfinite: bool = True) -> Tensor:
        """Scores of a batch without gradients, in chunks; returned on the CPU as float64.

        Checks the input contract (:func:`check_images`). NaN/Inf scores are returned as
        they are unless ``allow_nonfinite=False``, which raises
        :class:`~iqalib.evaluate.run.NonFiniteScoreError` naming the images (the grid does)."""
        from ..evaluate.run import score  # the one chunked loop (lazy: evaluate sits above)

        check_images(x, f"{self.name} input")
        return torch.from_numpy(score(self, x, batch_size=batch_size,
                                      allow_nonfinite=allow_nonfinite))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, lower_better={self.lower_better}, "
                f"score_range={self.score_range}")
