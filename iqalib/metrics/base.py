"""The metric contract: an ``nn.Module`` mapping ``[B,3,H,W]`` RGB in [0,1] to scores ``[B]``."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ImageError


def check_batch(x: Tensor, what: str = "input") -> Tensor:
    """Validate an image batch: float, [B,3,H,W], finite. Values are not clipped silently."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a torch.Tensor [B,3,H,W] in [0,1], got {type(x).__name__}")
    if x.ndim == 3:
        raise ImageError(f"{what} has shape {tuple(x.shape)}: add a batch dimension (x[None])")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageError(f"{what} must be [B,3,H,W] RGB, got shape {tuple(x.shape)}; "
                         "use iqalib.images.load_image to convert grayscale/RGBA files")
    if not x.is_floating_point():
        raise ImageError(f"{what} must be a float tensor in [0,1], got {x.dtype}; divide by 255")
    if not torch.isfinite(x).all():
        raise ImageError(f"{what} contains NaN or Inf values")
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

    @torch.no_grad()
    def score(self, x: Tensor, batch_size: int = 8) -> Tensor:
        """Scores of a batch without gradients, in chunks; returned on the CPU as float64."""
        check_batch(x)
        out = [self(x[i:i + batch_size].to(self.device)).detach().double().cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, lower_better={self.lower_better}, "
                f"score_range={self.score_range}")
