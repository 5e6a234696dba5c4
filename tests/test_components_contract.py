"""Every registered attack and purifier, taken from the registries (not a hand-written list):
settings out of range are refused in the constructor, outputs keep the image contract, and
the checkpoints a component needs are declared (``weights``) in the catalogue's names."""
from __future__ import annotations

import inspect

import pytest
import torch

import iqalib
from iqalib.errors import MissingWeightsError
from iqalib.registry import ATTACKS, DEFENSES

pytestmark = pytest.mark.usefixtures("one_thread")

ATTACK_NAMES = iqalib.list_attacks()
DEFENSE_NAMES = iqalib.list_defenses()

#: a value outside the allowed range for every numeric setting an attack may have
BAD_ATTACK_VALUES = {"steps": [-3, 0, 2.5], "lr": [-0.1, 0.0], "eps": [-1 / 255, 2.0],
                     "alpha": [-1 / 255, 0.0], "momentum": [-1.0], "amplitude": [-0.2],
                     "pieces": [0], "reg": [-0.5], "lambda_lf": [-0.1], "pull": [-1e-3],
                     "eot": [0], "projection": ["ball"], "mask": ["sobel"], "odd": ["crop"],
                     "normalise_l1": [1]}
#: the same for purifiers
BAD_DEFENSE_VALUES = {"kernel_size": [4, -3, 0, 2.5], "quality": [0, 101, 50.5], "scale": [0.0, 1.5],
                      "size": [0, -5], "angle": [-5.0, 200.0], "sigma": [-0.1],
                      "amount": [-1.0], "t": [0, 1001], "steps": [0], "eta": [-0.5],
                      "denoise_strength": [1.5, -0.1], "outscale": [-1.0], "dims": [(1,)],
                      "rounding": ["nearest"], "sampling": ["gaussian"], "padding": ["wrap"],
                      "interpolation": ["lanczos"], "antialias": [1], "task": ["denoising"],
                      "prior": ["dncnn"], "sampler": ["euler"], "grad": ["pgd"],
                      "precision": ["fp8"], "variance": ["small"]}


def _keywords(factory) -> set[str]:
    target = factory.__init__ if isinstance(factory, type) else factory
    return {n for n, p in inspect.signature(target).parameters.items()
            if p.kind is p.KEYWORD_ONLY}


def _extra_attack_kwargs(name: str, tmp_path) -> dict:
    entry = ATTACKS.entry(name)
    if "universal" in entry.tags:  # applying a UAP needs a trained perturbation on disk
        from iqalib.attacks.uap import UAP

        path = tmp_path / f"{name}.pt"
        UAP(_toy(), perturbation=torch.zeros(3, 8, 8),
            meta={"method": name, "metric": "toy-sharpness"}).save(path)
        return {"path": path}
    if name == "adaptive":
        return {"defense": "flip"}
    return {}


def _toy():
    from conftest import ToySharpness

    return ToySharpness()


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_rejects_out_of_range_settings(name, toy_metric, tmp_path):
    entry = ATTACKS.entry(name)
    present = _keywords(entry.factory) & set(BAD_ATTACK_VALUES)
    if name == "adaptive":
        present |= {"steps", "eps"}  # forwarded to the inner attack
    if not present:
        pytest.skip(f"{name} has no numeric setting")
    extra = _extra_attack_kwargs(name, tmp_path)
    for key in sorted(present):
        for bad in BAD_ATTACK_VALUES[key]:
            with pytest.raises(ValueError) as err:
                ATTACKS.create(name, metric=toy_metric, **extra, **{key: bad})
            message = str(err.value)
            assert key in message and "\n" not in message, (name, key, message)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_output_contract(name, toy_metric, photos64, tmp_path):
    try:
        atk = ATTACKS.create(name, metric=toy_metric, **_extra_attack_kwargs(name, tmp_path))
    except MissingWeightsError:
        pytest.skip(f"{name} needs checkpoints that are not here")
    x = photos64[:2, :, :24, :24]
    xa = atk(x)
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert xa.min() >= 0 and xa.max() <= 1
    assert torch.equal(xa, torch.round(xa * 255) / 255), "not on the 8-bit grid"


