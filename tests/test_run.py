"""The one chunked loop: chunking does not change scores, seeds and generators reach
stochastic purifiers, size-changing purifiers are matched back, times are per image."""
from __future__ import annotations

import _grid_toys as toys
import numpy as np
import torch

from iqalib.evaluate import measures, run
from iqalib.imagesets import Images, TensorImages


def test_score_in_chunks_equals_one_pass(toy_metric, photos64):
    with torch.no_grad():
        direct = toy_metric(photos64).double().numpy()
    for bs in (1, 2, 8, "auto"):
        np.testing.assert_allclose(run.score(toy_metric, photos64, batch_size=bs), direct,
                                   rtol=1e-6)
    assert run.score(toy_metric, photos64[:0]).shape == (0,)


def test_purify_seed_generator_and_size(photos64):
    noise = toys.NoiseDefense()
    a = run.purify(noise, photos64, batch_size=2, seed=5)
    b = run.purify(noise, photos64, batch_size=2, seed=5)
    c = run.purify(noise, photos64, batch_size=2, seed=6)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    # each chunk draws from a generator seeded with the seed (as Defense.__call__ does)
    first = noise(photos64[:2], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.images[:2], first)
    g = torch.Generator().manual_seed(5)
    fresh = run.purify(noise, photos64, batch_size=2, generator=g)
    assert torch.equal(fresh.images[:2], first) and not torch.equal(fresh.images[2:], a.images[2:])
    crop = run.purify(toys.CropDefense(), photos64, like=photos64)
    assert crop.raw.shape[-1] == 48 and crop.images.shape == photos64.shape
    assert torch.allclose(crop.images, measures.match_size(crop.raw, photos64))
    assert a.seconds_per_image > 0


def test_attack_times_per_image(toy_metric, photos64):
    out = run.attack(toys.SignAttack(toy_metric), photos64, batch_size=2)
    assert torch.equal(out.images, toys.SignAttack(toy_metric)(photos64))
    assert out.seconds_per_image.shape == (3,) and (out.seconds_per_image > 0).all()
    assert out.seconds_per_image[0] == out.seconds_per_image[1]  # one chunk, shared


def test_image_sets_share_one_protocol(photos64):
    from iqalib.datasets import load_dataset

    ts = TensorImages(photos64, ["a", "b", "c"], name="t")
    ds = load_dataset("samples", n=3, size=64)
    for s in (ts, ds):
        assert isinstance(s, Images)
        assert s.subset(2).ids == s.ids[:2] and s.subset([s.ids[2]]).ids == [s.ids[2]]
        assert s.load(s.ids[0]).shape == (1, 3, 64, 64) and s.batch(s.ids).shape[0] == 3
        assert len({s.content_id(i) for i in s.ids}) == 3
        assert s.subset([s.ids[1]]).content_id(s.ids[1]) == s.content_id(s.ids[1])
        assert s.fingerprint() != s.subset(2).fingerprint()
    assert ds.label == "samples@64x64"
    ds.name = "samples@64"  # a caller that put the size into the name: no double suffix
    assert ds.label == "samples@64"
