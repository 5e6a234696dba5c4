"""The registry: aliases, presets, did-you-mean on unknown names, fnmatch listing."""
import pytest

from iqalib.errors import UnknownNameError
from iqalib.registry import Registry


@pytest.fixture
def reg():
    r = Registry("widget")

    @r.register("gaussian-blur", aliases=["blur"], presets={"k5": {"kernel": 5}, "k7": {"kernel": 7}})
    def make_blur(*, kernel=3):
        """A blur."""
        return ("blur", kernel)

    @r.register("jpeg", tags=["codec"])
    def make_jpeg(*, quality=50):
        return ("jpeg", quality)

    return r


def test_create_by_name_alias_and_preset(reg):
    assert reg.create("gaussian-blur") == ("blur", 3)
    assert reg.create("Blur") == ("blur", 3)
    assert reg.create("gaussian_blur:k7") == ("blur", 7)
    assert reg.create("blur:k5", kernel=9) == ("blur", 9)  # an explicit keyword wins over the preset


def test_unknown_name_suggests_nearest(reg):
    with pytest.raises(UnknownNameError, match="Did you mean 'jpeg'") as err:
        reg.create("jepg")
    assert "Known widgets" in str(err.value)
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        reg.entry("nothing-like-it")


def test_unknown_preset_lists_presets(reg):
    with pytest.raises(UnknownNameError, match="Did you mean 'k5'"):
        reg.create("blur:k55")


def test_listing_with_patterns_tags_and_presets(reg):
    assert reg.names() == ["gaussian-blur", "jpeg"]
    assert reg.names("gauss*") == ["gaussian-blur"]
    assert reg.names(tag="codec") == ["jpeg"]
    assert reg.specs("gauss*") == ["gaussian-blur", "gaussian-blur:k5", "gaussian-blur:k7"]
    assert "blur" in reg and "blur:k5" in reg and "nope" not in reg
    assert reg.entry("blur").summary == "A blur."


def test_duplicate_registration_is_refused(reg):
    with pytest.raises(ValueError, match="twice"):
        reg.add("jpeg", lambda: None)
    with pytest.raises(ValueError, match="already taken"):
        reg.add("other", lambda: None, aliases=["blur"])


def test_summary_is_the_first_sentence_across_lines_and_abbreviations():
    r = Registry("thing")

    @r.register("z")
    def make_z():
        """Zhang et al. 2022, e.g. with
        DISTS. Second sentence.

        Details."""

    assert r.entry("z").summary == "Zhang et al. 2022, e.g. with DISTS."


def test_unknown_keywords_get_a_did_you_mean_and_the_valid_ones(reg):
    from iqalib.registry import UnknownKeywordError

    with pytest.raises(UnknownKeywordError, match=r"Did you mean 'kernel'\? Keywords: kernel\."):
        reg.create("blur", kernal=5)
    with pytest.raises(TypeError):  # still a TypeError, as Python's own
        reg.create("jpeg", qualty=5)
    assert reg.keywords("jpeg") == ["quality"]


def test_fingerprint_follows_settings_not_spelling(reg):
    fp = reg.fingerprint("gaussian-blur:k5")
    assert fp == reg.fingerprint("blur", kernel=5) == reg.fingerprint("Gaussian_Blur:k5")
    assert fp != reg.fingerprint("blur") and fp != reg.fingerprint("blur:k7")
    assert reg.resolved_keywords("blur:k7") == {"kernel": 7}


def test_fingerprint_follows_the_code(tmp_path, monkeypatch):
    """Editing a registered component's source gives another fingerprint."""
    import importlib

    src = tmp_path / "reg_component.py"
    body = 'def make(*, level=1):\n    """A thing."""\n    return level * FACTOR\n'
    src.write_text(body.replace("FACTOR", "2"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import reg_component

    r1 = Registry("thing")
    r1.add("thing", reg_component.make)
    before = r1.fingerprint("thing")
    src.write_text(body.replace("FACTOR", "3"))
    import os
    import time

    os.utime(src, ns=(time.time_ns() + 10**9,) * 2)
    importlib.reload(reg_component)
    r2 = Registry("thing")
    r2.add("thing", reg_component.make)
    assert r2.fingerprint("thing") != before
