"""The checkpoint catalogue: name -> file, URL, checksum, size, licence; fetch and verify.

Every pretrained file iqalib can use is listed in :data:`CATALOGUE` (facts from
``/work/shared/WEIGHTS.md`` and the official repositories). Files live in
:func:`iqalib.paths.weights_dir` (``data/weights/`` in a checkout, env ``IQALIB_WEIGHTS``).

- :func:`path` returns a verified local file or raises :class:`MissingWeightsError` naming
  ``make weights WEIGHTS=<name>``; verification (size, sha256) is cached by mtime + size in
  ``.verified.json`` so a 2 GB file is hashed once, not at every use.
- :func:`fetch` downloads resumably (HTTP Range into ``<file>.part``; file:// too), checks the
  sha256, renames atomically and prints the licence.
- No upstream project publishes a sha256 for these files. The first verified download's
  sha256 is recorded in ``sha256_recorded.json`` next to the weights ("recorded by us") and
  every later fetch or use is checked against it. torchvision and pyiqa put the first 8 hex
  digits of the sha256 into their file names (``vgg16-397923af.pth``): those prefixes are
  published and always checked.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import difflib
import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .download import download_to_part, finish, sha256_file
from .errors import DownloadError, IqalibError, MissingWeightsError, UnknownNameError

RECORDED_FILE = "sha256_recorded.json"
VERIFIED_FILE = ".verified.json"

_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_PYIQA_GH = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
_MSU = "https://titan.gml-team.ru:5003/fsdownload/"  # the MSU group's mirror (their setup scripts)
_TV = "https://download.pytorch.org/models/"
_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/"


@dataclass(frozen=True)
class WeightSpec:
    """One checkpoint file.

    ``url`` is None when only a browser can fetch it (Google Drive / Baidu pages); ``manual``
    then says where to get it and where to put it. ``sha256_source`` is "published",
    "recorded by us" or "not yet recorded" (the catalogue's own value; the effective one,
    including our recorded hashes, is :func:`expected_sha256`). ``sha256_prefix`` is a published
    leading part of the sha256 (torchvision / pyiqa file-name convention); ``mirrors`` are
    tried in order after ``url``.
    """

    name: str
    filename: str
    url: str | None
    sha256: str | None = None
    sha256_source: str = "not yet recorded"
    size: int | None = None
    licence: str = "unknown"
    homepage: str = ""
    manual: str = ""
    used_by: str = ""
    sha256_prefix: str | None = None
    mirrors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def urls(self) -> list[str]:
        return [u for u in (self.url, *self.mirrors) if u]


def _drive(file_id: str, filename: str) -> str:
    return (f"Open https://drive.google.com/file/d/{file_id}/view in a browser, download the "
            f"file and save it as <weights dir>/{filename} (the weights dir is data/weights/ "
            "in a checkout, or $IQALIB_WEIGHTS); then run `python -m iqalib weights verify` "
            "to record its sha256.")


_SPECS = [
    WeightSpec(
        name="linearity-p1q2", filename="p1q2.pth",
        url=_MSU + "Qo9PsqxNk/p1q2.pth",
        licence="no licence file upstream (lidq92/LinearityIQA); research use",
        homepage="https://github.com/lidq92/LinearityIQA",
        manual=("Official release is Baidu Pan only (link in the LinearityIQA README). If the "
                "MSU mirror is down, download p1q2.pth from there in a browser and save it as "
                "<weights dir>/p1q2.pth, then run `python -m iqalib weights verify`."),
        used_by="metrics: linearity (Li et al., ACM MM 2020; trained on KonIQ-10k)"),
    WeightSpec(
        name="spaq-baseline", filename="BL_release.pt",
        url=_MSU + "TRm4ciD3T/BL_release.pt",
        licence="research and education only (SPAQ README notice)",
        homepage="https://github.com/h4nwei/SPAQ",
        manual=_drive("1pXjXAIItViTFs7qUBY-b11WY50mzoVM2", "BL_release.pt")
        + " (Official Google Drive copy; the URL above is the MSU group's mirror.)",
        used_by="metrics: spaq (Fang et al., CVPR 2020 baseline)"),
    WeightSpec(
        name="metaiqa", filename="Metaiqa_livec.pth",
        url=_PYIQA + "Metaiqa_livec.pth", mirrors=(_PYIQA_GH + "Metaiqa_livec.pth",),
        licence="redistributed by pyiqa (PolyForm-Noncommercial-1.0.0); MetaIQA research code",
        homepage="https://github.com/zhuhancheng/MetaIQA",
        used_by="metrics: metaiqa (Zhu et al., CVPR 2020), pyiqa's inference weights"),
    WeightSpec(
        name="dists", filename="DISTS_weights-f5e65c96.pth", sha256_prefix="f5e65c96",
        url=_PYIQA + "DISTS_weights-f5e65c96.pth",
        mirrors=(_PYIQA_GH + "DISTS_weights-f5e65c96.pth",),
        licence="upstream terms of dingkeyan93/DISTS; redistributed by pyiqa",
        homepage="https://github.com/dingkeyan93/DISTS",
        used_by="attacks: zhang-dists (with torchvision-vgg16)"),
    WeightSpec(
        name="lpips-alex", filename="LPIPS_v0.1_alex-df73285e.pth", sha256_prefix="df73285e",
        url=_PYIQA + "LPIPS_v0.1_alex-df73285e.pth",
        mirrors=(_PYIQA_GH + "LPIPS_v0.1_alex-df73285e.pth",),
        licence="BSD-2-Clause (richzhang/PerceptualSimilarity); redistributed by pyiqa",
        homepage="https://github.com/richzhang/PerceptualSimilarity",
        used_by="attacks: zhang-lpips (with torchvision-alexnet)"),
    WeightSpec(
        name="lpips-vgg", filename="LPIPS_v0.1_vgg-a78928a0.pth", sha256_prefix="a78928a0",
        url=_PYIQA + "LPIPS_v0.1_vgg-a78928a0.pth",
        mirrors=(_PYIQA_GH + "LPIPS_v0.1_vgg-a78928a0.pth",),
        licence="BSD-2-Clause (richzhang/PerceptualSimilarity); redistributed by pyiqa",
        homepage="https://github.com/richzhang/PerceptualSimilarity",
        used_by="attacks: zhang-lpips (vgg variant, with torchvision-vgg16)"),
    WeightSpec(
        name="torchvision-vgg16", filename="vgg16-397923af.pth", sha256_prefix="397923af",
        url=_TV + "vgg16-397923af.pth",
        licence="BSD-3-Clause (torchvision code); ImageNet-trained weights",
        homepage="https://pytorch.org/vision/stable/models.html",
        used_by="backbone of DISTS and LPIPS-vgg"),
    WeightSpec(
        name="torchvision-alexnet", filename="alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
        url=_TV + "alexnet-owt-7be5be79.pth",
        licence="BSD-3-Clause (torchvision code); ImageNet-trained weights",
        homepage="https://pytorch.org/vision/stable/models.html",
        used_by="backbone of LPIPS-alex"),
    WeightSpec(
        name="guided-diffusion-256-uncond", filename="256x256_diffusion_uncond.pt",
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
            "256x256_diffusion_uncond.pt",
        mirrors=(_MSU + "JtdTGHGqw/256x256_diffusion_uncond.pt",),
        licence="code MIT (openai/guided-diffusion); model research use only",
        homepage="https://github.com/openai/guided-diffusion",
        used_by="defenses: diffpure (the ADM prior; about 2.1 GB)"),
    WeightSpec(
        name="realesr-general-x4v3", filename="realesr-general-x4v3.pth",
        url=_ESRGAN + "realesr-general-x4v3.pth",
        licence="BSD-3-Clause", homepage="https://github.com/xinntao/Real-ESRGAN",
        used_by="defenses: realesrgan (with realesr-general-wdn-x4v3 for denoise strength)"),
    WeightSpec(
        name="realesr-general-wdn-x4v3", filename="realesr-general-wdn-x4v3.pth",
        url=_ESRGAN + "realesr-general-wdn-x4v3.pth",
        licence="BSD-3-Clause", homepage="https://github.com/xinntao/Real-ESRGAN",
        used_by="defenses: realesrgan (denoise strength < 1 mixes it with x4v3)"),
    WeightSpec(
        name="mprnet-denoise", filename="mprnet_denoise.pth",
        url=_MSU + "Qo5uhUQh4/mprnet_denoise.pth",
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_drive("1LODPt9kYmxwU98g96UrRA0_Eh5HYcsRw", "mprnet_denoise.pth")
        + " (Official Google Drive copy, SIDD denoising; the URL above is the MSU group's mirror.)",
        used_by="defenses: mprnet (denoising model: the MSU group's choice)"),
    WeightSpec(
        name="mprnet-deblur", filename="mprnet_deblur.pth", url=None,
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_drive("1QwQUVbk6YVOJViCsOKYNykCsdJSVGRtb", "mprnet_deblur.pth"),
        used_by="defenses: mprnet:deblur"),
    WeightSpec(
        name="mprnet-derain", filename="mprnet_derain.pth", url=None,
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_drive("1O3WEJbcat7eTY6doXWeorAbQ1l_WmMnM", "mprnet_derain.pth"),
        used_by="defenses: mprnet:derain"),
]

#: every checkpoint iqalib knows, by catalogue name
CATALOGUE: dict[str, WeightSpec] = {s.name: s for s in _SPECS}


# --- lookup ------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """Where checkpoints live (``data/weights`` in a checkout; env ``IQALIB_WEIGHTS``)."""
    return paths.weights_dir()


def spec(name: str) -> WeightSpec:
    """The catalogue entry; unknown names raise :class:`UnknownNameError` with a suggestion."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    close = difflib.get_close_matches(name, list(CATALOGUE), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(f"unknown checkpoint {name!r}.{hint} Known: {', '.join(CATALOGUE)} "
                           "(`python -m iqalib weights list`).")