def _defense_kwargs(name: str) -> dict:
    entry = DEFENSES.entry(name)
    keys = _keywords(entry.factory)
    kw = {}
    if "pretrained" in keys:
        kw["pretrained"] = False
    if name in ("diffpure", "diffpure-unsharp"):
        kw.update(prior="ffdnet", size=None, t=2)  # the offline prior, two steps: seconds
    if name == "mprnet":
        kw["task"] = "derain"  # the narrowest of the three MPRNets: a quarter of the time
    return kw


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_defense_rejects_out_of_range_settings(name):
    entry = DEFENSES.entry(name)
    present = _keywords(entry.factory) & set(BAD_DEFENSE_VALUES)
    if name == "diffpure-unsharp":
        present |= {"t", "steps", "eta", "precision"}  # forwarded to DiffPure
    if not present:
        pytest.skip(f"{name} has no setting with a range")
    base = _defense_kwargs(name)
    for key in sorted(present):
        for bad in BAD_DEFENSE_VALUES[key]:
            with pytest.raises(ValueError) as err:
                DEFENSES.create(name, **{**base, key: bad})
            message = str(err.value)
            assert key.replace("_", " ") in message.replace("_", " ") and "\n" not in message, \
                (name, key, message)


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_defense_output_contract(name, photos64):
    try:
        d = DEFENSES.create(name, **_defense_kwargs(name))
    except MissingWeightsError:
        pytest.skip(f"{name} needs checkpoints that are not here")
    x = photos64[:2, :, :32, :28]
    with torch.no_grad():
        y = d(x)
    assert y.dtype == x.dtype and y.shape[:2] == x.shape[:2]
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    if not d.changes_size:
        assert y.shape == x.shape


def _declared(factory) -> tuple:
    declared = getattr(factory, "weights", None)
    if declared is None and not isinstance(factory, type):
        import typing

        declared = getattr(typing.get_type_hints(factory).get("return"), "weights", ())
    return tuple(declared or ())


@pytest.mark.parametrize("kind,name", [("attack", n) for n in ATTACK_NAMES]
                         + [("defense", n) for n in DEFENSE_NAMES])
def test_declared_checkpoints_are_catalogue_names(kind, name):
    from iqalib.weights import CATALOGUE

    entry = (ATTACKS if kind == "attack" else DEFENSES).entry(name)
    declared = _declared(entry.factory)
    optional = tuple(getattr(entry.factory, "optional_weights", ()))
    assert isinstance(declared, tuple)
    for ck in declared + optional:
        assert ck in CATALOGUE, (name, ck)
    if "needs-weights" in entry.tags:
        assert declared, f"{name} is tagged needs-weights but declares no checkpoint"


def test_the_components_that_need_checkpoints_say_which():
    from iqalib.attacks import zhang
    from iqalib.defenses import diffpure, restorers

    assert zhang.ZhangDISTS.weights == ("dists", "torchvision-vgg16")
    assert zhang.ZhangLPIPS.weights == ("lpips-alex", "torchvision-alexnet")
    assert zhang.ZhangLPIPSVGG.weights == ("lpips-vgg", "torchvision-vgg16")
    assert zhang.ZhangSSIM.weights == ()
    assert restorers.MPRNetDefense.weights == ("mprnet-denoise",)
    assert restorers.MPRNetDefense(task="derain", pretrained=False).weights == ("mprnet-derain",)
    assert restorers.RealESRGANDefense.weights == ("realesr-general-x4v3", "realesr-general-wdn-x4v3")
    assert diffpure.DiffPure.weights == ()
    assert diffpure.DiffPure.optional_weights == ("guided-diffusion-256-uncond",)
