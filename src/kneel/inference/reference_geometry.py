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
this module.

The network inputs are the reference's too (reference §7.2 steps 2-6; with the same weights the landmarks are those
of the original code within 0.1 px, ``tests/inference/test_reference_fidelity.py``). Each step is its own function:

* :func:`reference_resized_size`, :func:`reference_resize`: ``resize_to_spacing``, a plain bilinear ``cv2.resize`` of
  the windowed uint8 film to ``(int(w * (s / s_stage)), int(h * (s / s_stage)))`` (no anti-aliasing, §8 item 15;
  the result is uint8 again), whose pixel mapping is :func:`reference_resize_transform` (cv2's: pixel centres at
  integers, scale = output size / input size per axis, not the spacing ratio);
* :func:`reference_lc_half`: the halves ``[:, :W//2 + W%2]`` and ``[:, W//2:]`` of the resized film (for an odd
  width both are ``W//2 + 1`` wide and share the middle column);
* :func:`reference_place`: pad to ``pad`` (zeros, centred as solt's ``PadTransform``) then centre crop ``crop``
  (solt's ``CropTransform``), an integer shift, copied exactly;
* :func:`reference_roi`: the ``2r x 2r`` crop ``[c - r, c + r)`` (``r = int(140 / s) // 2``) around the integer centre
  of the film zero-padded by 300 px, as float64, left knees flipped (``roi[:, ::-1]``); then resized as above in
  float64 (not rounded) to the high-cost spacing and placed (:func:`reference_hc_input`).

kneel's windowing (:func:`kneel.io.normalize_intensity`) is already the reference's ``process_xray`` (5th-99th
percentile, truncation to uint8). The high-cost outputs are rounded to whole ROI pixels before the left knee is
un-mirrored, as the reference rounds them (``predict_img(rounded=True)``), so its landmarks are integers.

The :class:`~kneel.geometry.Affine` transforms (:func:`reference_lc_transform`, :func:`reference_hc_transform`) are
the exact pixel mapping of these inputs: original pixels to network-input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from kneel.geometry import Affine
from kneel.inference.geometry import StageGeometry, pad_crop_transform
from kneel.landmarks import KneeSide

__all__ = [
    "reference_spacing",
    "reference_roi_size_px",
    "reference_resized_size",
    "reference_resize_transform",
    "reference_resize",
    "reference_lc_half",
    "reference_place",
    "reference_lc_input",
    "reference_roi",
    "reference_hc_input",
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


def reference_resized_size(shape_hw: tuple[int, int], spacing: Sequence[float], new_spacing: float) -> tuple[int, int]:
    """Reference §7.2 steps 2 and 5 (``resize_to_spacing``): ``(int(h * scale), int(w * scale))``, ``scale = s /
    new_spacing`` with ``s`` the row spacing (same float operations, so the same truncation)."""
    scale = float(spacing[0]) / float(new_spacing)
    h, w = (int(v) for v in shape_hw)
    return int(h * scale), int(w * scale)


def reference_resize_transform(shape_hw: tuple[int, int], new_hw: tuple[int, int]) -> Affine:
    """The pixel mapping of ``cv2.resize`` from ``shape_hw`` to ``new_hw``: ``x' = (x + 0.5) * w'/w - 0.5`` (and y).

    The scale is the ratio of the integer sizes, not of the spacings (they differ by the truncation of the size).
    """
    (h, w), (h2, w2) = shape_hw, new_hw
    return (
        Affine.translation(0.5, 0.5)
        .then(Affine.scaling(float(w2) / float(w), float(h2) / float(h)))
        .then(Affine.translation(-0.5, -0.5))
    )


def reference_resize(image: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
    """Plain bilinear ``cv2.resize`` to ``new_hw`` (no anti-aliasing, reference §8 item 15); the dtype is kept
    (uint8 for the whole film: cv2 rounds; float64 for the ROIs)."""
    h2, w2 = new_hw
    return cv2.resize(image, (int(w2), int(h2)), interpolation=cv2.INTER_LINEAR)


def reference_lc_half(width: int, side: KneeSide | None) -> tuple[int, int]:
    """Columns ``(x0, w)`` of a knee's half of the resized film as the reference slices them (reference §7.2 step 3):
    R = ``[:, :W//2 + W%2]``, L = ``[:, W//2:]``, both ``W//2 + W%2`` wide (an odd width's middle column is in both);
    ``None`` = the whole width (single-knee film; the reference has no such case)."""
    if side is None:
        return 0, width
    if KneeSide.parse(side) is KneeSide.R:
        return 0, width // 2 + width % 2
    return width // 2, width - width // 2


def reference_place(image: np.ndarray, geom: StageGeometry) -> np.ndarray:
    """Pad ``image`` to ``geom.pad`` (zeros, centred like solt's ``PadTransform``) and centre crop ``geom.crop``
    (solt's ``CropTransform``): an integer shift into a zero canvas, copied exactly. Returns float32 (crop, crop)."""
    h, w = image.shape[:2]
    t = pad_crop_transform((h, w), geom.pad, geom.crop).matrix
    tx, ty = int(round(t[0, 2])), int(round(t[1, 2]))
    out = np.zeros((geom.crop, geom.crop), dtype=np.float32)
    x0, y0 = max(tx, 0), max(ty, 0)
    x1, y1 = min(tx + w, geom.crop), min(ty + h, geom.crop)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = image[y0 - ty : y1 - ty, x0 - tx : x1 - tx]
    return out


def reference_lc_transform(
    shape_hw: tuple[int, int], spacing: Sequence[float], side: KneeSide | None, geom: StageGeometry
) -> Affine:
    """The reference's low-cost input mapping: the resize of the whole film to the stage spacing (cv2's pixel
    mapping), the knee's half, pad, centre crop (reference §7.2 steps 2-3)."""
    h1, w1 = reference_resized_size(shape_hw, spacing, geom.spacing_mm)
    x0, wh = reference_lc_half(w1, side)
    return (
        reference_resize_transform(shape_hw, (h1, w1))
        .then(Affine.translation(-x0, 0.0))
        .then(pad_crop_transform((h1, wh), geom.pad, geom.crop))
    )


def reference_lc_input(resized: np.ndarray, side: KneeSide | None, geom: StageGeometry) -> np.ndarray:
    """The reference's low-cost network input (0-255, float32) from the film already resized by
    :func:`reference_resize` (done once per film, shared by both halves)."""
    x0, wh = reference_lc_half(resized.shape[1], side)
    return reference_place(resized[:, x0 : x0 + wh], geom)


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


def _integer_centre(centre_xy: Sequence[float]) -> tuple[int, int]:
    cx, cy = (int(round(float(v))) for v in centre_xy)
    return cx, cy


def reference_roi(image: np.ndarray, centre_xy: Sequence[float], size: int, side: KneeSide) -> np.ndarray:
    """Reference §7.2 steps 4-5: the ``2r x 2r`` float64 crop ``[c - r, c + r)`` of the film (``r = size // 2``,
    integer centre), zeros outside the film; left knees flipped (``x -> 2r - 1 - x``).

    The reference cuts it from the film zero-padded by 300 pixels (``--pad``); the zeros here are the same
    while the ROI stays within that padding. Beyond it (``r > 300`` px and a knee near the border, §8 item 19) the
    reference's slice is truncated or empty; this crop stays whole.
    """
    r = int(size) // 2
    cx, cy = _integer_centre(centre_xy)
    h, w = image.shape[:2]
    roi = np.zeros((2 * r, 2 * r), dtype=np.float64)
    x0, y0 = cx - r, cy - r
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + 2 * r, w), min(y0 + 2 * r, h)
    if sx1 > sx0 and sy1 > sy0:
        roi[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if KneeSide.parse(side) is KneeSide.L:
        roi = np.ascontiguousarray(roi[:, ::-1])
    return roi


def reference_hc_transform(
    centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry
) -> Affine:
    """The reference's high-cost input mapping: crop ``[c - r, c + r)`` (integer centre), flip left knees, resize to
    the stage spacing (cv2's pixel mapping, ``int`` size), pad, centre crop — from original pixels."""
    size = reference_roi_size_px(spacing, geom)
    r = size // 2
    cx, cy = _integer_centre(centre_xy)
    t = Affine.translation(-(cx - r), -(cy - r))
    if KneeSide.parse(side) is KneeSide.L:
        t = t.then(Affine.mirror_x(2 * r))
    n, _ = reference_resized_size((2 * r, 2 * r), spacing, geom.spacing_mm)
    return t.then(reference_resize_transform((2 * r, 2 * r), (n, n))).then(
        pad_crop_transform((n, n), geom.pad, geom.crop)
    )


def reference_hc_input(
    image: np.ndarray, centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry
) -> np.ndarray:
    """The reference's high-cost network input (0-255, float32): :func:`reference_roi`, resized in float64 to the
    stage spacing, padded and centre cropped."""
    size = reference_roi_size_px(spacing, geom)
    roi = reference_roi(image, centre_xy, size, side)
    n, _ = reference_resized_size(roi.shape, spacing, geom.spacing_mm)
    return reference_place(reference_resize(roi, (n, n)), geom)


def reference_hc_decode(
    normalised: np.ndarray, centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry
) -> np.ndarray:
    """Reference §7.2 steps 5 and 7: ``round(x̂ · roi_size_px)`` (left: ``roi_size_px - x``) ``+ centre -
    roi_size_px//2``: whole original pixels."""
    size = reference_roi_size_px(spacing, geom)
    cx, cy = _integer_centre(centre_xy)
    roi = np.round(np.asarray(normalised, dtype=np.float64) * size)
    if KneeSide.parse(side) is KneeSide.L:
        roi[..., 0] = size - roi[..., 0]
    return roi + np.array([cx - size // 2, cy - size // 2], dtype=np.float64)
