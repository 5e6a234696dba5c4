"""Fingerprints: short hashes of what determines a result, for cache and task keys.

A cached result may be reused only when everything that produced it is the same. Three kinds
of things enter a key:

- **code**: :func:`code_digest` hashes the source of a class (every class of its MRO outside
  the standard library, with the modules that define them) or a function (and its module),
  and the code objects in memory (:func:`live_code_digest`: an edited file that was not
  reloaded still runs the old code). Classes from installed third-party packages count by the
  package's version instead. Editing a metric, purifier or attack (or the base classes it
  inherits) changes the digest.
- **state**: :func:`state_digest` hashes an object's settings and tensors canonically (the
  same object gives the same digest in every process, unlike pickled bytes, which carry
  per-process ids for classes pickled by value): ``nn.Module`` parameters and buffers by
  their bytes, attributes recursively, functions by their source.
- **content**: :func:`tensor_digest` hashes pixels (dtype, shape and bytes); files are hashed
  by their bytes where they are read (``ImageSet.content_id``).

:func:`object_fingerprint` = code + state, for objects a user passes in.
Registered components (``"jpeg:q30"``) are fingerprinted by the registry from their spec,
without building them (:meth:`iqalib.registry.Registry.fingerprint`).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"builtins", "__future__"}
_SITE = {Path(p).resolve() for key in ("purelib", "platlib")
         if (p := sysconfig.get_paths().get(key))}


def sha(*parts: Any, n: int = 24) -> str:
    """A hex sha256 (first ``n`` digits) of the parts' canonical JSON."""
    blob = json.dumps([str(p) if not isinstance(p, (int, float, bool, type(None))) else p
                       for p in parts])
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def package_version(top: str) -> str:
    if top == "iqalib":
        from . import __version__

        return __version__
    try:
        import importlib.metadata

        return importlib.metadata.version(top)
    except Exception:  # noqa: BLE001 - a module that is not a distribution
        mod = sys.modules.get(top)
        return str(getattr(mod, "__version__", "?"))


def _installed(module: types.ModuleType) -> bool:
    f = getattr(module, "__file__", None)
    if not f:
        return False
    path = Path(f).resolve()
    return any(site in path.parents for site in _SITE)


@functools.lru_cache(maxsize=512)
def _module_digest(name: str, mtime: float) -> str:
    module = sys.modules[name]
    try:
        src = inspect.getsource(module)
    except (OSError, TypeError):
        return f"{name}:nosource"
    return hashlib.sha256(src.encode()).hexdigest()[:24]


def _file_mtime(module: types.ModuleType) -> float:
    try:
        return Path(module.__file__).stat().st_mtime
    except (OSError, TypeError, AttributeError):
        return 0.0


def module_digest(module: types.ModuleType | str) -> str:
    """Digest of a module's source (its package's version for installed third-party ones)."""
    if isinstance(module, str):
        module = sys.modules[module]
    top = module.__name__.split(".")[0]
    if top in _STDLIB:
        return f"{top}:stdlib"
    if top != "iqalib" and _installed(module):
        return f"{top}=={package_version(top)}"
    return _module_digest(module.__name__, _file_mtime(module))


def _object_source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _code_object_digest(code: types.CodeType) -> list:
    """The parts of a code object that define its behaviour (bytecode, names, constants;
    nested functions recursively), in a form that is the same in every process."""
    consts = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            consts.append(_code_object_digest(c))
        elif isinstance(c, frozenset):
            consts.append(sorted(repr(v) for v in c))
        else:
            consts.append(repr(c))
    return [code.co_code.hex(), list(code.co_names), list(code.co_varnames),
            list(code.co_freevars), consts]


def live_code_digest(obj: Any) -> str:
    """Digest of the code *in memory* of a function or of a class's own methods: the source on
    disk may have been edited without the module being reloaded (a notebook), and then the
    key must still describe the code that runs."""
    funcs = []
    if isinstance(obj, type):
        for name, value in sorted(vars(obj).items()):
            for f in (value, getattr(value, "__func__", None), getattr(value, "fget", None),
                      getattr(value, "fset", None)):
                if isinstance(f, types.FunctionType):
                    funcs.append((name, _code_object_digest(f.__code__)))
                    break
    elif isinstance(obj, types.FunctionType):
        funcs.append((obj.__qualname__, _code_object_digest(obj.__code__)))
    return sha(json.dumps(funcs, sort_keys=True))


