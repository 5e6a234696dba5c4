"""Shared fixtures: small real photos and a deterministic toy metric for fast tests."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _grid_toys import ToySharpness

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two xdist workers: each gets its share of the cores, and so do the
    # notebook kernels it starts (they inherit the environment), so that workers do not fight
    # over cores with spinning intra-op threads
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads
    torch.set_num_threads(int(_threads))
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    """The notebook tests first: they are the longest units of work (two chains of several
    minutes), so under `make test`'s xdist workers each chain starts at once and the short
    tests fill in around them. Stable, so every worker sees the same order."""
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None)


class ToyLowerBetter(ToySharpness):
    """The same score negated and shifted: lower is better, range (-1, 0)."""

    name = "toy-lower"
    lower_better = True
    score_range = (-1.0, 0.0)

    def forward(self, x):
        return -super().forward(x)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread, then restore the setting: small convolutions
    (SSIM windows, 3x3 filters) run slower on two contended threads than on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def toy_metric():
    return ToySharpness()


@pytest.fixture
def toy_lower_metric():
    return ToyLowerBetter()


def _photo_crops(size: int) -> torch.Tensor:
    from skimage import data

    crops = []
    for img in (data.astronaut(), data.chelsea(), data.coffee()):
        h, w = img.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(img[top:top + size, left:left + size])
    arr = np.stack(crops).astype(np.float32) / 255.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="session")
def photos64() -> torch.Tensor:
    """Three 64x64 centre crops of scikit-image photos, [3,3,64,64] in [0,1]."""
    return _photo_crops(64)


@pytest.fixture(scope="session")
def photos128() -> torch.Tensor:
    """Three 128x128 centre crops of scikit-image photos, [3,3,128,128] in [0,1]."""
    return _photo_crops(128)
