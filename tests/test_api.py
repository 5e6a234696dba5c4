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
