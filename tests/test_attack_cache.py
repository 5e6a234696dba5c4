"""The attack cache: lossless, keyed by content and fingerprints, resumable, atomic."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from _grid_toys import CountingSignAttack, SignAttack
from PIL import Image

from iqalib.attacks.cache import AttackCache, attack_fingerprint, cache_key, default_root, safe_name
from iqalib.imagesets import TensorImages


def _calls(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_cache_is_lossless_and_has_a_manifest(tmp_path, toy_metric, photos64):
    ds = TensorImages(photos64, ["a", "b", "c"], name="photos")
    attack = SignAttack(toy_metric, seed=3)
    cache = AttackCache(tmp_path)
    x_adv = cache.get_or_run(attack, "toy", ds, ["a", "c"], seed=3)
    direct = attack(photos64[[0, 2]])
    assert torch.equal(x_adv, direct)  # attacks quantise to 1/255, so PNG round-trips exactly
    assert not torch.equal(x_adv, photos64[[0, 2]])
    key = cache.key_for(attack, 3)
    folder = tmp_path / key
    name = {i: ds.content_id(i) for i in ds.ids}  # files are named by the image's content
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted([name["a"], name["c"]])
    # the PNG is 8-bit RGB as PIL reads it
    with Image.open(folder / f"{name['a']}.png") as im:
        assert im.mode == "RGB" and im.size == (64, 64)
        arr = np.asarray(im)
    assert np.array_equal(arr, np.round(direct[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    man = cache.manifest(key)
    assert man["metric"] == "toy" and man["attack"] == "toy-sign" and man["seed"] == 3
    assert json.loads(man["attack_params"]) == {"eps": round(4 / 255, 10), "seed": 3, "steps": 2}
    rec = man["images"]["c"]
    assert rec["content_id"] == name["c"] and rec["dataset"] == "photos"
    png = folder / f"{name['c']}.png"
    assert rec["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert rec["time_attack_s"] > 0
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_rerun_skips_what_exists(tmp_path, toy_metric, photos64):
    log = tmp_path / "calls.log"
    ds = TensorImages(photos64, ["a", "b", "c"])
    attack = CountingSignAttack(toy_metric, log=str(log))
    cache = AttackCache(tmp_path / "adv")
    first = cache.get_or_run(attack, "toy", ds, ["a"], batch_size=4)
    assert _calls(log) == 1
    png = next((tmp_path / "adv").rglob(f"{ds.content_id('a')}.png"))
    mtime = png.stat().st_mtime_ns
    both, times = cache.get_or_run(attack, "toy", ds, ["a", "b", "c"], batch_size=4,
                                   return_times=True)
    assert log.read_text().splitlines() == ["1", "2"]  # only b and c were attacked, together
    assert png.stat().st_mtime_ns == mtime
    assert torch.equal(both[0], first[0]) and times.shape == (3,)
    again = cache.get_or_run(attack, "toy", ds, ["c", "b", "a"])
    assert _calls(log) == 2 and torch.equal(again, both.flip(0))


def test_damaged_file_is_attacked_again(tmp_path, toy_metric, photos64):
    log = tmp_path / "calls.log"
    ds = TensorImages(photos64[:1], ["a"])
    attack = CountingSignAttack(toy_metric, log=str(log))
    cache = AttackCache(tmp_path / "adv")
    good = cache.get_or_run(attack, "toy", ds, ["a"])
    png = next((tmp_path / "adv").rglob("*.png"))
    png.write_bytes(png.read_bytes()[:100])  # truncated, as after a crash of another tool
    assert torch.equal(cache.get_or_run(attack, "toy", ds, ["a"]), good)
    assert _calls(log) == 2


def test_key_covers_every_setting(toy_metric, toy_lower_metric):
    base = cache_key("fp", 0)
    assert base == cache_key("fp", 0)
    assert len({base, cache_key("fp2", 0), cache_key("fp", 1)}) == 3
    # the fingerprint covers the attack's settings and class, and the metric's code and weights
    fp = attack_fingerprint(SignAttack(toy_metric))
    assert fp == attack_fingerprint(SignAttack(toy_metric))
    assert fp != attack_fingerprint(SignAttack(toy_metric, eps=8 / 255))
    assert fp != attack_fingerprint(CountingSignAttack(toy_metric))
    assert fp != attack_fingerprint(SignAttack(toy_lower_metric))
    heavier = type(toy_metric)()
    heavier.kernel.mul_(2)  # same class, other weights
    assert fp != attack_fingerprint(SignAttack(heavier))


def test_same_ids_other_pixels_are_attacked_again(tmp_path, toy_metric, photos64):
    """Two image sets that share a name and ids but hold other pixels never share attacked
    images (the cache used to be keyed by the set's name)."""
    attack = SignAttack(toy_metric)
    cache = AttackCache(tmp_path)
    first = cache.get_or_run(attack, "toy", TensorImages(photos64[:2], ["a", "b"], "set"), ["a", "b"])
    other = photos64[[2, 0]]
    second = cache.get_or_run(attack, "toy", TensorImages(other, ["a", "b"], "set"), ["a", "b"])
    assert torch.equal(second, attack(other)) and not torch.equal(first[0], second[0])
    assert torch.equal(second[1], first[0])  # the same pixels are the same cached image


def test_default_cache_stays_out_of_the_checkout(tmp_path, monkeypatch):
    """A run folder outside the results directory keeps its attacked images beside it."""
    monkeypatch.setenv("IQALIB_RESULTS", str(tmp_path / "results"))
    assert default_root(tmp_path / "elsewhere" / "run") == tmp_path / "elsewhere" / "run" / "adv"
    assert default_root(tmp_path / "results" / "quick" / "04") == tmp_path / "results" / "adv"


def test_safe_names_stay_unique():
    assert safe_name("img_01.png") == "img_01.png"
    names = {safe_name("a/b"), safe_name("a_b"), safe_name("a b"), safe_name("../x")}
    assert len(names) == 4 and all("/" not in n and not n.startswith(".") for n in names)
