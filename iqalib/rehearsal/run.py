"""``make rehearse``: the user's online path (``make weights``, ``make data``, the paper profile's
notebooks) run end to end on this machine, with a local server standing in for the internet.

Everything happens in one work folder (a new temporary folder unless ``--workdir``); the
checkout's ``data/``, ``figures/`` and ``build/`` are never touched, and neither is the
checkpoint catalogue (hashes are recorded in the work folder's weights dir, as on a user's
first download). The steps, each timed and checked:

1. stand-in checkpoints for every catalogue entry, in their official layouts
   (:mod:`.checkpoints`), and a NIPS'17-style ``dev_dataset.csv`` with photos
   (:mod:`.nips17`), served from ``<work>/mirror`` by :class:`.server.FileServer` on 127.0.0.1;
2. ``IQALIB_MIRROR`` points at that server; other HTTP(S) goes to a closed local port, so any
   download that bypasses the mirror fails at once instead of reaching the internet;
3. a corrupted file on the server: ``make weights WEIGHTS=<it>`` must fail with a checksum
   message and leave no partial file in the weights folder;
4. ``make weights`` with one transfer dropped halfway (it must fail and keep the partial
   file), then again (it must resume with a Range request and verify everything); then a
   forced re-download against a changed upstream file must fail and keep the verified copy;
5. ``make data`` from the mirror's CSV (photos through their URLs, two through ready-made
   PNGs on the mirror);
6. every notebook with the ``rehearsal`` papermill profile, each checked to write figures or
   tables;
7. one checkpoint removed: notebook 04 must finish and record the purifier as skipped with its
   ``make weights WEIGHTS=<name>`` hint.

A JSON report (``<work>/report.json``) lists each step with its time, peak memory and outcome.
Exit status 0 only when every step passed. The work folder is deleted after a run that passed
(``--keep`` keeps it) and kept after one that failed, for inspection.

``--reuse`` reruns in an earlier run's work folder: steps 1 and 3-5 are not run again where
that run's report says they passed (its checkpoints, weights and data are used as they are);
the notebooks (those of ``--notebooks``, or all) and step 7 (when notebook 04 is among them)
run again. The report keeps the earlier run's entries and replaces those that ran again. The
measured run starts from nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .server import FileServer

REPO = Path(__file__).resolve().parents[2]
PROFILE = "rehearsal"
#: the entry whose server copy is corrupted (a published-prefix file: its first download is
#: checked, as a corrupt first download of a file without a known hash cannot be)
CORRUPTED = "lpips-alex"
#: the entry whose transfer is dropped halfway in the first ``make weights`` (the largest)
INTERRUPTED = "guided-diffusion-256-uncond"
#: the entry whose upstream copy changes before a forced re-download
CHANGED = "realesr-general-x4v3"
#: the checkpoint removed for the skipped-component check, the notebook and the component
REMOVED = ("realesr-general-x4v3", "04_baseline_purifiers", "realesrgan")
#: NIPS'17 rows whose ready-made 299x299 PNG the mirror also serves
READY_ROWS = (1, 4)


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    detail: list[str] = field(default_factory=list)


class Rehearsal:
    """One rehearsal in ``work`` (see the module docstring)."""

    def __init__(self, work: Path, *, n_photos: int = 8, notebooks: list[str] | None = None,
                 skip_notebooks: bool = False, nb_timeout: int | None = None, seed: int = 0,
                 reuse: bool = False):
        self.work = work
        self.mirror = work / "mirror"
        self.data = work / "data"
        self.weights_dir = self.data / "weights"
        self.n_photos = n_photos
        self.notebook_patterns = notebooks
        self.skip_notebooks = skip_notebooks
        self.nb_timeout = nb_timeout
        self.seed = seed
        self.reuse = reuse
        #: the steps of the earlier run in ``work`` (``--reuse``), by name
        self.earlier: dict[str, dict] = {}
        self.steps: list[Step] = []
        self.srv: FileServer | None = None
        self.env: dict[str, str] = {}
        (work / "logs").mkdir(parents=True, exist_ok=True)

    # --- plumbing -------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(msg, flush=True)

    def step(self, name: str, fn, *, reusable: bool = False) -> Step:
        """Run ``fn(step)`` as the step ``name``; a ``reusable`` step that passed in the
        earlier run of ``--reuse`` is not run again (its earlier entry stays in the report)."""
        if reusable and self.earlier.get(name, {}).get("ok"):
            self.log(f"\n== {name}\n   -> ok in the earlier run (reused)")
            return Step(name, ok=True)
        st = Step(name)
        self.log(f"\n== {name}")
        t0 = time.perf_counter()
        try:
            st.ok = bool(fn(st))
        except Exception as exc:  # noqa: BLE001 - recorded as this step's failure
            st.ok = False
            st.detail.append(f"{type(exc).__name__}: {exc}")
            st.detail.append(traceback.format_exc(limit=3))
        st.seconds = round(time.perf_counter() - t0, 1)
        st.peak_rss_mb = round(_peak_rss_mb(), 1)
        self.steps.append(st)
        for line in st.detail:
            self.log(f"   {line}")
        self.log(f"   -> {'ok' if st.ok else 'FAILED'} ({st.seconds:.0f} s)")
        return st

    def run_cmd(self, args: list[str], log_name: str, *, env: dict | None = None,
                timeout: int | None = None) -> subprocess.CompletedProcess:
        """Run a command with the rehearsal's environment; its output goes to a log file."""
        log = self.work / "logs" / f"{log_name}.log"
        with open(log, "w") as fh:
            proc = subprocess.run(args, cwd=REPO, env=env or self.env, stdout=fh,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        proc.log = log  # type: ignore[attr-defined]
        proc.output = log.read_text(errors="replace")  # type: ignore[attr-defined]
        return proc

    def make(self, target: str, *args: str, log_name: str) -> subprocess.CompletedProcess:
        """``make <target>`` in the checkout (the user's command), or the same CLI command when
        there is no Makefile (an installed package)."""
        if (REPO / "Makefile").is_file() and shutil.which("make"):
            # -o: the environment is given; never let make rebuild it in the middle of a run
            stamp = Path(sys.prefix) / ".iqalib-installed"
            cmd = ["make", "--no-print-directory", "-o", str(stamp), target,
                   f"VENV={sys.prefix}", *args]
        elif target == "weights":
            names = [a.split("=", 1)[1] for a in args if a.startswith("WEIGHTS=")] or ["all"]
            cmd = [sys.executable, "-m", "iqalib", "weights", "fetch", *names]
        else:
            cmd = [sys.executable, "-m", "iqalib", "data", "fetch", "nips17"]
        return self.run_cmd(cmd, log_name)

    # --- steps ----------------------------------------------------------------------------------
    def write_checkpoints(self, st: Step) -> bool:
        from . import checkpoints

        folder = self.mirror / "weights"
        files = checkpoints.write_all(folder, seed=self.seed, log=self.log)
        total = sum(p.stat().st_size for p in files.values())
        st.detail.append(f"{len(files)} files, {total / 1e9:.2f} GB in {folder}")
        return len(files) == len(checkpoints.WRITERS)

    def write_overrides(self) -> Path:
        """The stand-ins cannot carry the hash prefixes that torchvision / pyiqa publish in
        their file names: state the stand-ins' own prefixes instead (checked just the same)."""
        p = self.work / "catalogue-overrides.json"
        if self.reuse and p.is_file():
            return p
        from .. import weights
        from ..download import sha256_file

        over = {}
        for name, s in weights.CATALOGUE.items():
            f = self.mirror / "weights" / s.filename
            fields = {}
            if s.sha256_prefix or s.sha256:
                sha = sha256_file(f)
                fields.update({"sha256_prefix": sha[:8]} if s.sha256_prefix else {"sha256": sha})
            if s.size is not None:
                fields["size"] = f.stat().st_size
            if fields:
                over[name] = fields
        p.write_text(json.dumps(over, indent=1, sort_keys=True))
        return p

    def write_nips17(self, st: Step) -> bool:
        from . import nips17

        photos = nips17.write_photos(self.mirror / "flickr", n=self.n_photos, seed=self.seed)
        nips17.write_csv(self.mirror / "nips17" / "dev_dataset.csv", photos,
                         self.srv.url + "/flickr")
        for i in READY_ROWS:
            if i < len(photos):
                nips17.write_ready_png(self.mirror / "flickr", photos[i],
                                       self.mirror / "nips17" / "images")
        self.photos = photos
        st.detail.append(f"{len(photos)} photos, CSV and {len(READY_ROWS)} ready PNGs under "
                         f"{self.mirror}")
        return len(photos) >= 2

    def check_corrupt(self, st: Step) -> bool:
        from .. import weights

        fn = weights.CATALOGUE[CORRUPTED].filename
        good = (self.mirror / "weights" / fn).read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF  # one flipped byte, same size
        self.srv.files[f"/weights/{fn}"] = bytes(bad)
        try:
            proc = self.make("weights", f"WEIGHTS={CORRUPTED}", log_name="weights-corrupt")
        finally:
            del self.srv.files[f"/weights/{fn}"]
        left = sorted(p.name for p in self.weights_dir.glob(f"{fn}*")) \
            if self.weights_dir.exists() else []
        says = "fails its sha256 check" in proc.output
        st.detail.append(f"exit {proc.returncode}; message names the checksum: {says}; "
                         f"files left in the weights folder: {left or 'none'}")
        return proc.returncode != 0 and says and not left

    def fetch_weights(self, st: Step) -> bool:
        from .. import weights

        fn = weights.CATALOGUE[INTERRUPTED].filename
        size = (self.mirror / "weights" / fn).stat().st_size
        cut = int(size * 0.4)
        self.srv.cut[f"/weights/{fn}"] = cut
        first = self.make("weights", log_name="weights-interrupted")
        part = self.weights_dir / (fn + ".part")
        kept = part.stat().st_size if part.exists() else 0
        st.detail.append(f"first run: exit {first.returncode}, {fn} dropped after {cut} bytes, "
                         f"partial file kept: {kept} bytes")
        n_before = len(self.srv.requests)
        second = self.make("weights", log_name="weights")
        ranges = [r for r in self.srv.requests[n_before:] if r[0].endswith(fn) and r[1]]
        resumed = bool(ranges) and ranges[0][1] == f"bytes={kept}-" and bool(ranges[0][2])
        st.detail.append(f"second run: exit {second.returncode}; resumed with "
                         f"{ranges[0][1] if ranges else 'no Range request'} "
                         f"(If-Range {'sent' if resumed else 'missing'})")
        from ..download import sha256_file

        rec = json.loads((self.weights_dir / weights.RECORDED_FILE).read_text())
        bad = []
        for name, s in weights.CATALOGUE.items():  # the client's hash against the server's file
            f = self.weights_dir / s.filename
            if not f.is_file() or rec.get(name, {}).get("sha256") != \
                    sha256_file(self.mirror / "weights" / s.filename):
                bad.append(name)
        st.detail.append(f"{len(weights.CATALOGUE) - len(bad)}/{len(weights.CATALOGUE)} files "
                         f"identical to the server's; sha256 recorded for {len(rec)} "
                         f"(in {self.weights_dir}, not in the catalogue)")
        if bad:
            st.detail.append(f"missing or different: {bad}")
        leftovers = sorted(p.name for p in self.weights_dir.glob("*.part*"))
        return (first.returncode != 0 and kept > 0 and second.returncode == 0 and resumed
                and not bad and not leftovers)

    def check_force(self, st: Step) -> bool:
        from .. import weights

        fn = weights.CATALOGUE[CHANGED].filename
        before = (self.weights_dir / fn).read_bytes()
        self.srv.files[f"/weights/{fn}"] = before[:-16] + bytes(16)  # upstream changed it
        try:
            proc = self.run_cmd([sys.executable, "-m", "iqalib", "weights", "fetch", CHANGED,
                                 "--force", "--no-progress"], "weights-force")
        finally:
            del self.srv.files[f"/weights/{fn}"]
        kept = (self.weights_dir / fn).read_bytes() == before
        says = "recorded by us" in proc.output and "is kept" in proc.output
        st.detail.append(f"exit {proc.returncode}; verified copy kept: {kept}; message: {says}")
        return proc.returncode != 0 and kept and says

    def list_weights(self, st: Step) -> bool:
        from .. import weights

        proc = self.run_cmd([sys.executable, "-m", "iqalib", "weights", "list"], "weights-list")
        rows = [ln for ln in proc.output.splitlines() if len(ln.split()) > 3 and
                ln.split()[0] in weights.CATALOGUE and ln.split()[4] == "yes"]
        st.detail.append(f"exit {proc.returncode}; {len(rows)} checkpoints listed as present "
                         "and verified")
        return proc.returncode == 0 and len(rows) == len(weights.CATALOGUE)

    def fetch_data(self, st: Step) -> bool:
        import pandas as pd

        proc = self.make("data", log_name="data")
        man = pd.read_csv(self.data / "nips17" / "manifest.csv", dtype=str,
                          keep_default_na=False)
        ok = man["status"].eq("ok")
        ready = man["fetched_from"].str.contains("/nips17/images/").sum()
        st.detail.append(f"exit {proc.returncode}; {ok.sum()}/{len(man)} images ok "
                         f"({ready} from ready-made mirror PNGs, the rest cropped from their "
                         "URLs)")
        return proc.returncode == 0 and ok.all() and len(man) == len(self.photos)

    def notebooks(self) -> list[Path]:
        nbs = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        if self.notebook_patterns:
            nbs = [n for n in nbs if any(fnmatch.fnmatch(n.stem, p) or n.stem.startswith(p)
                                          for p in self.notebook_patterns)]
        return nbs

    def _outputs(self, env: dict) -> dict[str, int]:
        """Figure and table files (path -> mtime) under the rehearsal's output folders."""
        roots = [Path(env["IQALIB_FIGURES"]), Path(env["IQALIB_RESULTS"]) / PROFILE / "tables"]
        return {str(p): p.stat().st_mtime_ns for r in roots if r.exists()
                for p in r.rglob("*") if p.is_file()}

    def run_notebook(self, nb: Path, st: Step, *, env: dict | None = None,
                     build: Path | None = None) -> bool:
        env = env or self.env
        build = build or self.work / "build" / PROFILE
        build.mkdir(parents=True, exist_ok=True)
        before = self._outputs(env)
        out = build / nb.name
        # the Makefile's papermill command (the `reproduce` pattern rule)
        cmd = [sys.executable, "-m", "papermill", "--log-level", "WARNING", "-k", "python3",
               "--cwd", "notebooks", "-f", f"notebooks/params/{PROFILE}.yaml",
               "-p", "PROFILE", PROFILE, str(nb.relative_to(REPO)), str(out)]
        proc = self.run_cmd(cmd, f"nb-{nb.stem}", env=env, timeout=self.nb_timeout)
        after = self._outputs(env)
        new = sorted(Path(p).name for p, m in after.items() if before.get(p) != m)
        figs = [n for n in new if n.endswith((".png", ".svg", ".pdf"))]
        tables = [n for n in new if n.endswith((".csv", ".parquet"))]
        st.detail.append(f"exit {proc.returncode}; wrote {len(figs)} figure files, "
                         f"{len(tables)} tables: {', '.join(new[:8])}"
                         f"{' ...' if len(new) > 8 else ''}")
        if proc.returncode != 0:
            st.detail.append(_papermill_error(proc.output))
        return proc.returncode == 0 and bool(new)

    def check_missing(self, st: Step) -> bool:
        """Notebook 04 again, without one checkpoint, on a copy of the results (so its attacked
        images are reused): it must finish and record the component as skipped."""
        from .. import weights

        name, notebook, component = REMOVED
        nb = REPO / "notebooks" / f"{notebook}.ipynb"
        if not nb.is_file():
            st.detail.append(f"{nb} does not exist")
            return False
        results = self.data / "results-missing"
        shutil.rmtree(results, ignore_errors=True)
        shutil.copytree(self.data / "results", results,
                        ignore=lambda d, names: [n for n in names if n == notebook])
        wdir = self.work / "weights-missing"
        shutil.rmtree(wdir, ignore_errors=True)
        shutil.copytree(self.weights_dir, wdir, copy_function=os.link)
        (wdir / weights.CATALOGUE[name].filename).unlink()
        env = {**self.env, "IQALIB_RESULTS": str(results), "IQALIB_WEIGHTS": str(wdir),
               "IQALIB_FIGURES": str(self.work / "figures-missing")}
        finished = self.run_notebook(nb, st, env=env, build=self.work / "build" / "missing")
        code = ("import sys; from iqalib import study; s = study.skipped('rehearsal'); "
                "sys.stdout.write(s.to_json(orient='records'))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        rows = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
        hint = f"make weights WEIGHTS={name}"
        hits = [r for r in rows if component in str(r.get("what", "")) and hint in
                str(r.get("why", ""))]
        st.detail.append(f"{name} removed; notebook finished: {finished}; skipped rows naming "
                         f"{component!r} with `{hint}`: {len(hits)}")
        if hits:
            st.detail.append(f"e.g. {hits[0]}")
        if proc.returncode != 0:
            st.detail.append(proc.stderr[-800:])
        return finished and bool(hits)

    # --- the whole run --------------------------------------------------------------------------
    def environment(self, overrides: Path) -> dict[str, str]:
        env = dict(os.environ)
        for k in list(env):  # nothing of the user's own iqalib setup leaks in
            if k.startswith("IQALIB_"):
                del env[k]
        closed = "http://127.0.0.1:9"  # nothing listens there: a download that bypasses the
        env.update({                    # mirror fails at once instead of reaching the internet
            "IQALIB_DATA": str(self.data), "IQALIB_WEIGHTS": str(self.weights_dir),
            "IQALIB_CACHE": str(self.data / "cache"), "IQALIB_RESULTS": str(self.data / "results"),
            "IQALIB_FIGURES": str(self.work / "figures"), "IQALIB_MIRROR": self.srv.url + "/",
            "IQALIB_CATALOGUE_OVERRIDES": str(overrides),
            "TORCH_HOME": str(self.work / "torch-home"),
            "XDG_CACHE_HOME": str(self.work / "xdg-cache"),
            "HF_HUB_OFFLINE": "1", "http_proxy": closed, "https_proxy": closed,
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
            "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def checkout_untouched(self, st: Step) -> bool:
        """Nothing under the checkout's data/, figures/ and build/ changed during the run."""
        after = _snapshot()
        changed = sorted(p for p in set(self.checkout) | set(after)
                         if self.checkout.get(p) != after.get(p))
        st.detail.append(f"{len(changed)} files changed under data/, figures/, build/ of "
                         f"{REPO}" + (f": {changed[:10]}" if changed else ""))
        return not changed

    def run(self) -> bool:
        t0 = time.perf_counter()
        self.checkout = _snapshot()
        self.mirror.mkdir(parents=True, exist_ok=True)
        report = self.work / "report.json"
        if self.reuse and report.is_file():
            self.earlier = {s["name"]: s for s in json.loads(report.read_text())["steps"]}
        with FileServer(root=self.mirror) as srv:
            self.srv = srv
            self.log(f"rehearsal in {self.work}; local server {srv.url}")
            if not self.step("stand-in checkpoints in their official layouts",
                             self.write_checkpoints, reusable=True).ok:
                return self.finish(t0)
            self.env = self.environment(self.write_overrides())
            (self.work / "env.sh").write_text("".join(  # to rerun a step by hand afterwards
                f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.env.items())
                if k.startswith(("IQALIB_", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HUB"))))
            if not self.step("NIPS'17 stand-in: photos, dev_dataset.csv, ready PNGs",
                             self.write_nips17).ok:
                return self.finish(t0)
            self.step(f"corrupt {CORRUPTED} on the server: make weights fails, nothing left",
                      self.check_corrupt, reusable=True)
            self.step(f"make weights through IQALIB_MIRROR ({INTERRUPTED} dropped halfway, "
                      "then resumed)", self.fetch_weights, reusable=True)
            self.step(f"weights fetch {CHANGED} --force against a changed upstream file",
                      self.check_force, reusable=True)
            self.step("weights list", self.list_weights, reusable=True)
            data_ok = self.step("make data through IQALIB_MIRROR", self.fetch_data,
                                reusable=True).ok
            if self.skip_notebooks or not data_ok:
                return self.finish(t0)
            for nb in self.notebooks():
                self.step(f"notebook {nb.stem} (profile {PROFILE})",
                          lambda st, nb=nb: self.run_notebook(nb, st))
            if any(nb.stem == REMOVED[1] for nb in self.notebooks()):
                self.step(f"{REMOVED[0]} removed: {REMOVED[2]} skipped, {REMOVED[1]} finishes",
                          self.check_missing)
        return self.finish(t0)

    def finish(self, t0: float) -> bool:
        if not self.work.resolve().is_relative_to(REPO.resolve()):
            self.step("the checkout's data/, figures/ and build/ untouched",
                      self.checkout_untouched)
        return self._report(t0)

    def _report(self, t0: float) -> bool:
        # this run's steps replace the earlier run's of the same name (--reuse); the earlier
        # run's other steps keep their entries
        ran = {s.name: asdict(s) for s in self.steps}
        reused = [name for name in self.earlier if name not in ran]
        steps = [ran.pop(name, old) for name, old in self.earlier.items()] + list(ran.values())
        self.steps = [Step(**s) for s in steps]
        ok = bool(self.steps) and all(s.ok for s in self.steps)
        report = {"ok": ok, "seconds": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": round(_peak_rss_mb(), 1), "work": str(self.work),
                  "reused_steps": reused, "steps": steps}
        (self.work / "report.json").write_text(json.dumps(report, indent=1))
        self.log("\n== summary")
        for s in self.steps:
            self.log(f"  {'ok    ' if s.ok else 'FAILED'} {s.seconds:7.0f} s "
                     f"{s.peak_rss_mb / 1024:5.1f} GB  {s.name}")
        self.log(f"  total {report['seconds'] / 60:.1f} min; peak memory of one process "
                 f"{report['peak_rss_mb'] / 1024:.1f} GB; report {self.work / 'report.json'}")
        return ok


def _snapshot() -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under the checkout's output folders."""
    out = {}
    for top in ("data", "figures", "build"):
        root = REPO / top
        if root.is_dir():
            for p in root.rglob("*"):
                with contextlib.suppress(OSError):
                    if p.is_file():
                        st = p.stat()
                        out[str(p.relative_to(REPO))] = (st.st_size, st.st_mtime_ns)
    return out


def _peak_rss_mb() -> float:
    """The largest resident set of this process or any finished child so far (MB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024  # Linux reports KiB


def _papermill_error(output: str) -> str:
    """The last lines of a papermill failure (the cell's exception)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return " | ".join(lines[-6:])[-1200:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m iqalib.rehearsal", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None,
                    help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder after a pass")
    ap.add_argument("--photos", type=int, default=8, help="NIPS'17 stand-in photos (2-8)")
    ap.add_argument("--notebooks", nargs="*", default=None,
                    help="only these notebooks (name prefixes or globs, e.g. 00 03_*)")
    ap.add_argument("--skip-notebooks", action="store_true",
                    help="stop after make weights / make data")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: rerun in an earlier run's folder; the checkpoint, weights "
                         "and data steps that passed there are not run again, the notebooks are")
    ap.add_argument("--notebook-timeout", type=int, default=None,
                    help="seconds per notebook (default: none, as `make reproduce`)")
    args = ap.parse_args(argv)
    if args.reuse and not args.workdir:
        print("--reuse needs --workdir (the earlier run's folder)", file=sys.stderr)
        return 2
    if not 2 <= args.photos <= 8:
        print("--photos must be between 2 and 8", file=sys.stderr)
        return 2
    work = Path(args.workdir).resolve() if args.workdir else \
        Path(tempfile.mkdtemp(prefix="iqalib-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    r = Rehearsal(work, n_photos=args.photos, notebooks=args.notebooks,
                  skip_notebooks=args.skip_notebooks, nb_timeout=args.notebook_timeout or None,
                  reuse=args.reuse)
    ok = r.run()
    if ok and not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
        print(f"  (work folder {work} removed; --keep keeps it)")
    elif not ok:
        print(f"  work folder kept for inspection: {work}", file=sys.stderr)
    return 0 if ok else 1


__all__ = ["Rehearsal", "main"]
