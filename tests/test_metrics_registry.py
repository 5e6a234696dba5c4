"""Every registered metric loads by name: a [B] finite score, or a MissingWeightsError."""
from __future__ import annotations

import pytest
import torch

import iqalib
from iqalib.errors import MissingWeightsError, UnknownNameError
from iqalib.metrics.base import IQAMetric

#: keywords that keep a metric from slow first-use work inside a unit test
#: (effnet-iqa would otherwise train its head for minutes when no trained head is cached)
FAST_KWARGS = {"effnet-iqa": {"train_if_missing": False}}
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
