"""The checkpoint catalogue: name -> file, URLs, checksum, size, licence; fetch and verify.

Every pretrained file iqalib can use is listed in :data:`CATALOGUE` (facts from the official
repositories and READMEs named in each entry). Files live in :func:`weights_dir`
(``data/weights/`` in a checkout, env ``IQALIB_WEIGHTS``).

- :func:`path` returns a verified local file or raises :class:`MissingWeightsError` naming
  ``make weights WEIGHTS=<name>``; verification (size, sha256) is cached by mtime + size in
  ``.verified.json`` so a 2 GB file is hashed once, not at every use. A file may also be stored
  under one of the entry's ``aliases`` (the same file under its official name, e.g. MPRNet's
  ``model_denoising.pth``).
- :func:`fetch` downloads into ``<file>.part`` (resumable, see :mod:`iqalib.download`), checks
  size and sha256, and only then renames it over the destination: a failed or corrupt download
  (``--force`` included) never costs the verified file already there. A checksum mismatch on
  one URL discards those bytes and tries the next URL. Mirrors from ``IQALIB_MIRROR``
  (``<mirror>/weights/<file>``) are tried before the official URLs, also for files that
  otherwise need a browser.
- No upstream project publishes a sha256 for these files. The first verified download's
  sha256 is recorded in ``sha256_recorded.json`` next to the weights ("recorded by us") and
  every later fetch or use is checked against it. torchvision and pyiqa put the first 8 hex
  digits of the sha256 into their file names (``vgg16-397923af.pth``): those prefixes are
  published and always checked.
- ``IQALIB_CATALOGUE_OVERRIDES`` names a JSON file ``{name: {field: value}}`` that replaces the
  verification facts (``sha256``, ``sha256_prefix``, ``size``) of entries. It exists for
  stand-in files (``make rehearse`` serves seeded random checkpoints whose hashes cannot carry
  the published prefixes); every process that uses it says so once on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import difflib
import json
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .download import discard_part, download_to_part, file_lock, mirror_urls, mirrors, sha256_file
from .errors import DownloadError, IqalibError, MissingWeightsError, UnknownNameError

RECORDED_FILE = "sha256_recorded.json"
VERIFIED_FILE = ".verified.json"
OVERRIDES_ENV = "IQALIB_CATALOGUE_OVERRIDES"

_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_PYIQA_GH = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
_MSU = "https://titan.gml-team.ru:5003/fsdownload/"  # the MSU group's mirror (their setup scripts)
_TV = "https://download.pytorch.org/models/"
_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/"
_MIB = 1 << 20


@dataclass(frozen=True)
class WeightSpec:
    """One checkpoint file.

    ``url`` is None when only a browser can fetch it (Google Drive / Baidu pages); ``manual``
    then says where to get it and where to put it. ``sha256_source`` is "published",
    "recorded by us" or "not yet recorded" (the catalogue's own value; the effective one,
    including our recorded hashes, is :func:`expected_sha256`). ``sha256_prefix`` is a published
    leading part of the sha256 (torchvision / pyiqa file-name convention); ``mirrors`` are
    tried in order after ``url``. ``size`` is an exact byte count that is checked;
    ``approx_size`` only informs (``weights list``), with its source in a comment.
    ``aliases`` are other names of the same file (its official name where ours differs);
    :func:`path` accepts them, :func:`fetch` saves under ``filename``.
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
    aliases: tuple[str, ...] = field(default_factory=tuple)
    approx_size: int | None = None

    @property
    def urls(self) -> list[str]:
        """The catalogue's own URLs (official first); :func:`candidate_urls` adds mirrors."""
        return [u for u in (self.url, *self.mirrors) if u]

    @property
    def filenames(self) -> tuple[str, ...]:
        """``filename`` and its aliases, in the order :func:`path` looks for them."""
        return (self.filename, *self.aliases)


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view"


def _by_hand(where: str, filename: str) -> str:
    return (f"{where} Save the file as <weights dir>/{filename} (the weights dir is data/weights/ "
            "in a checkout, or $IQALIB_WEIGHTS), then run `python -m iqalib weights verify` to "
            "record its sha256.")


