"""The attack cache: lossless, keyed, resumable, atomic."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from _grid_toys import CountingSignAttack, SignAttack
from PIL import Image

from iqalib.attacks.cache import AttackCache, cache_key, safe_name
from iqalib.evaluate.grid import TensorImages


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
    key = cache.key_for(attack, "toy", "photos", 3)
    folder = tmp_path / key
    assert sorted(p.name for p in folder.glob("*.png")) == ["a.png", "c.png"]
    # the PNG is 8-bit RGB as PIL reads it
    with Image.open(folder / "a.png") as im:
        assert im.mode == "RGB" and im.size == (64, 64)
        arr = np.asarray(im)
    assert np.array_equal(arr, np.round(direct[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    man = cache.manifest(key)
    assert man["metric"] == "toy" and man["attack"] == "toy-sign" and man["seed"] == 3
    assert man["dataset"] == "photos"
    assert json.loads(man["attack_params"]) == {"eps": round(4 / 255, 10), "seed": 3, "steps": 2}
    rec = man["images"]["c"]
    assert rec["source_image_id"] == "c"
    assert rec["sha256"] == hashlib.sha256((folder / "c.png").read_bytes()).hexdigest()
    assert rec["time_attack_s"] > 0
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_rerun_skips_what_exists(tmp_path, toy_metric, photos64):
    log = tmp_path / "calls.log"
    ds = TensorImages(photos64, ["a", "b", "c"])
    attack = CountingSignAttack(toy_metric, log=str(log))
    cache = AttackCache(tmp_path / "adv")
    first = cache.get_or_run(attack, "toy", ds, ["a"], batch_size=4)
    assert _calls(log) == 1
    png = next((tmp_path / "adv").rglob("a.png"))
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
    png = next((tmp_path / "adv").rglob("a.png"))
    png.write_bytes(png.read_bytes()[:100])  # truncated, as after a crash of another tool
    assert torch.equal(cache.get_or_run(attack, "toy", ds, ["a"]), good)
    assert _calls(log) == 2


def test_key_covers_every_setting():
    base = cache_key("m", "a", '{"eps": 1}', 0, "d")
    assert base == cache_key("m", "a", '{"eps": 1}', 0, "d")
    assert len({base, cache_key("m2", "a", '{"eps": 1}', 0, "d"),
                cache_key("m", "a2", '{"eps": 1}', 0, "d"), cache_key("m", "a", '{"eps": 2}', 0, "d"),
                cache_key("m", "a", '{"eps": 1}', 1, "d"), cache_key("m", "a", '{"eps": 1}', 0, "e")}) == 6


def test_safe_names_stay_unique():
    assert safe_name("img_01.png") == "img_01.png"
    names = {safe_name("a/b"), safe_name("a_b"), safe_name("a b"), safe_name("../x")}
    assert len(names) == 4 and all("/" not in n and not n.startswith(".") for n in names)
