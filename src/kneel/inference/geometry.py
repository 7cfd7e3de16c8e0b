"""Per-stage geometry: ONE affine transform from original pixels to each network input, and its exact inverse.

Every stage of the pipeline builds its network input by warping the intensity-normalised original image once with
:func:`kneel.geometry.warp`, through a single :class:`~kneel.geometry.Affine` composed of

* low-cost (``lc``): resampling to the stage spacing (1 mm), the half-image offset (right knee = image-left half,
  left knee = image-right half, as the reference splits the 1-mm image), then the reference's pad-to-520 (centred,
  zeros) and centre crop to 450 expressed as one translation;
* high-cost (``hc``): the 140 mm ROI at 0.3 mm/px centred on the knee (:func:`kneel.geometry.roi_transform`, left knees
  mirrored to the right-knee orientation), then the same pad/crop translation (466 px ROI: +27 - 35 = -8 px).

Network outputs are normalised ``(x, y)`` of the network input (``x_px = x_norm * crop``); they come back to original
pixels through ``transform.inverse()``, so a landmark returns to the pixel it came from (the fix of reference §8
item 1). Padding lives in the transform, never in an enlarged image: the warp's zero border handles a knee at any
position, at any spacing (reference §8 item 19).

:mod:`kneel.inference.reference_geometry` reproduces the reference's (inexact) mapping for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kneel.geometry import (
    Affine,
    antialias_sigma,
    pad_crop,
    resample_transform,
    resampled_size,
    rescale,
    roi_transform,
    warp,
)
from kneel.io.annotations import HC_SPACING, LC_SPACING
from kneel.landmarks import KneeSide

__all__ = [
    "StageGeometry",
    "pad_crop_transform",
    "resampled_size",
    "half_extent",
    "lc_transform",
    "hc_transform",
    "roi_size_px",
    "to_network_px",
    "from_network_px",
    "decode",
    "warp_window",
    "lc_input_box",
    "hc_input_box",
    "mask_outside",
]


@dataclass(frozen=True)
class StageGeometry:
    """What a stage's network expects: working spacing, pad and crop sizes, and (high-cost) the ROI size.

    Built from the model's ``ModelConfig`` (``spacing_mm``, ``pad``, ``crop``, ``roi_size_mm``).
    """

    spacing_mm: float
    pad: int = 520
    crop: int = 450
    roi_size_mm: float = 140.0

    @classmethod
    def from_config(cls, config: object) -> StageGeometry:
        """Read the geometry fields of a ``kneel.models.weights.ModelConfig`` (or any object with them)."""

        def _int(value: object) -> int:
            if isinstance(value, Sequence):
                return int(value[0])
            return int(value)  # type: ignore[arg-type]

        return cls(
            spacing_mm=float(getattr(config, "spacing_mm")),  # noqa: B009
            pad=_int(getattr(config, "pad", 520)),
            crop=_int(getattr(config, "crop", 450)),
            roi_size_mm=float(getattr(config, "roi_size_mm", None) or 140.0),
        )


def roi_size_px(geom: StageGeometry) -> int:
    """ROI side in stage pixels: ``int(140 / 0.3) = 466`` (a small epsilon guards against 139.99999/0.3)."""
    return int(geom.roi_size_mm / geom.spacing_mm + 1e-9)


def pad_crop_transform(size_hw: tuple[int, int], pad: int, crop: int) -> Affine:
    """The reference's "pad to ``pad`` x ``pad`` (centred, zeros), then centre crop ``crop`` x ``crop``" as a shift.

    The same rule as the training datasets (:func:`kneel.geometry.pad_crop`, which floors like the
    reference's solt), so a knee is framed identically in training and in prediction.
    """
    h, w = (int(v) for v in size_hw)
    return pad_crop((w, h), pad, crop)[0]


def half_extent(width: int, side: KneeSide | None) -> tuple[int, int]:
    """Columns ``(x0, w)`` of a knee's half of an image ``width`` wide: R = image-left ``[0, W//2 + W%2)``,
    L = image-right ``[W//2, W)`` (the reference's split); ``None`` = the whole width (single-knee film)."""
    if side is None:
        return 0, width
    if KneeSide.parse(side) is KneeSide.R:
        return 0, width // 2 + width % 2
    return width // 2, width // 2


def _lc_stage_frame(
    shape_hw: tuple[int, int], spacing: Sequence[float], side: KneeSide | None, geom: StageGeometry
) -> tuple[Affine, tuple[int, int]]:
    """Original pixels -> the knee's half image at the stage spacing, and its size ``(h, w)``.

    The chain is the one training data takes (``kneel prepare`` then ``LandmarkDataset``): the whole image at the
    prepared 1 mm/px, the half split there, then (only for models working at another spacing, e.g. the tiny presets)
    resampled to ``geom.spacing_mm``. Training and inference therefore frame the knee identically, to the pixel.
    """
    h1, w1 = resampled_size(shape_hw, spacing, LC_SPACING)
    x0, wh = half_extent(w1, side)
    to_stage, (ws, hs) = rescale((wh, h1), LC_SPACING, geom.spacing_mm)
    return resample_transform(spacing, LC_SPACING).then(Affine.translation(-x0, 0.0)).then(to_stage), (hs, ws)


def lc_transform(
    shape_hw: tuple[int, int], spacing: Sequence[float], side: KneeSide | None, geom: StageGeometry
) -> Affine:
    """Original pixels -> low-cost network input for one knee's half image (``side=None``: the whole image).

    Resample to 1 mm (pixel edges kept), shift the half to the origin, [resample to ``geom.spacing_mm``], then
    pad/crop to the network. No mirroring: the reference's low-cost model sees both halves as they are.
    """
    to_stage, size = _lc_stage_frame(shape_hw, spacing, side, geom)
    return to_stage.then(pad_crop_transform(size, geom.pad, geom.crop))


def _box(size_hw: tuple[int, int], geom: StageGeometry) -> tuple[int, int, int, int]:
    """Where an image of ``size_hw`` stage pixels lies in the network input after pad/crop: (x0, y0, x1, y1)."""
    h, w = size_hw
    t = pad_crop_transform((h, w), geom.pad, geom.crop).matrix
    ox, oy = int(round(t[0, 2])), int(round(t[1, 2]))
    return max(ox, 0), max(oy, 0), min(ox + w, geom.crop), min(oy + h, geom.crop)


def lc_input_box(
    shape_hw: tuple[int, int], spacing: Sequence[float], side: KneeSide | None, geom: StageGeometry
) -> tuple[int, int, int, int]:
    """Network-input pixels ``(x0, y0, x1, y1)`` covered by the half image; the rest is the reference's zero padding
    (the other half of the film must stay invisible, as when the reference crops the half before padding)."""
    _, size = _lc_stage_frame(shape_hw, spacing, side, geom)
    return _box(size, geom)


def _hc_stage_frame(geom: StageGeometry) -> tuple[Affine, int]:
    """The prepared 0.3 mm ROI -> the ROI at the stage spacing (identity for the paper models), and its side."""
    prepared = int(geom.roi_size_mm / HC_SPACING + 1e-9)
    to_stage, (size, _) = rescale((prepared, prepared), HC_SPACING, geom.spacing_mm)
    return to_stage, size


def hc_input_box(geom: StageGeometry) -> tuple[int, int, int, int]:
    """Network-input pixels covered by the ROI (the whole input for the paper geometry: 466 px ROI, 450 px crop)."""
    _, size = _hc_stage_frame(geom)
    return _box((size, size), geom)


def mask_outside(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Zero the network input outside ``box`` (in place; returns the image)."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    if x0 > 0 or y0 > 0 or x1 < w or y1 < h:
        keep = image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].copy()
        image[...] = 0
        image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = keep
    return image


def hc_transform(centre_xy: Sequence[float], spacing: Sequence[float], side: KneeSide, geom: StageGeometry) -> Affine:
    """Original pixels -> high-cost network input: ROI centred on ``centre_xy`` (left knee mirrored), pad, crop.

    As training data: the 140 mm ROI at 0.3 mm/px (466 px, centre on pixel 233), [resampled to ``geom.spacing_mm``
    for models working at another spacing], then pad/crop.
    """
    side = KneeSide.parse(side)
    prepared = int(geom.roi_size_mm / HC_SPACING + 1e-9)
    to_stage, size = _hc_stage_frame(geom)
    return (
        roi_transform(centre_xy, spacing, prepared, HC_SPACING, mirror=side.mirrored)
        .then(to_stage)
        .then(pad_crop_transform((size, size), geom.pad, geom.crop))
    )


def to_network_px(normalised: np.ndarray, crop: int) -> np.ndarray:
    """Normalised network output ``(x, y)`` in [0, 1) -> network-input pixels (``x_px = x_norm * crop``)."""
    return np.asarray(normalised, dtype=np.float64) * float(crop)


def from_network_px(points_px: np.ndarray, crop: int) -> np.ndarray:
    """Network-input pixels -> normalised output units (the inverse of :func:`to_network_px`)."""
    return np.asarray(points_px, dtype=np.float64) / float(crop)


def decode(normalised: np.ndarray, transform: Affine, crop: int) -> np.ndarray:
    """Normalised network output -> original pixels through the exact inverse of the stage transform."""
    return transform.inverse().apply(to_network_px(normalised, crop))


def warp_window(image: np.ndarray, transform: Affine, out_hw: tuple[int, int], *, antialias: bool = True) -> np.ndarray:
    """:func:`kneel.geometry.warp` of only the part of ``image`` the output can see (same result, far less work).

    The source window is the output rectangle mapped back through the inverse transform, widened by the
    anti-aliasing filter's reach (4 sigma + 2 px); the crop is one more translation composed into the same
    transform. Outside the image the output is 0, as with :func:`~kneel.geometry.warp`.
    """
    h_out, w_out = out_hw
    corners = np.array([[-0.5, -0.5], [w_out - 0.5, -0.5], [-0.5, h_out - 0.5], [w_out - 0.5, h_out - 0.5]])
    src = transform.inverse().apply(corners)
    sx, sy = transform.scale_factors
    margin_x = 4.0 * antialias_sigma(sx) + 2.0
    margin_y = 4.0 * antialias_sigma(sy) + 2.0
    h, w = image.shape[:2]
    x0 = max(int(np.floor(src[:, 0].min() - margin_x)), 0)
    x1 = min(int(np.ceil(src[:, 0].max() + margin_x)) + 1, w)
    y0 = max(int(np.floor(src[:, 1].min() - margin_y)), 0)
    y1 = min(int(np.ceil(src[:, 1].max() + margin_y)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((h_out, w_out), dtype=np.float32)
    window = image[y0:y1, x0:x1]
    shifted = Affine.translation(x0, y0).then(transform)
    return warp(window, shifted, (h_out, w_out), antialias=antialias).astype(np.float32, copy=False)