_SPECS = [
    WeightSpec(
        name="linearity-p1q2", filename="p1q2.pth",
        url=_MSU + "Qo9PsqxNk/p1q2.pth",
        licence="no licence file upstream (lidq92/LinearityIQA); research use",
        homepage="https://github.com/lidq92/LinearityIQA",
        manual=_by_hand(
            "Official copies, both linked from the LinearityIQA README: Baidu Pan "
            "https://pan.baidu.com/s/1MRamimHWX8F-SOQ_QsIrvg (password 4z7z) and the Google Drive "
            "folder https://drive.google.com/drive/folders/1H79ptqjcR4NH6HP4wLsEmqwhNqNNqXwh . "
            f"The MSU group's Google Drive copy (certified-iqa-defenses README): "
            f"{_drive('1fwP7rhwdWwUtV92kkdLx88SXq3SvxfRs')} .", "p1q2.pth"),
        used_by="metrics: linearity (Li et al., ACM MM 2020; trained on KonIQ-10k)"),
    WeightSpec(
        name="spaq-baseline", filename="BL_release.pt",
        url=_MSU + "TRm4ciD3T/BL_release.pt",
        licence="research and education only (SPAQ README notice)",
        homepage="https://github.com/h4nwei/SPAQ",
        manual=_by_hand(
            f"Official Google Drive copy (SPAQ README): {_drive('1pXjXAIItViTFs7qUBY-b11WY50mzoVM2')} ;"
            f" the MSU group's copy (certified-iqa-defenses README): "
            f"{_drive('1mR6c8UfFaryZNXX-Wy1d0NHDOJl5vQX_')} .", "BL_release.pt"),
        used_by="metrics: spaq (Fang et al., CVPR 2020 baseline)"),
    WeightSpec(
        name="metaiqa", filename="Metaiqa_livec.pth",
        url=_PYIQA + "Metaiqa_livec.pth", mirrors=(_PYIQA_GH + "Metaiqa_livec.pth",),
        licence="redistributed by pyiqa (PolyForm-Noncommercial-1.0.0); MetaIQA research code",
        homepage="https://github.com/zhuhancheng/MetaIQA",
        manual=("pyiqa's inference weights. The MSU group's own MetaIQA weights (metaiqa.pth, "
                f"{_drive('19U_gHdK3Ld9uI23MABC14Pin9Vfw8AQM')} , certified-iqa-defenses "
                "README) are a different file with the original key layout (resnet_layer.*, "
                "net.*): use them with load_metric('metaiqa', checkpoint='path/to/metaiqa.pth')."),
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
        approx_size=int(527.796 * _MIB),  # torchvision's VGG16_Weights meta "_file_size" (MiB)
        licence="BSD-3-Clause (torchvision code); ImageNet-trained weights",
        homepage="https://pytorch.org/vision/stable/models.html",
        used_by="backbone of DISTS and LPIPS-vgg"),
    WeightSpec(
        name="torchvision-alexnet", filename="alexnet-owt-7be5be79.pth", sha256_prefix="7be5be79",
        url=_TV + "alexnet-owt-7be5be79.pth",
        approx_size=int(233.087 * _MIB),  # torchvision's AlexNet_Weights meta "_file_size" (MiB)
        licence="BSD-3-Clause (torchvision code); ImageNet-trained weights",
        homepage="https://pytorch.org/vision/stable/models.html",
        used_by="backbone of LPIPS-alex"),
    WeightSpec(
        name="guided-diffusion-256-uncond", filename="256x256_diffusion_uncond.pt",
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
            "256x256_diffusion_uncond.pt",
        mirrors=(_MSU + "JtdTGHGqw/256x256_diffusion_uncond.pt",),
        # the released configuration has 552.8 M parameters, stored as float32
        approx_size=552_814_086 * 4,
        licence="code MIT (openai/guided-diffusion); model research use only",
        homepage="https://github.com/openai/guided-diffusion",
        manual=_by_hand("The MSU group's Google Drive copy (certified-iqa-defenses README): "
                        f"{_drive('1QrccFT48o2hEYsdpfLfsfPkNmIlYvvDz')} .",
                        "256x256_diffusion_uncond.pt"),
        used_by="defenses: diffpure (the ADM prior; about 2.2 GB)"),
    WeightSpec(
        name="realesr-general-x4v3", filename="realesr-general-x4v3.pth",
        url=_ESRGAN + "realesr-general-x4v3.pth",
        approx_size=int(4.66 * _MIB),  # "4.66MB" (xinntao/Real-ESRGAN issue #427)
        licence="BSD-3-Clause", homepage="https://github.com/xinntao/Real-ESRGAN",
        used_by="defenses: realesrgan (with realesr-general-wdn-x4v3 for denoise strength)"),
    WeightSpec(
        name="realesr-general-wdn-x4v3", filename="realesr-general-wdn-x4v3.pth",
        url=_ESRGAN + "realesr-general-wdn-x4v3.pth",
        approx_size=int(4.66 * _MIB),  # the same SRVGGNetCompact architecture as x4v3
        licence="BSD-3-Clause", homepage="https://github.com/xinntao/Real-ESRGAN",
        used_by="defenses: realesrgan (denoise strength < 1 mixes it with x4v3)"),
    # MPRNet: the official Google Drive files are model_<task>.pth (swz30/MPRNet READMEs and
    # test scripts); the MSU group's mirror renames the denoising one mprnet_denoise.pth.
    WeightSpec(
        name="mprnet-denoise", filename="model_denoising.pth",
        aliases=("mprnet_denoise.pth",),
        url=_MSU + "Qo5uhUQh4/mprnet_denoise.pth",
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_by_hand("Official Google Drive copy (SIDD denoising, MPRNet Denoising README): "
                        f"{_drive('1LODPt9kYmxwU98g96UrRA0_Eh5HYcsRw')} .", "model_denoising.pth"),
        used_by="defenses: mprnet (denoising model: the MSU group's choice)"),
    WeightSpec(
        name="mprnet-deblur", filename="model_deblurring.pth",
        aliases=("mprnet_deblur.pth",), url=None,
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_by_hand("Official Google Drive copy (GoPro deblurring, MPRNet Deblurring README): "
                        f"{_drive('1QwQUVbk6YVOJViCsOKYNykCsdJSVGRtb')} .", "model_deblurring.pth"),
        used_by="defenses: mprnet:deblur"),
    WeightSpec(
        name="mprnet-derain", filename="model_deraining.pth",
        aliases=("mprnet_derain.pth",), url=None,
        licence="academic non-commercial (swz30/MPRNet LICENSE.md)",
        homepage="https://github.com/swz30/MPRNet",
        manual=_by_hand("Official Google Drive copy (MPRNet Deraining README): "
                        f"{_drive('1O3WEJbcat7eTY6doXWeorAbQ1l_WmMnM')} .", "model_deraining.pth"),
        used_by="defenses: mprnet:derain"),
]

