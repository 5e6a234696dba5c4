"""One PSNR and one SSIM (issue 11): the results grid, the FCN filter's trainer and the
interactive view report the same numbers for the same pair of images, and those numbers are
scikit-image's (the authors' ``test.py`` calls ``peak_signal_noise_ratio`` and
``structural_similarity`` with their defaults)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import iqalib
from iqalib.imagesets import TensorImages
from iqalib.interactive import CompareApp
from iqalib.training.fcn_filter import train_fcn_filter


def _skimage(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a_np, b_np = (v.permute(1, 2, 0).double().numpy() for v in (a, b))
    return (peak_signal_noise_ratio(b_np, a_np, data_range=1.0),
            structural_similarity(b_np, a_np, channel_axis=2, data_range=1.0))


def test_grid_trainer_and_interactive_view_agree_on_psnr_and_ssim(toy_metric, photos64, tmp_path):
    clean = photos64[:2]
    ids = ["astronaut", "chelsea"]
    images = TensorImages(clean, ids, name="agree")
    # the interactive view attacks at eps 10/255 with its step tied to the budget: the same
    # settings as the grid's default I-FGSM, so all three see the same attacked images
    app = CompareApp(images, toy_metric, attacks=("ifgsm",), defenses=("identity",), device="cpu")
    views = [app.compute(i, "ifgsm", 10, "identity") for i in ids]
    attacked = torch.cat([v.attacked for v in views])

    table = iqalib.run_grid([toy_metric], ["ifgsm"], ["none"], images, out=tmp_path / "run",
                            device="cpu", progress=False, strict=True)
    rows = table.set_index("image_id").loc[ids]

    # the trainer reports the attacked inputs' held-out measures (it trains on a third photo:
    # it refuses a held-out image it trains on)
    _, hist = train_fcn_filter(photos64[2:], photos64[2:], clean, attacked, epochs=1, seed=0,
                               device="cpu")

    ref = [_skimage(attacked[k], clean[k]) for k in range(2)]
    ref_psnr, ref_ssim = (float(np.mean(v)) for v in zip(*ref))
    for k, v in enumerate(views):
        assert v.psnr_attacked == pytest.approx(ref[k][0], rel=1e-4)
        assert rows["psnr"].iloc[k] == pytest.approx(ref[k][0], rel=1e-4)
        assert rows["ssim"].iloc[k] == pytest.approx(ref[k][1], abs=1e-4)
    assert hist["val_psnr_attacked"] == pytest.approx(ref_psnr, rel=1e-4)
    assert hist["val_ssim_attacked"] == pytest.approx(ref_ssim, abs=1e-4)
