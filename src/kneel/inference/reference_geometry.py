"""The reference's inexact output mapping, reproduced for comparison with old results (``--reference-geometry``).

KNEEL (reference §7.2 steps 3-7) builds the network inputs like kneel does but maps the normalised outputs back
without inverting pad and crop (reference §8 item 1):

* low-cost: ``x_R = x̂ · (W//2 + W%2)``, ``x_L = W//2 + x̂ · (W//2)``, ``y = ŷ · H`` in original pixels, rounded, so
  deviations from the half-image centre shrink (to ~0.4x in x for a typical film);
* high-cost: a ``2r``-pixel crop (``roi_size_px = int(140 / s)``, ``r = roi_size_px // 2``) around the integer centre,
  left knees flipped, resized to 0.3 mm/px, padded to 520 and centre cropped to 450; decoded as
  ``x̂ · roi_size_px`` (left knees ``roi_size_px - x``), plus ``centre - roi_size_px // 2``: a 466/450 = 1.036
  stretch about the ROI centre.

The reference uses one spacing ``s`` for both axes (the first element of the spacing tag, the row spacing); so does
this module. Inputs are still warped once with :func:`kneel.geometry.warp` (with anti-aliasing); only the mapping of
the outputs is the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneel.geometry import Affine, resample_transform
from kneel.inference.geometry import StageGeometry, half_extent, pad_crop_transform, resampled_size
from kneel.landmarks import KneeSide

__all__ = [
    "reference_spacing",
    "reference_roi_size_px",
    "reference_lc_transform",
    "reference_lc_decode",
    "reference_hc_transform",
    "reference_hc_decode",
]


def reference_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    """The reference reads one spacing value (the first, row) and assumes square pixels."""
    s = float(spacing[0])
    return s, s


def reference_roi_size_px(spacing: Sequence[float], geom: StageGeometry) -> int:
    """``int(140 / s)``: the ROI side in *original* pixels, as the reference computes it."""
    return int(geom.roi_size_mm / float(spacing[0]))


def reference_lc_transform(
    shape_hw: tuple[int, int], spacing: Sequence[float], side: KneeSide | None, geom: StageGeometry
) -> Affine:
    """The reference's low-cost input: the image at 1 mm (square-pixel spacing), one half, pad, centre crop."""
    sq = reference_spacing(spacing)
    h1, w1 = resampled_size(shape_hw, sq, geom.spacing_mm)
    x0, wh = half_extent(w1, side)
    return (
        resample_transform(sq, geom.spacing_mm)
        .then(Affine.translation(-x0, 0.0))
        .then(pad_crop_transform((h1, wh), geom.pad, geom.crop))
    )


def reference_lc_decode(normalised: np.ndarray, shape_hw: tuple[int, int], side: KneeSide | None) -> np.ndarray:
    """Reference §7.2 step 3: scale the normalised output by the half-image size in original pixels, round."""
    h, w = shape_hw
    xy = np.asarray(normalised, dtype=np.float64).reshape(-1, 2)
    if side is None:
        x = xy[:, 0] * w
    elif KneeSide.parse(side) is KneeSide.R:
        x = xy[:, 0] * (w // 2 + w % 2)
    else:
        x = w // 2 + xy[:, 0] * (w // 2)
    out = np.stack([x, xy[:, 1] * h], axis=-1)
    return np.round(out).reshape(np.shape(normalised))


def reference_hc_transform(
    centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry
) -> Affine:
    """The reference's high-cost input: crop ``[c - r, c + r)`` (integer centre), flip left knees, resize to
    0.3 mm/px, pad to 520, centre crop 450 — composed into one transform from original pixels."""
    sq = reference_spacing(spacing)
    size = reference_roi_size_px(spacing, geom)
    r = size // 2
    cx, cy = (int(round(float(v))) for v in centre_xy)
    t = Affine.translation(-(cx - r), -(cy - r))
    if KneeSide.parse(side) is KneeSide.L:
        t = t.then(Affine.mirror_x(2 * r))
    n = max(1, int(round(2 * r * sq[1] / geom.spacing_mm)))
    return t.then(resample_transform(sq, geom.spacing_mm)).then(pad_crop_transform((n, n), geom.pad, geom.crop))


def reference_hc_decode(
    normalised: np.ndarray, centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry
) -> np.ndarray:
    """Reference §7.2 steps 5 and 7: ``x̂ · roi_size_px`` (left: ``roi_size_px - x``) ``+ centre - roi_size_px//2``."""
    size = reference_roi_size_px(spacing, geom)
    cx, cy = (int(round(float(v))) for v in centre_xy)
    roi = np.asarray(normalised, dtype=np.float64) * size
    if KneeSide.parse(side) is KneeSide.L:
        roi = roi.copy()
        roi[..., 0] = size - roi[..., 0]
    return roi + np.array([cx - size // 2, cy - size // 2], dtype=np.float64)