#: every checkpoint iqalib knows, by catalogue name (the built-in facts; see :func:`spec`)
CATALOGUE: dict[str, WeightSpec] = {s.name: s for s in _SPECS}


# --- lookup ------------------------------------------------------------------------------------
def weights_dir() -> Path:
    """Where checkpoints live (``data/weights`` in a checkout; env ``IQALIB_WEIGHTS``)."""
    return paths.weights_dir()


_OVERRIDABLE = ("sha256", "sha256_prefix", "size", "sha256_source")
_overrides_announced: set[str] = set()


def _overrides() -> dict[str, dict]:
    """The entries of ``IQALIB_CATALOGUE_OVERRIDES`` (empty when unset)."""
    p = os.environ.get(OVERRIDES_ENV)
    if not p:
        return {}
    try:
        data = json.loads(Path(p).read_text())
    except (OSError, ValueError) as exc:
        raise IqalibError(f"{OVERRIDES_ENV}={p}: cannot read it as JSON ({exc}); unset it or "
                          "fix the file.") from exc
    for name, fields in data.items():
        bad = set(fields) - set(_OVERRIDABLE)
        if bad:
            raise IqalibError(f"{OVERRIDES_ENV}={p}: entry {name!r} overrides {sorted(bad)}; "
                              f"only {', '.join(_OVERRIDABLE)} may be replaced.")
    if p not in _overrides_announced:
        _overrides_announced.add(p)
        print(f"iqalib.weights: verification facts of {len(data)} checkpoints come from "
              f"{OVERRIDES_ENV}={p}, not from the catalogue.", file=sys.stderr)
    return data


