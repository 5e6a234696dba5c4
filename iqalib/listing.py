"""``python -m iqalib list``: what is registered, in whole sentences, with what each entry needs.

For every metric, attack and purifier: its name, whether it runs offline or which checkpoints it
needs (from the ``weights`` it declares, :func:`iqalib.evaluate.tables.declared_weights`, and
whether they are present), its summary (the docstring's first sentence, never cut inside
parentheses or at "..."), its aliases and presets. Plugins show up like everything else.
"""
from __future__ import annotations

import argparse
import shutil
import textwrap

KINDS = {"metrics": "metric", "attacks": "attack", "defenses": "defense"}
_ABBREVIATIONS = ("al", "e.g", "i.e", "vs", "cf", "etc", "approx", "fig", "eq", "ref", "no")


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line.

    A sentence ends at a full stop followed by a space that is outside parentheses, brackets and
    code, is not part of an ellipsis and does not end an abbreviation ("et al.", "e.g.").
    Without such a stop the whole first paragraph is the summary."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    depth, code = 0, False
    for i, ch in enumerate(para):
        if ch == "`":
            code = not code
        elif ch in "([{" and not code:
            depth += 1
        elif ch in ")]}" and not code:
            depth = max(0, depth - 1)
        elif ch == "." and depth == 0 and not code:
            after = para[i + 1:i + 2]
            if after not in (" ", "") or para[i - 1:i] == "." or para[i + 1:i + 2] == ".":
                continue
            word = para[:i].rsplit(" ", 1)[-1].lower().lstrip("(")
            if word in _ABBREVIATIONS or len(word) == 1:
                continue
            return para[:i + 1]
    return para


def summary(entry) -> str:
    """An entry's summary: its factory's first sentence, or the summary it was registered with
    when the factory has no docstring (or the registration gave one explicitly)."""
    doc = getattr(entry.factory, "__doc__", None)
    registered = entry.summary or ""
    derived = first_sentence(doc) if doc else ""
    # the registry derives its summary from the same docstring (and may cut it short); a
    # summary= given at registration says something else and wins
    if derived and derived.startswith(registered.rstrip(". ")[:20]):
        return derived
    return registered or derived


def requirement(kind: str, name: str) -> tuple[bool, str]:
    """(runs offline, what it needs) for one registered entry."""
    from . import weights
    from .evaluate.tables import declared_weights

    need = declared_weights(kind, name)
    if not need and "needs-weights" in _registry_of(kind).entry(name).tags:
        # tagged but not (yet) declaring which: do not claim it runs offline
        return False, "needs weights: see `python -m iqalib weights list`"
    if not need:
        return True, "offline: needs no checkpoint"
    missing = [c for c in need if not weights.is_available(c)]
    if not missing:
        return True, f"offline: checkpoints present ({', '.join(need)})"
    return False, ("needs weights: " + ", ".join(need) + "; fetch with "
                   + " ; ".join(f"make weights WEIGHTS={c}" for c in missing))


def _registry_of(kind: str):
    from .registry import ATTACKS, DEFENSES, METRICS

    return {"metric": METRICS, "attack": ATTACKS, "defense": DEFENSES}[kind]


def describe(reg, kind: str, name: str, width: int) -> str:
    """The lines of one entry: name and requirement, then the summary, aliases and presets."""
    entry = reg.entry(name)
    _, need = requirement(kind, name)
    head = f"{name}  [{need}]"
    indent = "    "
    lines = [textwrap.fill(head, width, subsequent_indent=indent, break_long_words=False,
                           break_on_hyphens=False)]
    body = summary(entry).replace("``", "")      # reST code marks read as noise in a terminal
    if entry.aliases:
        body += f" Aliases: {', '.join(entry.aliases)}."
    if entry.presets:
        body += f" Presets: {', '.join(f'{name}:{p}' for p in entry.presets)}."
    if entry.tags:
        body += f" Tags: {', '.join(entry.tags)}."
    lines.append(textwrap.fill(body, width, initial_indent=indent, subsequent_indent=indent,
                               break_long_words=False, break_on_hyphens=False))
    return "\n".join(lines)


def cli_list(argv: list[str]) -> int:
    """``python -m iqalib list [metrics|attacks|defenses|all] [PATTERN] [--tag TAG]
    [--offline | --needs-weights] [--names]``"""
    p = argparse.ArgumentParser(
        prog="python -m iqalib list",
        description="What is registered (plugins included): each entry's summary, aliases, "
                    "presets, and whether it runs offline or which checkpoints it needs.")
    p.add_argument("kind", nargs="?", default="all", choices=[*KINDS, "all"])
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'jpeg*'")
    p.add_argument("--tag", default=None, help="only entries with this tag (e.g. geometric)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--offline", action="store_true", help="only what runs without downloads")
    which.add_argument("--needs-weights", action="store_true",
                       help="only what needs checkpoints that are not here")
    p.add_argument("--names", action="store_true", help="names only, one a line")
    a = p.parse_args(argv)

    from .api import _ensure_registered
    from .registry import ATTACKS, DEFENSES, METRICS

    _ensure_registered()
    regs = {"metrics": METRICS, "attacks": ATTACKS, "defenses": DEFENSES}
    width = min(max(60, shutil.get_terminal_size((100, 24)).columns), 120)
    kinds = list(KINDS) if a.kind == "all" else [a.kind]
    for k, plural in enumerate(kinds):
        reg, kind = regs[plural], KINDS[plural]
        names = reg.names(a.pattern, tag=a.tag)
        if a.offline or a.needs_weights:
            names = [n for n in names if requirement(kind, n)[0] == a.offline]
        if a.names:
            print("\n".join(names))
            continue
        if k:
            print()
        print(f"{plural} ({len(names)})")
        for n in names:
            print(describe(reg, kind, n, width))
    return 0


__all__ = ["cli_list", "describe", "first_sentence", "requirement", "summary"]
