"""Training photos that installed packages ship, read without the internet.

Both training pipelines draw from here:

- :data:`PHOTOS`: the 14 natural photos of scikit-image, scikit-learn, matplotlib and pyiqa's
  calibration references (``effnet-iqa`` trains on 10 of them and holds 4 out). The offline
  sample set (``load_dataset("samples")``) is cut from these same photos.
- :data:`EXTRA_SOURCES`: training-only images for ``effnet-iqa`` (scikit-image textures,
  microscopy and astronomy images, pyiqa's test JPEGs); greyscale ones are replicated to RGB.
- :data:`IMAGENET_PHOTOS`: the 20 ImageNet validation photos that the ``foolbox==3.3.4`` wheel
  ships (``foolbox/data/imagenet_NN_<class>.jpg``; 19 at 512x512, one 1024x683). The code is
  MIT; the images' own licence is not stated (ImageNet-sourced: research use). Read through
  :mod:`iqalib.package_data`: foolbox is installed ``--no-deps`` and never imported. The FCN
  filter's offline training set, disjoint from the sample set.

Photos are ``uint8 [H,W,3]`` arrays (:func:`load_source`) or ``[3,H,W]`` float tensors in
[0,1] (:func:`load_photo`, :func:`to_tensor`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import MissingWeightsError
from ..package_data import dist_files, package_file

#: the natural photos: name -> (package, identifier)
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut"),
    "chelsea": ("skimage", "chelsea"),
    "coffee": ("skimage", "coffee"),
    "rocket": ("skimage", "rocket"),
    "motorcycle_left": ("skimage", "stereo_motorcycle:0"),
    "motorcycle_right": ("skimage", "stereo_motorcycle:1"),
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    **{n: ("pyiqa", f"ResultsCalibra/ref_dir/{n}.bmp") for n in ("I03", "I04", "I06", "I08", "I19")},
}
#: extra training-only images of the learned metric (more content variety)
EXTRA_SOURCES: dict[str, tuple[str, str]] = {
    **{n: ("skimage", n) for n in ("camera", "moon", "brick", "grass", "gravel", "coins", "cell",
                                   "immunohistochemistry", "hubble_deep_field", "retina")},
    **{f"pyiqa_{i}": ("pyiqa", f"tests/test_efficiency_img_dir/{f}") for i, f in enumerate((
        "frame_7gzdcz9sif0ekg31.jpg", "SPAQ_10241.jpg", "frame_4wrwr48cdk6rbcjl.jpg",
        "frame_9ogwhvvy7gfj6jzh.jpg"))},
}
#: the foolbox wheel's ImageNet photos' folder (inside the distribution)
_FOOLBOX_DATA = "foolbox/data/"


def imagenet_photos() -> dict[str, tuple[str, str]]:
    """The foolbox wheel's 20 ImageNet photos, ``imagenet_NN_<class>`` -> source, in file order.

    Raises :class:`~iqalib.errors.MissingWeightsError` naming the install command when the
    wheel is absent.
    """
    files = [f for f in dist_files("foolbox")
             if f.startswith(_FOOLBOX_DATA + "imagenet_") and f.endswith(".jpg")]
    if not files:
        raise MissingWeightsError(
            "the FCN filter's offline training photos come from the foolbox wheel: "
            "pip install --no-deps foolbox==3.3.4 (requirements-nodeps.txt; never imported)")
    return {f[len(_FOOLBOX_DATA):-4]: ("foolbox", f) for f in sorted(files)}


def all_sources() -> dict[str, tuple[str, str]]:
    table = {**PHOTOS, **EXTRA_SOURCES}
    try:
        table.update(imagenet_photos())
    except MissingWeightsError:
        pass
    return table


def load_source(name: str) -> np.ndarray:
    """An offline photo as ``uint8 [H,W,3]``, read from the installed package that ships it."""
    table = {**PHOTOS, **EXTRA_SOURCES}
    if name not in table and name.startswith("imagenet_"):
        table.update(imagenet_photos())
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, list(all_sources()), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown source photo {name!r}.{hint}")
    pkg, ident = table[name]
    if pkg == "skimage":
        from skimage import data

        if ident.startswith("stereo_motorcycle"):
            return np.ascontiguousarray(data.stereo_motorcycle()[int(ident[-1])])
        a = getattr(data, ident)()
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        return np.ascontiguousarray(a[..., :3])
    path = package_file(pkg, ident)
    if path is None:
        raise MissingWeightsError(f"photo {name!r} ({ident}) not found: is {pkg} installed?")
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def to_tensor(arr: np.ndarray) -> Tensor:
    """``uint8 [H,W,3]`` -> float ``[3,H,W]`` in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255.0)


def load_photo(name: str) -> Tensor:
    """An offline photo as a float ``[3,H,W]`` tensor in [0,1]."""
    return to_tensor(load_source(name))


def centre_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` window (or the whole side where the photo is smaller)."""
    h, w = arr.shape[:2]
    ch, cw = min(size, h), min(size, w)
    t, left = (h - ch) // 2, (w - cw) // 2
    return arr[t:t + ch, left:left + cw]


def random_crops(arr: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` uniformly placed ``size`` x ``size`` windows of a photo (numpy ``rng``)."""
    h, w = arr.shape[:2]
    out = []
    for _ in range(n):
        t = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        out.append(arr[t:t + size, left:left + size])
    return out


__all__ = ["EXTRA_SOURCES", "PHOTOS", "all_sources", "centre_crop", "imagenet_photos",
           "load_photo", "load_source", "random_crops", "to_tensor"]
