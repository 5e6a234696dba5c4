"""The image-set protocol, and :class:`TensorImages`, an image set held in memory.

Everything that runs over many images (the grid, the attack cache, the experiments) takes an
object with this interface; :class:`iqalib.datasets.ImageSet` (files on disk) and
:class:`TensorImages` (a tensor) both provide it:

- ``name`` (str) and ``label`` (the name with the resize, e.g. ``samples@128x128``: the
  results table's ``dataset`` column), ``ids`` (list of str), ``len()``;
- ``load(id) -> [1,3,H,W]`` and ``batch(ids) -> [B,3,H,W]``, float32 in [0,1];
- ``subset(ids)`` (a list of ids; an int ``n`` means the first n) -> the same kind of set;
- ``content_id(id)`` -> the sha256 of the image's content (pixels, or file bytes plus the
  resize), ``fingerprint()`` -> one digest of every image's content in order.

Caches and result keys use ``content_id``, never the name alone: two folders that share a name,
or two tensors with the same ids, are different images.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import ImageError, UnknownNameError
from .fingerprint import sha, tensor_digest
from .metrics.base import check_batch, check_images


@runtime_checkable
class Images(Protocol):
    """What an image set provides (see the module docstring)."""

    name: str
    ids: list[str]

    @property
    def label(self) -> str: ...

    def load(self, image_id: str) -> Tensor: ...

    def batch(self, ids: Sequence[str]) -> Tensor: ...

    def subset(self, ids: Sequence[str] | int) -> Images: ...

    def content_id(self, image_id: str) -> str: ...

    def fingerprint(self) -> str: ...


def subset_ids(all_ids: Sequence[str], ids: Sequence[str] | int, name: str) -> list[str]:
    """The ids ``subset`` keeps: the first ``ids`` when it is an int, else ``ids`` themselves
    (each must be in the set)."""
    if isinstance(ids, bool):
        raise TypeError("subset() takes a list of ids or a count, not a bool")
    if isinstance(ids, int):
        if ids < 0:
            raise ValueError(f"n must be >= 0, got {ids}")
        return list(all_ids[:ids])
    if isinstance(ids, str):
        raise TypeError(f"subset() takes a list of ids, got the string {ids!r}; use [{ids!r}]")
    known = set(all_ids)
    wanted = [str(i) for i in ids]
    missing = [i for i in wanted if i not in known]
    if missing:
        raise UnknownNameError(f"no image {missing[0]!r} in {name!r}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return wanted


def label_of(images, default: str = "images") -> str:
    """An image set's table label: its ``label``, else its ``name``, else ``default``."""
    label = getattr(images, "label", None)
    if isinstance(label, str) and label:
        return label
    return str(getattr(images, "name", default) or default)


def content_ids(images, ids: Sequence[str]) -> list[str]:
    """``images.content_id(id)`` for each id; sets without that method are hashed from their
    loaded pixels."""
    fn = getattr(images, "content_id", None)
    if callable(fn):
        return [fn(i) for i in ids]
    return [tensor_digest(images.load(i)) for i in ids]


class TensorImages:
    """An image set held in a tensor ``[B,3,H,W]`` in [0,1] (see :class:`Images`).

    A uint8 tensor, or one whose every image lies outside [0,1] (0..255 floats, a normalised
    tensor), is refused with what to do. A single bad image (NaN pixels, values outside
    [0,1]) among good ones is kept but refused by ``load`` / ``batch`` with its reason, so a
    grid run costs that image only (``bad`` maps its id to the reason).
    ``ids`` default to ``img0000``, ``img0001``, ...
    """

    def __init__(self, images: Tensor, ids: Sequence[str] | None = None, name: str = "tensor"):
        if not torch.is_tensor(images):
            raise TypeError(f"images must be a tensor [B,3,H,W] in [0,1], got "
                            f"{type(images).__name__}")
        what = f"the images of {name!r}"
        check_batch(images[:0] if images.ndim == 4 else images, what)  # dtype and shape
        self.images = images.detach().float().cpu()
        self.ids = [str(i) for i in ids] if ids is not None else [
            f"img{i:04d}" for i in range(images.shape[0])]
        if len(self.ids) != images.shape[0] or len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique and one per image")
        self.name = name
        self._index = {k: i for i, k in enumerate(self.ids)}
        self._content = {k: tensor_digest(self.images[i]) for k, i in self._index.items()}
        self.bad: dict[str, str] = {}
        for k, i in self._index.items():
            try:
                check_images(self.images[i][None], f"image {k!r} of {name!r}")
            except ImageError as exc:
                self.bad[k] = str(exc)
        if self.ids and len(self.bad) == len(self.ids):
            check_images(self.images, what)  # every image is bad: one message for the tensor

    @property
    def label(self) -> str:
        return self.name

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"TensorImages({self.name!r}, {len(self)} images of "
                f"{tuple(self.images.shape[-2:])})")

    def _pos(self, image_id: str) -> int:
        try:
            return self._index[str(image_id)]
        except KeyError:
            raise UnknownNameError(f"no image {image_id!r} in {self.name!r}") from None

    def load(self, image_id: str) -> Tensor:
        pos = self._pos(image_id)
        if str(image_id) in self.bad:
            raise ImageError(self.bad[str(image_id)])
        return self.images[pos][None].clone()

    def batch(self, ids: Sequence[str] | None = None) -> Tensor:
        ids = self.ids if ids is None else [str(i) for i in ids]
        pos = [self._pos(i) for i in ids]
        for i in ids:
            if i in self.bad:
                raise ImageError(self.bad[i])
        return self.images[pos].clone()

    def subset(self, ids: Sequence[str] | int) -> TensorImages:
        keep = subset_ids(self.ids, ids, self.name)
        sub = object.__new__(TensorImages)  # already checked: keep the bad images' reasons
        sub.images = self.images[[self._index[i] for i in keep]].clone()
        sub.ids, sub.name = keep, self.name
        sub._index = {k: i for i, k in enumerate(keep)}
        sub._content = {k: self._content[k] for k in keep}
        sub.bad = {k: v for k, v in self.bad.items() if k in sub._index}
        return sub

    def content_id(self, image_id: str) -> str:
        self._pos(image_id)
        return self._content[str(image_id)]

    def fingerprint(self) -> str:
        return sha("images", *[self._content[i] for i in self.ids])


__all__ = ["Images", "TensorImages", "content_ids", "label_of", "subset_ids"]