def code_digest(obj: Any) -> str:
    """Digest of the code behind a class, function or instance (see the module docstring)."""
    if not isinstance(obj, (type, types.FunctionType, types.MethodType,
                            functools.partial)) and not inspect.isroutine(obj):
        obj = type(obj)
    if isinstance(obj, functools.partial):
        return sha("partial", code_digest(obj.func))
    if isinstance(obj, types.MethodType):
        return sha("method", code_digest(obj.__func__), code_digest(type(obj.__self__)))
    parts = []
    modules: dict[str, types.ModuleType] = {}
    classes = obj.__mro__ if isinstance(obj, type) else [obj]
    for c in classes:
        mod = sys.modules.get(getattr(c, "__module__", "") or "")
        if mod is None:
            parts.append(f"{getattr(c, '__qualname__', c)}:{_object_source(c)}")
            continue
        if mod.__name__.split(".")[0] in _STDLIB:
            continue
        digest = module_digest(mod)
        if digest.endswith(":nosource"):  # a class defined in a notebook cell or a REPL
            digest = hashlib.sha256(_object_source(c).encode()).hexdigest()[:24]
        parts.append(f"{mod.__name__}.{getattr(c, '__qualname__', c)}:{digest}:"
                     f"{live_code_digest(c) if _own_code(mod) else ''}")
        modules[mod.__name__] = mod
    # the project modules these modules use (a purifier's network, a shared helper): one level
    for name in sorted(_used_modules(modules.values()) - set(modules)):
        parts.append(f"{name}:{module_digest(sys.modules[name])}")
    return sha(*parts)


def _own_code(module: types.ModuleType | None) -> bool:
    """A module whose source counts (the project's or the user's, not stdlib / installed)."""
    if module is None:
        return False
    top = module.__name__.split(".")[0]
    return top not in _STDLIB and (top == "iqalib" or not _installed(module))


def _used_modules(modules) -> set[str]:
    used: set[str] = set()
    for mod in modules:
        if not _own_code(mod) or mod.__name__ == "__main__":
            continue
        for value in list(vars(mod).values()):
            target = value if isinstance(value, types.ModuleType) else sys.modules.get(
                getattr(value, "__module__", None) or "") if isinstance(
                value, (type, types.FunctionType)) else None
            if isinstance(target, types.ModuleType) and _own_code(target) \
                    and getattr(target, "__file__", None):
                used.add(target.__name__)
    return used


# -- state ---------------------------------------------------------------------------------
def tensor_digest(x: torch.Tensor | np.ndarray, n: int = 24) -> str:
    """sha256 of a tensor's dtype, shape and bytes (on the CPU, contiguous)."""
    if torch.is_tensor(x):
        t = x.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        head = f"{t.dtype}:{tuple(t.shape)}"
    else:
        a = np.ascontiguousarray(x)
        data, head = a.tobytes(), f"{a.dtype}:{a.shape}"
    h = hashlib.sha256(head.encode())
    h.update(data)
    return h.hexdigest()[:n]


_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()).keys()) - {
    "_parameters", "_buffers", "_modules"}


def _canon(obj: Any, depth: int, seen: set[int]) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, bytes):
        return ["bytes", hashlib.sha256(obj).hexdigest()[:24]]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return ["tensor", tensor_digest(obj)]
    if isinstance(obj, (torch.device, torch.dtype, Path)):
        return str(obj)
    if isinstance(obj, (np.generic,)):
        return repr(obj.item())
    if isinstance(obj, type) or inspect.isroutine(obj) or isinstance(obj, functools.partial):
        out = ["code", getattr(obj, "__qualname__", type(obj).__name__), code_digest(obj)]
        closure = getattr(obj, "__closure__", None)
        if closure and depth > 0 and id(obj) not in seen:
            seen.add(id(obj))
            cells = []
            for c in closure:
                try:
                    cells.append(_canon(c.cell_contents, depth - 1, seen))
                except ValueError:  # an empty cell
                    cells.append("<empty>")
            out.append(cells)
        return out
    if id(obj) in seen or depth <= 0:
        return ["ref", type(obj).__qualname__]
    seen.add(id(obj))
    if isinstance(obj, dict):
        items = sorted(((repr(k), _canon(v, depth - 1, seen)) for k, v in obj.items()),
                       key=lambda kv: kv[0])
        return ["dict", items]
    if isinstance(obj, (list, tuple)):
        return [type(obj).__name__, [_canon(v, depth - 1, seen) for v in obj]]
    if isinstance(obj, (set, frozenset)):
        return ["set", sorted(json.dumps(_canon(v, depth - 1, seen), sort_keys=True)
                              for v in obj)]
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        text = repr(obj)
        return [type(obj).__qualname__, "" if " at 0x" in text else text]
    if isinstance(obj, torch.nn.Module):
        attrs = {k: v for k, v in attrs.items() if k not in _MODULE_INTERNALS}
    return [type(obj).__qualname__, code_digest(type(obj)), _canon(attrs, depth - 1, seen)]


def state_digest(obj: Any, *, depth: int = 8) -> str:
    """A digest of an object's settings and tensors that is the same in every process."""
    return sha(json.dumps(_canon(obj, depth, set()), sort_keys=True, default=str))


def object_fingerprint(obj: Any) -> str:
    """Code + state of a user-supplied component (a class, an instance or a factory)."""
    return sha("object", code_digest(obj), state_digest(obj))


__all__ = ["code_digest", "module_digest", "object_fingerprint", "package_version", "sha",
           "state_digest", "tensor_digest"]