def spec(name: str) -> WeightSpec:
    """The catalogue entry (with ``IQALIB_CATALOGUE_OVERRIDES`` applied); unknown names raise
    :class:`UnknownNameError` with a suggestion."""
    if name in CATALOGUE:
        s = CATALOGUE[name]
        over = _overrides().get(name)
        return dataclasses.replace(s, **over) if over else s
    close = difflib.get_close_matches(name, list(CATALOGUE), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(f"unknown checkpoint {name!r}.{hint} Known: {', '.join(CATALOGUE)} "
                           "(`python -m iqalib weights list`).")


def _present_file(s: WeightSpec) -> Path | None:
    """The file of ``s`` in the weights dir under its name or an alias, or None."""
    for fn in s.filenames:
        f = weights_dir() / fn
        if f.is_file():
            return f
    return None


def local_path(name: str) -> Path:
    """Where the file for ``name`` is stored (an alias name if that is what is present), or
    would be stored; no checks."""
    s = spec(name)
    return _present_file(s) or weights_dir() / s.filename


def candidate_urls(name: str) -> list[str]:
    """Where :func:`fetch` looks, in order: every ``IQALIB_MIRROR`` mirror
    (``<mirror>/weights/<file>``, then the aliases' names), then the catalogue's URLs."""
    s = spec(name)
    mirrored = [u for fn in s.filenames for u in mirror_urls(f"weights/{fn}")]
    # group by mirror: all names on the first mirror before the second mirror
    n = len(mirrors())
    by_mirror = [mirrored[i::n] for i in range(n)] if n else []
    return [u for group in by_mirror for u in group] + s.urls


def _make_target(name: str) -> str:
    return f"`make weights WEIGHTS={name}` (or `python -m iqalib weights fetch {name}`)"


def _manual(s: WeightSpec) -> str:
    return s.manual.replace("<weights dir>", str(weights_dir()))


def _missing_message(s: WeightSpec, problem: str) -> str:
    lines = [f"checkpoint {s.name!r} ({s.filename}) {problem}.",
             (f"Get it with {_make_target(s.name)}; needs the internet or a mirror "
              "(IQALIB_MIRROR).")]
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
    from .atomic import atomic_write_json

    atomic_write_json(p, data)


def recorded_sha256() -> dict[str, dict]:
    """The hashes recorded by us at first verified download (``sha256_recorded.json``)."""
    return _read_json(weights_dir() / RECORDED_FILE)


def expected_sha256(name: str) -> tuple[str | None, str]:
    """``(sha256, source)``: the catalogue's published hash, else our recorded one, else None."""
    s = spec(name)
    if s.sha256:
        return s.sha256, s.sha256_source
    rec = recorded_sha256().get(name)
    if rec and rec.get("filename") in s.filenames and rec.get("sha256"):
        return rec["sha256"], "recorded by us"
    return None, "not yet recorded"


def _record(name: str, sha: str, size: int, origin: str, filename: str) -> None:
    p = weights_dir() / RECORDED_FILE
    data = _read_json(p)
    data[name] = {"filename": filename, "sha256": sha, "size": size, "origin": origin,
                  "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write_json(p, data)


def forget(name: str) -> bool:
    """Drop our recorded sha256 of ``name`` (when upstream really replaced the file); the next
    verified download or ``weights verify`` records it anew. True if there was one."""
    spec(name)
    p = weights_dir() / RECORDED_FILE
    data = _read_json(p)
    if name not in data:
        return False
    del data[name]
    _write_json(p, data)
    return True


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
    _remember_hash(f, sha, st)
    return sha


def _remember_hash(f: Path, sha: str, st: os.stat_result | None = None) -> None:
    """Store ``sha`` as the hash of ``f`` as it is now (size, mtime_ns) in ``.verified.json``."""
    st = st or f.stat()
    cache_p = f.parent / VERIFIED_FILE
    cache = _read_json(cache_p)  # re-read: another process may have written meanwhile
    cache[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    with contextlib.suppress(OSError):  # a read-only weights folder just means no cache
        _write_json(cache_p, cache)


def _check_content(s: WeightSpec, sha: str | None, size: int) -> str | None:
    """None if a file with ``sha``/``size`` matches everything known about ``s``, else the
    problem in words."""
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
    """The verified local file of checkpoint ``name`` (its catalogue file name or an alias).

    Checks the size (when the catalogue knows it) and the sha256 (published, prefix, or recorded
    by us at first download); the hash is cached by mtime + size. Raises
    :class:`MissingWeightsError` naming ``make weights WEIGHTS=<name>`` (and the browser steps
    where a browser is needed) when the file is absent or fails a check.
    """
    s = spec(name)
    f = _present_file(s)
    if f is None:
        raise MissingWeightsError(_missing_message(s, f"is not in {weights_dir()}"))
    size = f.stat().st_size
    sha = _hash_cached(f) if _needs_hash(s) else None
    problem = _check_content(s, sha, size)
    if problem:
        raise MissingWeightsError(_missing_message(
            s, f"at {f} {problem}: it is corrupt or a different file; download it again with "
               f"`python -m iqalib weights fetch {name} --force`"))
    return f


def is_available(name: str) -> bool:
    """True when :func:`path` would succeed."""
    try:
        path(name)
        return True
    except MissingWeightsError:
        return False


def fetch(name: str, *, force: bool = False, progress: bool = True, url: str | None = None) -> Path:
    """Download checkpoint ``name`` into :func:`weights_dir`; return the verified path.

    Tries the ``IQALIB_MIRROR`` mirrors, then the catalogue's URLs (``url`` replaces them all).
    Bytes go to ``<file>.part``; an interrupted download resumes on the next call only from the
    same URL and the same upstream file (see :func:`iqalib.download.download_to_part`). The
    finished file is checked (size, sha256) before an atomic rename; on a mismatch its bytes
    are discarded and the next URL is tried. Without a known sha256 the first verified
    download's hash is recorded ("recorded by us") and later fetches must match it. A present,
    verified file is returned as is unless ``force``; with ``force`` (or when the present copy
    fails its check) the new download replaces it only once the new file has verified.
    Prints the licence.
    """
    s = spec(name)
    dest = weights_dir() / s.filename
    part = dest.with_name(dest.name + ".part")
    with file_lock(dest):
        present = _present_file(s)
        if present is not None and not force:
            try:
                return path(name)
            except MissingWeightsError as exc:
                print(f"{name}: the local copy is bad, downloading a new one ({exc.args[0]})",
                      file=sys.stderr)
        urls = [url] if url else candidate_urls(name)
        if not urls:
            raise DownloadError(f"checkpoint {name!r} cannot be downloaded automatically: "
                                f"{_manual(s)} (or set IQALIB_MIRROR to a mirror holding "
                                f"weights/{s.filename}).")
        errors: list[str] = []
        for u in urls:
            try:
                download_to_part(u, part, progress=progress, desc=name)
            except DownloadError as exc:
                errors.append(str(exc))
                continue
            sha = sha256_file(part)
            problem = _check_content(s, sha, part.stat().st_size)
            if problem:
                discard_part(part)  # never resume from, or keep, bytes that failed the check
                errors.append(f"{u}: the downloaded file {problem}; its bytes were discarded "
                              "(the server may have changed the file or sent an error page)")
                continue
            os.replace(part, dest)
            discard_part(part)  # the record of the part's origin
            if expected_sha256(name)[0] is None:
                _record(name, sha, dest.stat().st_size, u, s.filename)
            _remember_hash(dest, sha)  # path() will not hash the new file again
            if present is not None and present != dest:
                print(f"{name}: {present.name} is left as it was; {dest.name} is used from now "
                      "on", file=sys.stderr)
            print(f"{name}: saved {dest} ({dest.stat().st_size / 1e6:.1f} MB, sha256 "
                  f"{sha[:16]}...). Licence: {s.licence}. {s.homepage}")
            return dest
        msg = "\n  ".join(errors)
        kept = (f"\nThe verified copy already there ({present}) is kept."
                if present is not None and is_available(name) else "")
        recorded = expected_sha256(name)[1] == "recorded by us"
        hint = (f"\nIf upstream really replaced the file, `python -m iqalib weights forget {name}`"
                " drops our recorded sha256." if recorded and "sha256" in msg else "")
        extra = f"\nBy hand: {_manual(s)}" if s.manual else ""
        raise DownloadError(f"{name}: every URL failed:\n  {msg}{kept}{hint}{extra}")


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
                        "or incomplete: download it again with "
                        f"`python -m iqalib weights fetch {name} --force`")) from exc
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
        f = _present_file(s)
        if f is None:
            out[name] = "missing"
            continue
        sha = _hash_cached(f, rehash=rehash)
        problem = _check_content(s, sha, f.stat().st_size)
        if problem:
            out[name] = f"BAD: {problem}"
        elif expected_sha256(name)[0] is None:
            _record(name, sha, f.stat().st_size, "verify (file placed by hand)", f.name)
            out[name] = "ok (sha256 recorded now)"
        else:
            out[name] = "ok"
    return out


# --- what each checkpoint unlocks ---------------------------------------------------------------
def _declared_names(value: Any) -> dict[str | None, tuple[str, ...]] | None:
    """A ``weights`` declaration as ``{preset or None: names}``; None if it is not one.

    Accepted: a tuple/list of catalogue names (the component as a whole), or a dict mapping a
    preset name (``None`` or ``""``: the default settings) to such a tuple."""
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return {None: tuple(value)}
    if isinstance(value, dict) and all(isinstance(v, (tuple, list)) for v in value.values()):
        return {(k or None): tuple(v) for k, v in value.items()}
    return None


def _component_classes(factory: Any) -> list[Any]:
    """The factory and, for a factory function, the class its return annotation names."""
    import typing

    out = [factory]
    if not isinstance(factory, type):
        try:
            ret = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001 - an unresolvable annotation just means no class
            ret = None
        if isinstance(ret, type):
            out.append(ret)
    return out


def unlocks() -> dict[str, list[str]]:
    """Checkpoint name -> the registered components it enables, e.g.
    ``{"linearity-p1q2": ["metric linearity"], "mprnet-deblur": ["purifier mprnet:deblur"]}``.

    Read from the components' own declarations: the ``weights`` attribute (required
    checkpoints; :attr:`iqalib.metrics.base.IQAMetric.weights`, and the same attribute on
    attacks and purifiers) and ``optional_weights`` (used when present, e.g. DiffPure's
    guided-diffusion prior; listed with "(optional)"), on the registered class, the class a
    factory function returns, or the factory itself. A declaration may be a tuple of names or
    a dict ``{preset: names}``. Checkpoints nothing declares map to an empty list.
    """
    from . import attacks, defenses, metrics  # noqa: F401  (registers every component)
    from .registry import ATTACKS, DEFENSES, METRICS

    out: dict[str, list[str]] = {n: [] for n in CATALOGUE}
    for kind, reg in (("metric", METRICS), ("attack", ATTACKS), ("purifier", DEFENSES)):
        for comp in reg.names():
            entry = reg.entry(comp)
            for attr, note in (("weights", ""), ("optional_weights", " (optional)")):
                decl = None
                for obj in _component_classes(entry.factory):
                    decl = _declared_names(getattr(obj, attr, None))
                    if decl:
                        break
                for preset, names in (decl or {}).items():
                    label = f"{kind} {comp}" + (f":{preset}" if preset else "") + note
                    for n in names:
                        if label not in out.setdefault(n, []):
                            out[n].append(label)
    return out


# --- CLI ---------------------------------------------------------------------------------------
def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else \
        f"{n / 1e3:.0f} kB"


def size_text(name: str) -> str:
    """The size ``weights list`` shows: the local file's, else the catalogue's exact size, else
    ``~`` and the size upstream states (or our architecture implies), else "unknown"."""
    s = spec(name)
    f = _present_file(s)
    if f is not None:
        return _fmt_bytes(f.stat().st_size)
    if s.size is not None:
        return _fmt_bytes(s.size)
    if s.approx_size is not None:
        return "~" + _fmt_bytes(s.approx_size)
    return "unknown"


def _status(name: str) -> str:
    s = spec(name)
    if _present_file(s) is not None:
        return "yes" if is_available(name) else "BAD"
    return "no" if (s.url or mirrors()) else "browser"


def _list(unlock: dict[str, list[str]] | None) -> None:
    ms = mirrors()
    print(f"weights dir: {weights_dir()}")
    print(f"mirrors (IQALIB_MIRROR): {' '.join(ms) if ms else 'none'}")
    print(f"{'name':<28} {'file':<30} {'size':>9}  {'here':<7} {'sha256':<17} unlocks")
    for name in CATALOGUE:
        s = spec(name)
        sha_src = expected_sha256(name)[1]
        if sha_src == "not yet recorded" and s.sha256_prefix:
            sha_src = f"prefix {s.sha256_prefix}"
        declared = ", ".join((unlock or {}).get(name, []))
        # until every component declares its checkpoints, the catalogue's own note stands in
        what = declared or (f"({s.used_by})" if s.used_by else "-")
        print(f"{name:<28} {s.filename:<30} {size_text(name):>9}  {_status(name):<7} "
              f"{sha_src:<17} {what}")
        print(f"{'':<28} licence: {s.licence}")
    print("\nhere: yes = present and verified; no = `make weights WEIGHTS=<name>` fetches it; "
          "browser = needs a browser (see `weights fetch <name>`) or a mirror; BAD = fails its "
          "check.")


def cli(argv: list[str]) -> int:
    """``weights list`` | ``weights fetch NAME|all [--force] [--url URL]`` | ``weights verify``
    | ``weights forget NAME``."""
    ap = argparse.ArgumentParser(prog="python -m iqalib weights",
                                 description="list / fetch / verify pretrained checkpoints")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="name, file, size, present?, checksum, what it unlocks")
    pl.add_argument("--no-unlocks", action="store_true",
                    help="skip loading the component registries (faster)")
    pf = sub.add_parser("fetch", help="download NAME (or all), resumable, sha256-checked")
    pf.add_argument("names", nargs="+", help="catalogue names, or 'all'")
    pf.add_argument("--force", action="store_true",
                    help="download again even if present (the present file is replaced only "
                         "once the new one verifies)")
    pf.add_argument("--url", default=None, help="use this URL instead (one name only)")
    pf.add_argument("--no-progress", action="store_true")
    pv = sub.add_parser("verify", help="re-hash present files; record unknown hashes")
    pv.add_argument("names", nargs="*")
    pg = sub.add_parser("forget", help="drop our recorded sha256 of NAME (upstream replaced it)")
    pg.add_argument("names", nargs="+")
    args = ap.parse_args(argv)

    try:
        if args.cmd == "list":
            unlock = None
            if not args.no_unlocks:
                try:
                    unlock = unlocks()
                except Exception as exc:  # noqa: BLE001 - the list must show even then
                    warnings.warn(f"cannot load the component registries ({exc})", stacklevel=1)
            _list(unlock)
            return 0
        if args.cmd == "verify":
            res = verify(args.names or None)
            for name, status in res.items():
                print(f"{name:<28} {status}")
            return 1 if any(v.startswith("BAD") for v in res.values()) else 0
        if args.cmd == "forget":
            for name in args.names:
                print(f"{name}: " + ("recorded sha256 dropped" if forget(name)
                                     else "no recorded sha256"))
            return 0
        names = list(CATALOGUE) if args.names == ["all"] else args.names
        for name in names:
            spec(name)  # unknown names fail before any download starts
    except (UnknownNameError, IqalibError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.url and len(names) != 1:
        print("--url needs exactly one checkpoint name", file=sys.stderr)
        return 2
    failed: dict[str, str] = {}
    for name in names:
        try:
            fetch(name, force=args.force, progress=not args.no_progress, url=args.url)
        except (DownloadError, MissingWeightsError, OSError) as exc:
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
    "OVERRIDES_ENV",
    "WeightSpec",
    "candidate_urls",
    "cli",
    "expected_sha256",
    "fetch",
    "forget",
    "is_available",
    "load_state",
    "local_path",
    "path",
    "recorded_sha256",
    "size_text",
    "spec",
    "unlocks",
    "verify",
    "weights_dir",
]
