"""``python -m iqalib [--plugin MODULE ...] <command> ...``: runs outside Jupyter.

Each command lives in the module that owns the work; this file only dispatches. ``--plugin``
(repeatable, before the command) loads a module or ``module:callable`` that registers your own
metrics, attacks or purifiers (:mod:`iqalib.plugins`); installed entry points of group
``iqalib.plugins`` and ``$IQALIB_PLUGINS`` load without it.
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
    "list": ("iqalib.listing", "cli_list",
             "list metrics / attacks / defenses: summary, presets, offline or which weights"),
    "lab": ("iqalib.lab", "cli", "JupyterLab on copies of the notebooks (build/lab/)"),
    "check-notebooks": ("iqalib.nbcheck", "cli", "fail if committed notebooks carry outputs"),
}


def usage() -> str:
    lines = ["usage: python -m iqalib [--plugin MODULE ...] <command> [args]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "options:",
              "  --plugin MODULE  import MODULE (or call MODULE:FUNC) first: it registers your own",
              "                   metrics / attacks / purifiers (repeatable; see the README's",
              "                   'Extending'); `<command> --help` shows each command's options"]
    return "\n".join(lines)


def _split_plugins(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take the leading ``--plugin X`` / ``--plugin=X`` options off ``argv``."""
    plugins = []
    while argv and argv[0].startswith("--plugin"):
        opt = argv.pop(0)
        if opt.startswith("--plugin="):
            plugins.append(opt.split("=", 1)[1])
        elif opt == "--plugin" and argv:
            plugins.append(argv.pop(0))
        else:
            raise SystemExit(f"{opt} needs a module name: --plugin mypkg.components\n\n{usage()}")
    return plugins, argv


def _load_plugins(extra: list[str]) -> None:
    """Register the built-in components, then every plugin (flag, environment, entry points),
    so a plugin that reuses a built-in name fails as the plugin's error, not the library's."""
    from importlib import metadata

    from . import plugins

    if extra:
        # child processes (local Dask workers) read the environment, not our argv
        plugins.add_to_environment(extra)
    if not (extra or plugins.env_targets() or metadata.entry_points(group=plugins.GROUP)):
        return
    from .api import _ensure_registered

    _ensure_registered()
    plugins.load_plugins()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra, argv = _split_plugins(argv)
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
    from .errors import IqalibError

    try:
        _load_plugins(extra)
    except IqalibError as e:
        print(e, file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[cmd]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)
