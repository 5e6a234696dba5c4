"""``python -m iqalib <command> ...``: runs outside Jupyter.

Each command lives in the module that owns the work; this file only dispatches.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    # command: (module, function, one-line help)
    "samples": ("iqalib.datasets", "cli_samples", "build the offline sample set (data/samples)"),
    "data": ("iqalib.datasets", "cli", "fetch a data set: `data fetch nips17`"),
    "weights": ("iqalib.weights", "cli", "list / fetch / verify checkpoints"),
    "run": ("iqalib.evaluate.cli", "run_cli", "run the metric x attack x defense grid"),
    "table": ("iqalib.evaluate.cli", "table_cli", "summarise a results table"),
    "bench": ("iqalib.bench", "cli", "speed ratios measured in one run"),
    "list": ("iqalib.api", "cli_list", "list metrics / attacks / defenses (fnmatch patterns)"),
    "check-notebooks": ("iqalib.nbcheck", "cli", "fail if committed notebooks carry outputs"),
}


def usage() -> str:
    lines = ["usage: python -m iqalib <command> [args]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(cmd, list(COMMANDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"unknown command {cmd!r}.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[cmd]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
