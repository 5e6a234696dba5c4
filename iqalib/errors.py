"""Exceptions raised by iqalib. Each message says what went wrong and what to do next."""
from __future__ import annotations


class IqalibError(Exception):
    """Base class of every error iqalib raises on purpose."""


class UnknownNameError(IqalibError, KeyError):
    """An unknown metric / attack / defense / preset name; the message suggests the nearest."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ImageError(IqalibError, ValueError):
    """An image that cannot be used: corrupt, empty, too small, too large, NaN, wrong shape."""


class MissingWeightsError(IqalibError, FileNotFoundError):
    """A checkpoint is absent or fails its checksum; the message names the `make weights` target."""


class DownloadError(IqalibError, OSError):
    """A download failed or its content did not match the catalogue's checksum."""
