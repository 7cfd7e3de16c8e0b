"""Reading radiographs and annotation files, writing outputs atomically.

* ``read_radiograph(path, spacing=None) -> Radiograph``: DICOM (any common transfer syntax) or PNG/TIFF/JPEG with an
  explicit spacing; the image is float32 with bone bright; spacing is (row_mm, col_mm) and remembers its source tag.
* ``normalize_intensity(image)``: the reference's 5th-99th percentile windowing to uint8.
* ``kneel.io.annotations``: the published KNEEL annotation files and their coordinate frames.
* ``kneel.io.landmark_table``: the one long landmark table every stage reads and writes.
* ``kneel.io.atomic``: atomic writes.
"""

from __future__ import annotations

from kneel.io.atomic import atomic_write_bytes, atomic_write_text, atomic_writer
from kneel.io.errors import (
    AnnotationError,
    DecodeError,
    InvalidSpacingError,
    MissingPixelDataError,
    MissingSpacingError,
    NotDicomError,
    RadiographError,
    SpacingError,
    TruncatedFileError,
    UnsupportedImageError,
)
from kneel.io.radiograph import (
    Radiograph,
    RadiographMeta,
    normalize_intensity,
    quiet_reader_warnings,
    read_radiograph,
)

__all__ = [
    "Radiograph",
    "RadiographMeta",
    "read_radiograph",
    "quiet_reader_warnings",
    "normalize_intensity",
    "RadiographError",
    "NotDicomError",
    "TruncatedFileError",
    "MissingPixelDataError",
    "UnsupportedImageError",
    "DecodeError",
    "SpacingError",
    "MissingSpacingError",
    "InvalidSpacingError",
    "AnnotationError",
    "atomic_writer",
    "atomic_write_bytes",
    "atomic_write_text",
]
