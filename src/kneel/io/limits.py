"""Sanity limits: what a knee radiograph can plausibly be. Anything outside is refused with the reason.

Without them, nonsense gets through or brings a process down: a spacing of 1e-6 mm makes the anti-aliasing of the
first warp ask for gigabytes (``std::bad_alloc``); a 1x1 image, an all-zero image (or a rescale slope of 0) and a
spacing of 1e30 mm all got landmarks, some outside the image; a 5000x1 image crashed the overlay writer.

The limits are generous (real films are far inside them) and documented in ``docs/io.md``:

* pixel spacing: :data:`MIN_SPACING_MM` to :data:`MAX_SPACING_MM` per pixel, each axis (checked wherever a spacing is
  parsed: DICOM tags and ``spacing=`` / ``--spacing``);
* decoded size: at most :data:`MAX_PIXELS` pixels (checked from Rows x Columns *before* decoding, so a small file
  cannot make the reader allocate gigabytes);
* for landmark finding: at least :data:`MIN_SIDE_PX` pixels on each side, at most :data:`MAX_SIDE_MM` mm, and some
  contrast (the 5th and 99th intensity percentiles differ: a blank image has nothing to find). A film too small
  *physically* to hold a knee is the presence rule's business (``kneel.inference.presence``).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "MIN_SPACING_MM",
    "MAX_SPACING_MM",
    "MAX_PIXELS",
    "MIN_SIDE_PX",
    "MAX_SIDE_MM",
    "spacing_problem",
    "check_size",
    "check_usable",
]

MIN_SPACING_MM = 0.01
"""Smallest plausible pixel spacing (mm): detectors and scanned films are 0.05-0.2 mm."""
MAX_SPACING_MM = 5.0
"""Largest plausible pixel spacing (mm): a knee (about 100 mm wide) would be 20 pixels wide."""
MAX_PIXELS = 200_000_000
"""Largest image (pixels): a 43 x 43 cm film at 0.05 mm has 74 million; 200 million float32 pixels are 800 MB."""
MIN_SIDE_PX = 32
"""Fewest pixels on each side of an image to find landmarks in."""
MAX_SIDE_MM = 2000.0
"""Largest physical extent (mm) on each side: long-leg films are about 1300 mm."""


def spacing_problem(value_mm: float) -> str | None:
    """Why a positive, finite spacing value (mm) is implausible, or None when it is within the limits."""
    if value_mm < MIN_SPACING_MM:
        return f"{value_mm:g} mm per pixel is implausibly small (radiographs: {MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm)"
    if value_mm > MAX_SPACING_MM:
        return f"{value_mm:g} mm per pixel is implausibly large (radiographs: {MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm)"
    return None


def check_size(rows: int, columns: int, path: str | os.PathLike[str] | None = None) -> None:
    """Refuse an image whose decoded size would exceed :data:`MAX_PIXELS` (call before decoding)."""
    from kneel.io.errors import UnsupportedImageError

    if int(rows) * int(columns) > MAX_PIXELS:
        raise UnsupportedImageError(
            f"image too large: {rows} x {columns} pixels (more than {MAX_PIXELS // 1_000_000} million)", path
        )


def check_usable(image_u8: np.ndarray, spacing: tuple[float, float], path: str | os.PathLike[str] | None) -> None:
    """Refuse an image nobody can find a knee in: too few pixels, too large physically, or blank.

    Args:
        image_u8: the intensity-normalised image (:func:`kneel.io.normalize_intensity`): all zeros when its 5th and
            99th percentiles are equal (a blank image, or a rescale slope of 0).
        spacing: ``(row_mm, col_mm)``.
        path: named in the error.

    Raises:
        ImplausibleImageError: the reason.
    """
    from kneel.io.errors import ImplausibleImageError

    rows, columns = (int(v) for v in image_u8.shape[:2])
    if min(rows, columns) < MIN_SIDE_PX:
        raise ImplausibleImageError(
            f"image too small: {rows} x {columns} pixels (a knee radiograph has at least {MIN_SIDE_PX} per side)", path
        )
    height_mm, width_mm = rows * spacing[0], columns * spacing[1]
    if max(height_mm, width_mm) > MAX_SIDE_MM:
        raise ImplausibleImageError(
            f"image too large: {height_mm:.0f} x {width_mm:.0f} mm (a radiograph covers at most {MAX_SIDE_MM:g} mm "
            "per side; is the spacing right?)",
            path,
        )
    if not image_u8.any():
        raise ImplausibleImageError(
            "blank image: no contrast (the 5th and 99th intensity percentiles are equal, e.g. all pixels the same "
            "or a rescale slope of 0)",
            path,
        )