def local_path(name: str) -> Path:
    """Where the file for ``name`` is (or would be) stored; no checks."""
    return weights_dir() / spec(name).filename


def _make_target(name: str) -> str:
    return f"`make weights WEIGHTS={name}` (or `python -m iqalib weights fetch {name}`)"


def _manual(s: WeightSpec) -> str:
    return s.manual.replace("<weights dir>", str(weights_dir()))


def _missing_message(s: WeightSpec, problem: str) -> str:
    lines = [f"checkpoint {s.name!r} ({s.filename}) {problem}.",
             f"Get it with {_make_target(s.name)}; needs the internet."]
    if s.manual:
        lines.append(("If that fails: " if s.url else "It needs a browser: ") + _manual(s))
    if s.used_by:
        lines.append(f"Used by {s.used_by}; licence: {s.licence}.")
    return "\n".join(lines)


# --- small JSON sidecars ----------------------------------------------------------------------
def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(p: Path, data: dict) -> None:
    from .images import atomic_write_bytes

    atomic_write_bytes(p, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def recorded_sha256() -> dict[str, dict]:
    """The hashes recorded by us at first verified download (``sha256_recorded.json``)."""
    return _read_json(weights_dir() / RECORDED_FILE)


def expected_sha256(name: str) -> tuple[str | None, str]:
    """``(sha256, source)``: the catalogue's published hash, else our recorded one, else None."""
    s = spec(name)
    if s.sha256:
        return s.sha256, s.sha256_source
    rec = recorded_sha256().get(name)
    if rec and rec.get("filename") == s.filename and rec.get("sha256"):
        return rec["sha256"], "recorded by us"
    return None, "not yet recorded"


def _record(name: str, sha: str, size: int, origin: str) -> None:
    p = weights_dir() / RECORDED_FILE
    data = _read_json(p)
    data[name] = {"filename": spec(name).filename, "sha256": sha, "size": size, "origin": origin,
                  "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write_json(p, data)


def _hash_cached(f: Path, *, rehash: bool = False) -> str:
    """sha256 of ``f``, cached by (size, mtime_ns) in ``.verified.json``."""
    st = f.stat()
    cache_p = f.parent / VERIFIED_FILE
    cache = _read_json(cache_p)
    entry = cache.get(f.name)
    if (not rehash and entry and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns):
        return entry["sha256"]
    sha = sha256_file(f)
    cache = _read_json(cache_p)  # re-read: another process may have written meanwhile
    cache[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):  # a read-only weights folder just means no cache
        _write_json(cache_p, cache)
    return sha


def _check_content(s: WeightSpec, f: Path, sha: str | None, size: int) -> str | None:
    """None if ``f`` matches everything known about ``s``, else the problem in words."""
    if s.size is not None and size != s.size:
        return f"has {size} bytes, expected {s.size}"
    expected, source = expected_sha256(s.name)
    if expected and sha is not None and sha != expected:
        return f"fails its sha256 check (expected {expected} [{source}], got {sha})"
    if s.sha256_prefix and sha is not None and not sha.startswith(s.sha256_prefix):
        return (f"fails its sha256 check (expected a hash starting {s.sha256_prefix} "
                f"[published in the file name], got {sha})")
    return None


def _needs_hash(s: WeightSpec) -> bool:
    return bool(expected_sha256(s.name)[0] or s.sha256_prefix)


# --- public API --------------------------------------------------------------------------------
def path(name: str) -> Path:
    """The verified local file of checkpoint ``name``.

    Checks the size (when the catalogue knows it) and the sha256 (published, prefix, or recorded
    by us at first download); the hash is cached by mtime + size. Raises
    :class:`MissingWeightsError` naming ``make weights WEIGHTS=<name>`` (and the browser steps
    where a browser is needed) when the file is absent or fails a check.
    """
    s = spec(name)
    f = weights_dir() / s.filename
    if not f.is_file():
        raise MissingWeightsError(_missing_message(s, f"is not in {weights_dir()}"))
    size = f.stat().st_size
    sha = _hash_cached(f) if _needs_hash(s) else None
    problem = _check_content(s, f, sha, size)
    if problem:
        raise MissingWeightsError(_missing_message(
            s, f"at {f} {problem}: it is corrupt or a different file; delete it and download "
               "it again"))
    return f


def is_available(name: str) -> bool:
    """True when :func:`path` would succeed."""
    try:
        path(name)
        return True
    except MissingWeightsError:
        return False


@contextlib.contextmanager
def _lock(target: Path):
    """Serialise fetches of the same file across processes (POSIX advisory lock)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_p = target.with_name(target.name + ".lock")
    with open(lock_p, "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory lock, still correct for a single process
            pass
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_UN)


def fetch(name: str, *, force: bool = False, progress: bool = True, url: str | None = None) -> Path:
    """Download checkpoint ``name`` into :func:`weights_dir`; return the verified path.

    Resumable: bytes go to ``<file>.part`` with HTTP Range requests, so re-running after an
    interruption continues where it stopped (file:// URLs too). The finished file is checked
    (size, sha256) before an atomic rename; on a mismatch nothing is kept and
    :class:`DownloadError` says expected vs got. Without a known sha256 the first verified
    download's hash is recorded ("recorded by us") and later fetches must match it. ``url``
    overrides the catalogue's URLs (a mirror, a local file://). ``force`` re-downloads.
    Prints the licence.
    """
    s = spec(name)
    dest = weights_dir() / s.filename
    part = dest.with_name(dest.name + ".part")
    with _lock(dest):
        if force:
            dest.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
        elif dest.exists():
            try:
                return path(name)
            except MissingWeightsError as exc:
                print(f"{name}: the local copy is bad, downloading again ({exc.args[0]})",
                      file=sys.stderr)
                dest.unlink()
        urls = [url] if url else s.urls
        if not urls:
            raise DownloadError(f"checkpoint {name!r} cannot be downloaded automatically: "
                                f"{_manual(s)}")

        seen: dict[str, str] = {}

        def check(p: Path) -> None:
            sha = sha256_file(p)
            problem = _check_content(s, p, sha, p.stat().st_size)
            if problem:
                raise DownloadError(f"{name}: the downloaded file {problem}. Nothing was kept. "
                                    "The server may have changed the file or sent an error "
                                    "page; try again later or another mirror (url=...).")
            seen["sha256"] = sha

        errors: list[str] = []
        for u in urls:
            try:
                download_to_part(u, part, progress=progress, desc=name)
            except DownloadError as exc:
                errors.append(str(exc))
                continue
            finish(part, dest, check=check)  # a checksum mismatch raises and keeps nothing
            sha = seen["sha256"]
            if expected_sha256(name)[0] is None:
                _record(name, sha, dest.stat().st_size, u)
            _hash_cached(dest)  # seeds the verification cache: path() will not re-hash
            print(f"{name}: saved {dest} ({dest.stat().st_size / 1e6:.1f} MB, sha256 {sha[:16]}...)."
                  f" Licence: {s.licence}. {s.homepage}")
            return dest
        msg = "\n  ".join(errors)
        extra = f"\nBy hand: {_manual(s)}" if s.manual else ""
        raise DownloadError(f"{name}: every URL failed:\n  {msg}{extra}")


def _numpy_safe_globals(f: Path) -> list:
    """The numpy globals a checkpoint needs (old checkpoints pickle numpy scalars/arrays)."""
    import importlib

    import numpy as np
    import torch

    # dtype classes are reached only while unpickling, so the scan below does not list them
    out: list = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    for qual in torch.serialization.get_unsafe_globals_in_checkpoint(f):
        mod, _, attr = qual.rpartition(".")
        if not mod.split(".")[0] == "numpy":
            raise pickle.UnpicklingError(f"non-numpy global {qual}")
        out.append(getattr(importlib.import_module(mod), attr))
    return out


def load_state(name: str, key: str | None = None) -> dict[str, Any]:
    """``torch.load(path(name), map_location="cpu", weights_only=True)``, optionally ``[key]``.

    Only plain tensors / containers (and numpy arrays, which some old checkpoints carry) are
    unpickled. A corrupt or truncated file raises :class:`MissingWeightsError` naming the file
    and the ``make weights`` target.
    """
    import torch

    f = path(name)
    try:
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" not in str(exc):
                raise
            try:
                allowed = _numpy_safe_globals(f)
            except pickle.UnpicklingError as exc2:
                raise IqalibError(f"{f}: the checkpoint holds Python objects that cannot be "
                                  f"loaded safely ({exc2}); iqalib only loads tensors.") from exc
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except IqalibError:
        raise
    except Exception as exc:  # RuntimeError (bad zip), EOFError, UnpicklingError, ...
        raise MissingWeightsError(_missing_message(
            spec(name), f"at {f} cannot be loaded ({type(exc).__name__}: {exc}); it is corrupt "
                        "or incomplete: delete it and download it again")) from exc
    if key is None:
        return obj
    if not isinstance(obj, dict) or key not in obj:
        keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise KeyError(f"{f} has no key {key!r}; top-level keys: {keys}")
    return obj[key]


def verify(names: list[str] | None = None, *, rehash: bool = True) -> dict[str, str]:
    """Check every present file (full re-hash by default); record hashes not yet known.

    Returns ``{name: status}`` with status "ok", "ok (sha256 recorded now)", "missing" or
    "BAD: ...". A manually placed file (Google Drive / Baidu) gets its hash recorded here.
    """
    out: dict[str, str] = {}
    for name in names or list(CATALOGUE):
        s = spec(name)
        f = weights_dir() / s.filename
        if not f.is_file():
            out[name] = "missing"
            continue
        sha = _hash_cached(f, rehash=rehash)
        problem = _check_content(s, f, sha, f.stat().st_size)
        if problem:
            out[name] = f"BAD: {problem}"
        elif expected_sha256(name)[0] is None:
            _record(name, sha, f.stat().st_size, "verify (file placed by hand)")
            out[name] = "ok (sha256 recorded now)"
        else:
            out[name] = "ok"
    return out


# --- CLI ---------------------------------------------------------------------------------------
def _fmt_size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def cli(argv: list[str]) -> int:
    """``weights list`` | ``weights fetch NAME|all [--force] [--url URL]`` | ``weights verify``."""
    ap = argparse.ArgumentParser(prog="python -m iqalib weights",
                                 description="list / fetch / verify pretrained checkpoints")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="name, size, licence, present?")
    pf = sub.add_parser("fetch", help="download NAME (or all), resumable, sha256-checked")
    pf.add_argument("names", nargs="+", help="catalogue names, or 'all'")
    pf.add_argument("--force", action="store_true", help="download again even if present")
    pf.add_argument("--url", default=None, help="use this URL instead (one name only)")
    pf.add_argument("--no-progress", action="store_true")
    pv = sub.add_parser("verify", help="re-hash present files; record unknown hashes")
    pv.add_argument("names", nargs="*")
    args = ap.parse_args(argv)

    if args.cmd == "list":
        print(f"weights dir: {weights_dir()}")
        print(f"{'name':<28} {'size':>9}  {'present':<8} {'sha256':<17} licence")
        for name, s in CATALOGUE.items():
            f = weights_dir() / s.filename
            present = "yes" if f.is_file() else ("browser" if not s.url else "no")
            size = f.stat().st_size if f.is_file() else s.size
            sha_src = expected_sha256(name)[1]
            if sha_src == "not yet recorded" and s.sha256_prefix:
                sha_src = f"prefix {s.sha256_prefix}"
            print(f"{name:<28} {_fmt_size(size):>9}  {present:<8} {sha_src:<17} {s.licence}")
        return 0

    if args.cmd == "verify":
        try:
            res = verify(args.names or None)
        except UnknownNameError as exc:
            print(exc, file=sys.stderr)
            return 2
        for name, status in res.items():
            print(f"{name:<28} {status}")
        return 1 if any(v.startswith("BAD") for v in res.values()) else 0

    names = list(CATALOGUE) if args.names == ["all"] else args.names
    if args.url and len(names) != 1:
        print("--url needs exactly one checkpoint name", file=sys.stderr)
        return 2
    failed: dict[str, str] = {}
    for name in names:
        try:
            fetch(name, force=args.force, progress=not args.no_progress, url=args.url)
        except (DownloadError, UnknownNameError, MissingWeightsError, OSError) as exc:
            failed[name] = str(exc)
            print(f"{name}: FAILED\n  " + str(exc).replace("\n", "\n  "), file=sys.stderr)
    ok = len(names) - len(failed)
    print(f"\n{ok}/{len(names)} checkpoints present and verified in {weights_dir()}.")
    if failed:
        print("Still missing (see the messages above for what to do): "
              + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


__all__ = [
    "CATALOGUE",
    "WeightSpec",
    "cli",
    "expected_sha256",
    "fetch",
    "is_available",
    "load_state",
    "local_path",
    "path",
    "recorded_sha256",
    "spec",
    "verify",
    "weights_dir",
]
