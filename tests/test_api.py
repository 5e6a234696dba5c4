"""The public API: names, presets and compositions resolve; mistakes get clear errors."""
import pytest
import torch

import iqalib
from iqalib.defenses.base import Compose


def test_composition_by_name_applies_parts_in_order(photos64):
    composed = iqalib.load_defense("flip+jpeg:q30", device="cpu")
    assert isinstance(composed, Compose) and composed.name == "flip+jpeg"
    by_hand = iqalib.load_defense("jpeg:q30", device="cpu")(iqalib.load_defense("flip", device="cpu")(photos64))
    assert torch.equal(composed(photos64), by_hand)


def test_keywords_on_a_composition_are_refused():
    with pytest.raises(TypeError, match="ambiguous"):
        iqalib.load_defense("flip+jpeg", quality=30)


def test_listing_includes_presets_on_request():
    assert "jpeg" in iqalib.list_defenses()
    assert "jpeg:q30" in iqalib.list_defenses(presets=True)
    assert iqalib.list_attacks("*fgsm") == ["amifgsm", "ifgsm", "mifgsm"]


def test_the_registries_and_base_classes_are_exported():
    from iqalib.attacks.base import Attack
    from iqalib.metrics.base import IQAMetric

    assert iqalib.IQAMetric is IQAMetric and iqalib.Attack is Attack
    assert iqalib.Defense is Compose.__mro__[1] and iqalib.Compose is Compose
    assert "jpeg" in iqalib.DEFENSES and "ifgsm" in iqalib.ATTACKS and "brisque" in iqalib.METRICS
    assert {"METRICS", "ATTACKS", "DEFENSES", "IQAMetric", "Attack", "Defense", "Compose"} <= set(
        iqalib.__all__)


def test_keyword_typos_are_named():
    with pytest.raises(iqalib.UnknownKeywordError, match="Did you mean 'quality'"):
        iqalib.load_defense("jpeg", qualty=30)


def test_is_baseline_uses_the_registry_aliases():
    from iqalib.defenses import Identity, is_baseline

    assert all(is_baseline(s) for s in ("none", "identity", "No-Defense", "no_defence"))
    assert is_baseline(Identity()) and not is_baseline("flip") and not is_baseline("none+flip")
    assert not is_baseline("not-a-purifier")
