"""One small registry for metrics, attacks and defenses.

A registry maps a canonical name (plus aliases) to a factory, and each entry may carry
named *presets*: keyword sets such as the paper's sweeps (``jpeg:q10`` ... ``jpeg:q90``).
A spec string is ``"name"`` or ``"name:preset"``; keyword overrides win over the preset.
Unknown names raise :class:`~iqalib.errors.UnknownNameError` with the closest matches;
unknown keywords raise :class:`UnknownKeywordError` with the closest matches and the valid ones.
:meth:`Registry.fingerprint` hashes what determines a component built from a spec (its code,
the package version, the resolved keywords and its checkpoints) without building it.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import IqalibError, UnknownNameError


class UnknownKeywordError(IqalibError, TypeError):
    """A keyword a component does not take (``load_defense("jpeg", qualty=30)``); the message
    suggests the nearest and lists the valid ones."""


def _parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters of a factory (a class: its ``__init__``) and whether it takes
    ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, True
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return params, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def _first_sentence(doc: str | None) -> str:
    """The docstring's first sentence (its first paragraph up to '. '), on one line."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    # "et al." and "e.g." end abbreviations, not sentences
    m = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)\.\s", para)
    return para[:m.start() + 1] if m else para


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: str = ""
    tags: tuple[str, ...] = ()


class Registry:
    """Name -> factory, with aliases, presets and did-you-mean errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._lookup: dict[str, str] = {}

    # -- registration ---------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        aliases: Iterable[str] = (),
        presets: dict[str, dict[str, Any]] | None = None,
        summary: str = "",
        tags: Iterable[str] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@METRICS.register("brisque", aliases=["brisque-live"])``."""

        def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, factory, aliases=aliases, presets=presets, summary=summary, tags=tags)
            return factory

        return deco

    def add(self, name, factory, *, aliases=(), presets=None, summary="", tags=()) -> Entry:
        key = _norm(name)
        if key in self._lookup:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        entry = Entry(key, factory, tuple(_norm(a) for a in aliases), dict(presets or {}),
                      summary or _first_sentence(getattr(factory, "__doc__", None)), tuple(tags))
        self._entries[key] = entry
        for k in (key, *entry.aliases):
            if k in self._lookup:
                raise ValueError(f"{self.kind} alias {k!r} is already taken by {self._lookup[k]!r}")
            self._lookup[k] = key
        return entry

    # -- lookup ---------------------------------------------------------------
    def entry(self, name: str) -> Entry:
        key = _norm(name)
        if key not in self._lookup:
            raise UnknownNameError(self._unknown_message(name, self._lookup))
        return self._entries[self._lookup[key]]

    def _unknown_message(self, name: str, choices: Iterable[str]) -> str:
        choices = sorted(set(choices))
        close = difflib.get_close_matches(_norm(name), choices, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (f"unknown {self.kind} {name!r}.{hint} "
                f"Known {self.kind}s: {', '.join(sorted(self._entries))}.")

    def split_spec(self, spec: str) -> tuple[Entry, dict[str, Any]]:
        """Resolve ``"name"`` or ``"name:preset"`` into its entry and the preset's keywords."""
        name, _, preset = spec.partition(":")
        entry = self.entry(name)
        if not preset:
            return entry, {}
        if preset not in entry.presets:
            close = difflib.get_close_matches(preset, list(entry.presets), n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(entry.presets) or "none"
            raise UnknownNameError(
                f"unknown preset {preset!r} for {self.kind} {entry.name!r}.{hint} Presets: {known}.")
        return entry, dict(entry.presets[preset])

    def keywords(self, name: str) -> list[str]:
        """The keywords ``name``'s factory takes (empty when it takes any: ``**kwargs``)."""
        params, var = _parameters(self.entry(name.partition(":")[0]).factory)
        return [] if var else [n for n in params if n not in ("self", "metric")]

    def check_keywords(self, entry: Entry, kwargs: dict[str, Any]) -> None:
        """Raise :class:`UnknownKeywordError` for keywords ``entry``'s factory does not take."""
        params, var = _parameters(entry.factory)
        if var:
            return
        valid = [n for n in params if n != "self"]
        for key in kwargs:
            if key not in params:
                close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                shown = ", ".join(v for v in valid if v != "metric") or "none"
                raise UnknownKeywordError(
                    f"unknown keyword {key!r} for {self.kind} {entry.name!r}.{hint} "
                    f"Keywords: {shown}.")

    def create(self, spec: str, /, **overrides: Any) -> Any:
        entry, kwargs = self.split_spec(spec)
        kwargs.update(overrides)
        self.check_keywords(entry, kwargs)
        return entry.factory(**kwargs)

    def resolved_keywords(self, spec: str, /, **overrides: Any) -> dict[str, Any]:
        """The keywords a spec builds with: the factory's defaults, then the preset's, then
        ``overrides`` (``metric`` and other required arguments without a default left out)."""
        entry, kwargs = self.split_spec(spec)
        kwargs.update(overrides)
        params, _ = _parameters(entry.factory)
        out = {n: p.default for n, p in params.items()
               if n not in ("self", "metric") and p.default is not inspect.Parameter.empty}
        out.update({k: v for k, v in kwargs.items() if k != "metric"})
        return out

    def fingerprint(self, spec: str, /, **overrides: Any) -> str:
        """A digest of what determines the component ``spec`` builds, without building it:
        the canonical name, the iqalib version, the source of the factory (and of the
        classes and modules it is made of), the resolved keywords and the sha256 of every
        checkpoint the factory declares in ``weights``. Any edit to the code or change of a
        setting gives another fingerprint; aliases of one name give the same."""
        from ._params import _jsonable
        from .fingerprint import code_digest, package_version, sha

        entry, _ = self.split_spec(spec)
        keywords = _jsonable(self.resolved_keywords(spec, **overrides))
        return sha(self.kind, entry.name, package_version("iqalib"), code_digest(entry.factory),
                   json.dumps(keywords, sort_keys=True), *_weights_digests(entry.factory))

    def names(self, pattern: str = "*", *, tag: str | None = None) -> list[str]:
        """Canonical names matching an fnmatch pattern (and a tag, if given)."""
        return sorted(n for n, e in self._entries.items()
                      if fnmatch.fnmatch(n, _norm(pattern)) and (tag is None or tag in e.tags))

    def specs(self, pattern: str = "*") -> list[str]:
        """Every ``name`` and ``name:preset`` whose name matches ``pattern``."""
        out = []
        for n in self.names(pattern):
            out.append(n)
            out.extend(f"{n}:{p}" for p in self._entries[n].presets)
        return out

    def __contains__(self, name: str) -> bool:
        return _norm(name.partition(":")[0]) in self._lookup

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _weights_digests(factory: Callable[..., Any]) -> list[str]:
    """``name=sha256`` of each checkpoint a factory declares in ``weights``: the file's own
    hash when it is present (cached by size and mtime), else the catalogue's expected hash,
    else ``absent``."""
    names = getattr(factory, "weights", ()) or ()
    if not names:
        return []
    from . import weights as catalogue

    out = []
    for name in names:
        digest = "absent"
        try:
            path = catalogue.local_path(name)
            if path.exists():
                digest = catalogue._hash_cached(path)
            else:
                digest = catalogue.expected_sha256(name)[0] or "absent"
        except Exception:  # noqa: BLE001 - an unknown catalogue name: key by the name only
            digest = "absent"
        out.append(f"{name}={digest}")
    return out


METRICS = Registry("metric")
ATTACKS = Registry("attack")
DEFENSES = Registry("defense")
