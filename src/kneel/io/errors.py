"""Typed errors for reading radiographs: one class per cause, each naming the file and what is wrong with it.

Catch ``RadiographError`` to handle any unreadable radiograph (a batch run skips the file and reports the reason);
catch a subclass to handle one cause. Spacing errors name the DICOM tag that was wrong and suggest ``spacing=``.
"""

from __future__ import annotations

from pathlib import Path

from kneel.errors import KneelError

__all__ = [
    "RadiographError",
    "NotDicomError",
    "TruncatedFileError",
    "MissingPixelDataError",
    "UnsupportedImageError",
    "DecodeError",
    "SpacingError",
    "MissingSpacingError",
    "InvalidSpacingError",
    "ImplausibleImageError",
    "AnnotationError",
]


class RadiographError(KneelError):
    """A radiograph cannot be read or used: base of every cause below."""


class NotDicomError(RadiographError):
    """The file is neither a DICOM file nor a supported image (PNG/TIFF/JPEG), or cannot be opened at all."""


class TruncatedFileError(RadiographError):
    """The file ends before its data does (an interrupted copy or download), or its structure is corrupt."""


class MissingPixelDataError(RadiographError):
    """The DICOM file has no Pixel Data element (e.g. a structured report or a presentation state)."""


class UnsupportedImageError(RadiographError):
    """The image is readable but is not a single grey-level frame (RGB/YBR colour, multi-frame, odd bit layout)."""


class DecodeError(RadiographError):
    """The compressed pixel data cannot be decoded: no plugin for the transfer syntax, or the codec failed."""


class SpacingError(RadiographError):
    """The pixel spacing is missing or unusable; ``tag`` names the DICOM attribute concerned (None if none)."""

    def __init__(self, message: str, path: str | Path | None = None, tag: str | None = None) -> None:
        self.tag = tag
        super().__init__(message, path)


class MissingSpacingError(SpacingError):
    """Neither ImagerPixelSpacing nor PixelSpacing is present (or the file is a plain image): pass ``spacing=``."""


class InvalidSpacingError(SpacingError):
    """A spacing tag is present but zero, negative, non-finite, of the wrong length or not a number."""


class ImplausibleImageError(RadiographError):
    """The image reads but cannot be a knee radiograph: too small, or blank (limits in ``kneel.io.limits``)."""


class AnnotationError(KneelError):
    """An annotation file (bf_landmarks CSV, VIA CSV, landmark table) is malformed."""
