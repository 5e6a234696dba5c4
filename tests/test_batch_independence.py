"""A score is a function of its own image: the same image scored alone, in its batch, and
packed with other images (as the grid packs the clean and purified images of a chunk into one
forward pass, iqalib.evaluate.grid._score_many) agrees to float32 noise.

Bit-identical it is not: float32 kernels take other paths for other batch sizes, and BRISQUE's
moment-matching table lookup can turn that into about 1e-5 of its range (measured on the sample
photos). A metric that leaked information between batch-mates (batch norm in training mode,
statistics over the batch) would miss by orders of magnitude more, and that is what this
catches. Rows of the grid are keyed by batch size, so a rerun with the same settings is exact.
"""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.registry import METRICS

OFFLINE = [n for n in iqalib.list_metrics() if "offline" in METRICS.entry(n).tags]
#: tolerated difference, as a fraction of the metric's score range
TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def test_there_are_offline_metrics():
    assert {"effnet-iqa", "brisque"} <= set(OFFLINE)


@pytest.mark.parametrize("name", OFFLINE)
def test_score_does_not_depend_on_batch_mates(name, photos128):
    metric = iqalib.load_metric(name, device="cpu")
    x = photos128[:2]
    others = torch.cat([x.flip(-1), x.flip(-2), 1 - x])
    with torch.no_grad():
        alone = torch.cat([metric(x[i:i + 1]) for i in range(len(x))])
        together = metric(x)
        packed = metric(torch.cat([others[:1], x, others[1:]]))[1:3]
    lo, hi = metric.score_range
    tol = TOLERANCE * (hi - lo)
    assert torch.isfinite(alone).all()
    assert (together - alone).abs().max() <= tol, (name, alone, together)
    assert (packed - alone).abs().max() <= tol, (name, alone, packed)
