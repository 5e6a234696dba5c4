"""Plugins: your own metrics, attacks and purifiers, seen by the library, the command line,
papermill runs and Dask workers without editing iqalib.

A plugin is a module that registers components when it is imported (``@METRICS.register(...)``
and friends, see the README's "Extending"), or a callable that registers them when called with
no arguments. iqalib finds plugins in three places and loads each once per process:

- **Entry points** of group ``iqalib.plugins`` of any installed distribution. In the plugin
  package's ``pyproject.toml``::

      [project.entry-points."iqalib.plugins"]
      my-components = "mypkg.components"            # a module: importing it registers
      more = "mypkg.other:register"                 # a callable: called once

  They load the first time a registry is used (``iqalib.load_metric``, ``list_defenses``, the
  command line, a notebook), so every process that has the package installed sees them.
- **The command line**: ``python -m iqalib --plugin mypkg.components run ...`` (repeatable).
- **The environment**: ``IQALIB_PLUGINS="mypkg.components,other.mod:register"``. The command line's
  ``--plugin`` adds to it, so worker processes it starts load the same plugins.

A plugin that fails to import raises :class:`PluginError` naming the plugin and what to do: a
component that silently goes missing would make a run quietly skip it.
"""
from __future__ import annotations

import importlib
import os
from importlib import metadata

from .errors import IqalibError

#: the entry-point group iqalib reads
GROUP = "iqalib.plugins"
#: the environment variable with extra plugins (comma-separated ``module`` or ``module:callable``)
ENV = "IQALIB_PLUGINS"

_loaded: dict[str, str] = {}     # target -> where it came from
_scanned = False


class PluginError(IqalibError, ImportError):
    """A plugin could not be loaded; the message names it and where it was declared."""


def _call_or_import(target: str, origin: str) -> None:
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
        if attr:
            obj()
    except Exception as e:  # any failure inside user code: say whose it is
        raise PluginError(
            f"iqalib plugin {target!r} ({origin}) failed to load: {type(e).__name__}: {e}. "
            f"Fix or uninstall it, or unset it in {ENV}.") from e


def load_plugin(target: str, *, origin: str = "--plugin") -> bool:
    """Load one plugin, ``"module"`` or ``"module:callable"``; False if it was already loaded.

    The target is recorded as loaded only after it succeeds, so a failed plugin is retried
    (and fails loudly) the next time instead of leaving a half-registered state unnoticed."""
    target = target.strip()
    if not target:
        return False
    if target in _loaded:
        return False
    _call_or_import(target, origin)
    _loaded[target] = origin
    return True


def env_targets() -> list[str]:
    """The plugins named in ``$IQALIB_PLUGINS``."""
    return [t.strip() for t in os.environ.get(ENV, "").split(",") if t.strip()]


def load_plugins() -> dict[str, str]:
    """Load every entry point of group :data:`GROUP` and every plugin in ``$IQALIB_PLUGINS``
    (each once per process); return ``{target: origin}`` of everything loaded so far."""
    global _scanned
    if not _scanned:
        # set first: a plugin that itself calls iqalib.list_metrics() must not recurse here
        _scanned = True
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            where = f"entry point {ep.name!r}" + (f" of {dist.name}" if dist is not None else "")
            load_plugin(ep.value, origin=where)
    for target in env_targets():
        load_plugin(target, origin=f"${ENV}")
    return dict(_loaded)


def add_to_environment(targets: list[str]) -> None:
    """Append ``targets`` to ``$IQALIB_PLUGINS`` so child processes (Dask workers) load them."""
    current = env_targets()
    os.environ[ENV] = ",".join(current + [t for t in targets if t not in current])


def loaded() -> dict[str, str]:
    """``{target: origin}`` of the plugins loaded in this process."""
    return dict(_loaded)


__all__ = ["ENV", "GROUP", "PluginError", "add_to_environment", "env_targets", "load_plugin",
           "load_plugins", "loaded"]
