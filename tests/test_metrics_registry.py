"""Every registered metric loads by name: a [B] finite score, or a MissingWeightsError."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.errors import MissingWeightsError, UnknownNameError
from iqalib.metrics.base import IQAMetric

#: keywords that keep a metric from slow first-use work inside a unit test
#: (effnet-iqa would otherwise train its head for minutes when no trained head is cached)
FAST_KWARGS = {"effnet-iqa": {"train_if_missing": False},
               "smoothed": {"n": 4}}     # the default 100 noise draws cost ~30 s here
#: metrics that need checkpoints nothing installable ships: must fail with MissingWeightsError
NEEDS_DOWNLOAD = {"linearity", "spaq", "metaiqa"}


@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("IQALIB_WEIGHTS", str(tmp_path))
    return tmp_path


def test_our_metrics_are_registered():
    names = iqalib.list_metrics()
    for n in ("brisque", "niqe", "piqe", "linearity", "spaq", "metaiqa"):
        assert n in names
    # aliases resolve
    from iqalib.registry import METRICS

    assert METRICS.entry("spaq-baseline").name == "spaq"
    assert METRICS.entry("linearityiqa").name == "linearity"
    assert METRICS.entry("meta-iqa").name == "metaiqa"


@pytest.mark.parametrize("name", iqalib.list_metrics())
def test_every_metric_scores_or_names_missing_weights(name, empty_weights, photos128):
    try:
        metric = iqalib.load_metric(name, device="cpu", **FAST_KWARGS.get(name, {}))
    except MissingWeightsError as e:
        # the message must say what to do (a make target, a download, a command to run)
        msg = str(e).lower()
        assert any(w in msg for w in ("make weights", "download", "run ")), str(e)
        return
    assert name not in NEEDS_DOWNLOAD, f"{name} loaded although no weights are installed"
    assert isinstance(metric, IQAMetric) and not metric.training
    lo, hi = metric.score_range
    assert lo < hi and isinstance(metric.lower_better, bool)
    with torch.no_grad():
        s = metric(photos128[:2])
    assert s.shape == (2,) and torch.isfinite(s).all(), (name, s)


@pytest.mark.parametrize("name", sorted(NEEDS_DOWNLOAD))
def test_paper_metrics_name_their_make_target(name, empty_weights):
    from iqalib.registry import METRICS

    with pytest.raises(MissingWeightsError, match="make weights WEIGHTS="):
        METRICS.create(name)


def test_load_metric_falls_back_to_pyiqa_and_did_you_mean():
    m = iqalib.load_metric("entropy", device="cpu")
    assert m.name == "entropy"
    with pytest.raises(UnknownNameError, match="Did you mean 'niqe'"):
        iqalib.load_metric("niqee")


# the MSU group's normalisation ranges, copied from their metrics/defences/utils/bounds.json
# (msu-video-group/adversarial-defenses-for-iqa; "low" is the worst score, "high" the best):
# every attack's loss divides the score by |high - low|, and so do the normalised measures
MSU_BOUNDS_JSON = {"linearity": (25.780681610107422, 83.22696685791016),
                   "spaq": (21.749107360839844, 77.75585174560547),
                   "meta-iqa": (0, 1),
                   "brisque": (95.60858154296875, -10.61309814453125),
                   "niqe": (28.737131730780796, 1.4140845773108388)}


def _declared_range(name: str):
    """(score_range, lower_better) without building the big networks where a class says it."""
    from iqalib.metrics.linearity import Linearity
    from iqalib.metrics.spaq import SPAQBaseline

    if name in ("linearity", "spaq"):
        cls = Linearity if name == "linearity" else SPAQBaseline
        return cls.score_range, cls.lower_better
    import iqalib

    m = iqalib.load_metric(name, **({"pretrained": False} if name == "metaiqa" else {}))
    return m.score_range, m.lower_better


@pytest.mark.parametrize("ours,theirs", [("linearity", "linearity"), ("spaq", "spaq"),
                                         ("metaiqa", "meta-iqa"), ("brisque", "brisque"),
                                         ("niqe", "niqe")])
def test_score_ranges_are_the_msu_bounds(ours, theirs):
    score_range, lower_better = _declared_range(ours)
    low, high = MSU_BOUNDS_JSON[theirs]
    assert score_range == (min(low, high), max(low, high))
    assert lower_better == (low > high)
