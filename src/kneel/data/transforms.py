"""The fixed (non-random) geometry between a prepared image and the network input, as exact affine transforms.

Validation and inference see: [rescale to the input spacing] -> pad to ``pad x pad`` (centred, zeros) -> centre crop
``input_size x input_size``. These helpers return each step as an :class:`~kneel.geometry.Affine` (pixel-centre
convention), so the chain is one matrix whose inverse maps network outputs back exactly (reference bug §8.1 fixed).
"""

from __future__ import annotations

from kneel.geometry import Affine, resample_transform

__all__ = ["rescale", "pad_offset", "pad_crop", "centre_crop_offset"]


def rescale(size_wh: tuple[int, int], spacing_mm: float, target_spacing_mm: float) -> tuple[Affine, tuple[int, int]]:
    """Resample an image of ``size_wh`` pixels from ``spacing_mm`` to ``target_spacing_mm`` (pixel edges kept).

    Returns the transform and the new ``(width, height)`` (rounded to whole pixels).
    """
    s = float(spacing_mm) / float(target_spacing_mm)
    w, h = size_wh
    return resample_transform((spacing_mm, spacing_mm), target_spacing_mm), (
        max(1, int(round(w * s))),
        max(1, int(round(h * s))),
    )


def pad_offset(size: int, pad: int) -> int:
    """Left (or top) zero padding that centres ``size`` pixels in ``pad`` (0 when the image is already larger)."""
    return max(0, (int(pad) - int(size)) // 2)


def centre_crop_offset(size: int, crop: int) -> int:
    """Offset of a centred ``crop`` inside ``size`` pixels (negative when the crop is larger: zeros around)."""
    return (int(size) - int(crop)) // 2


def pad_crop(
    size_wh: tuple[int, int], pad: int, crop: int, crop_offset: tuple[int, int] | None = None
) -> tuple[Affine, tuple[int, int]]:
    """Pad ``size_wh`` to at least ``pad x pad`` (centred) then crop ``crop x crop`` at ``crop_offset``.

    ``crop_offset`` is the crop's top-left corner in the padded canvas (default: centred). Returns the transform
    (image -> crop) and the padded canvas size ``(width, height)``, i.e. ``(max(pad, w), max(pad, h))``.
    """
    w, h = (int(v) for v in size_wh)
    canvas = (max(int(pad), w), max(int(pad), h))
    if crop_offset is None:
        crop_offset = (centre_crop_offset(canvas[0], crop), centre_crop_offset(canvas[1], crop))
    tx = pad_offset(w, pad) - crop_offset[0]
    ty = pad_offset(h, pad) - crop_offset[1]
    return Affine.translation(tx, ty), canvas
