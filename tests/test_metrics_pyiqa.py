"""The pyiqa adapter: [B] scores, grad mode, devices, names, and no silent downloads."""
from __future__ import annotations

import pyiqa
import pytest
import torch

from iqalib.errors import MissingWeightsError, UnknownNameError
from iqalib.metrics import create_metric
from iqalib.metrics.pyiqa_adapter import (
    FullReferenceMetricError,
    PyiqaMetric,
    create_pyiqa_metric,
    parse_score_range,
    pyiqa_nr_names,
)


@pytest.fixture
def no_pyiqa_cache(tmp_path, monkeypatch):
    """An empty pyiqa download cache, so a metric with weights must try to download."""
    from pyiqa.utils import download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_piqe_matches_pyiqa_and_returns_b(photos64):
    ours = create_metric("piqe")
    ref = pyiqa.create_metric("piqe", device="cpu")  # pyiqa's plain inference path
    with torch.no_grad():
        s = ours(photos64)
        r = ref(photos64)
    assert s.shape == (3,)
    torch.testing.assert_close(s, r.reshape(-1).to(s.dtype))
    assert ours.lower_better is True and ours.score_range == (0.0, 100.0)
    assert ours.differentiable is False  # pyiqa's PIQE rounds to 8 bits


def test_any_pyiqa_nr_name_without_weights(photos64):
    m = create_metric("entropy")  # not registered by us: reached through the adapter
    assert isinstance(m, PyiqaMetric) and m.score_range == (0.0, 8.0)
    with torch.no_grad():
        s = m(photos64)
    assert s.shape == (3,) and torch.isfinite(s).all() and (s > 0).all() and (s <= 8).all()


def test_random_init_pyiqa_arch_grad_and_shape(photos64):
    # wadiqam_nr builds offline with pretrained=False; pyiqa returns [B, 1] for it
    m = create_pyiqa_metric("wadiqam-nr", pretrained=False)  # our spelling of wadiqam_nr
    x = photos64[:2].clone().requires_grad_(True)
    s = m(x)
    assert s.shape == (2,)
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_no_grad_is_honoured(photos64):
    m = create_metric("brisque")
    x = photos64[:1].clone().requires_grad_(True)
    with torch.no_grad():
        s = m(x)
    assert not s.requires_grad  # pyiqa alone would switch gradients back on
    s = m(x)
    assert s.requires_grad and m.inner.as_loss is True


def test_full_reference_name_is_refused():
    with pytest.raises(FullReferenceMetricError, match="full-reference"):
        create_metric("lpips")
    with pytest.raises(FullReferenceMetricError):
        create_metric("fid")  # a set-level score, not a per-image one


def test_unknown_name_suggests_ours_and_pyiqa():
    with pytest.raises(UnknownNameError, match="Did you mean 'brisque'") as e:
        create_metric("brisk")
    assert "pyiqa also provides" in str(e.value)
    with pytest.raises(UnknownNameError, match="musiq"):
        create_metric("musiqq")


def test_needed_download_raises_missing_weights(no_pyiqa_cache, monkeypatch):
    import torch.hub
    from pyiqa.utils import download_util

    before = (download_util.download_url_to_file, torch.hub.download_url_to_file)
    with pytest.raises(MissingWeightsError, match=r"CNNIQA.*not downloaded.*allow_download"):
        create_metric("cnniqa")
    # the interception is undone afterwards
    assert (download_util.download_url_to_file, torch.hub.download_url_to_file) == before
    assert not list(no_pyiqa_cache.iterdir())  # and nothing was written


def test_allow_download_network_failure_is_missing_weights(no_pyiqa_cache, monkeypatch):
    from pyiqa.utils import download_util

    def offline(url, dst, *a, **k):
        raise ConnectionError(f"no route to {url}")  # what an offline machine answers

    monkeypatch.setattr(download_util, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError, match="could not fetch"):
        create_metric("cnniqa", allow_download=True)


def test_cached_file_is_used_offline(no_pyiqa_cache, photos64):
    # a file already in pyiqa's cache loads without any download
    from pyiqa.archs.cnniqa_arch import CNNIQA

    torch.manual_seed(0)
    net = CNNIQA(pretrained=None)
    torch.save({"params": net.state_dict()}, no_pyiqa_cache / "CNNIQA_koniq10k-e6f14c91.pth")
    m = create_metric("cnniqa")
    with torch.no_grad():
        torch.testing.assert_close(m(photos64[:1]), net.eval()(photos64[:1]).reshape(-1))


def test_to_moves_plain_tensor_attributes():
    m = create_metric("brisque")
    assert m.inner.net.sv.dtype == torch.float64
    m.to("meta")  # a device switch testable without a GPU
    assert m.inner.net.sv.device.type == "meta" and m.inner.net.sv_coef.device.type == "meta"
    assert m.inner.net.sv.dtype == torch.float64  # device follows, dtype is kept
    assert m.inner.dummy_param.device.type == "meta" and m.device.type == "meta"


def test_score_range_parsing():
    assert parse_score_range("~0, ~150") == (0.0, 150.0)
    assert parse_score_range("-2, 2") == (-2.0, 2.0)
    assert parse_score_range("0, ~") is None and parse_score_range(None) is None
    assert create_metric("wadiqam_nr", pretrained=False).score_range == (-1.0, 0.1)


def test_nr_names_exclude_set_level_metrics():
    names = pyiqa_nr_names()
    assert "brisque" in names and "musiq" in names
    assert "fid" not in names and "lpips" not in names


def test_non_batch_input_is_rejected():
    from iqalib.errors import ImageError

    with pytest.raises(ImageError, match="batch dimension"):
        create_metric("brisque")(torch.rand(3, 64, 64))
