"""Coordinate frames as explicit affine transforms: compose, invert exactly, apply to points and images.

Convention used everywhere in kneel: points are ``(x, y)`` float arrays in pixels, ``x`` along columns and ``y``
along rows, with the *centre* of pixel ``(row=i, col=j)`` at ``(x=j, y=i)``. Spacing is ``(row_mm, col_mm)``.
OpenCV's ``warpAffine`` uses the same pixel-centre convention, so the matrix that moves points is the matrix that
moves the image. Dataset preparation, augmentation and inference all go through this module, so a landmark takes
the same path into the network as a prediction takes out of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Affine",
    "Homography",
    "resample_transform",
    "resampled_size",
    "roi_transform",
    "warp",
    "antialias_sigma",
    "gaussian_blur_float32",
    "warp_perspective",
]


@dataclass(frozen=True)
class Affine:
    """A 2-D affine transform as a 3x3 homogeneous matrix mapping source points to destination points.

    ``a.then(b)`` is "apply ``a``, then ``b``" (matrix ``b @ a``); ``a.inverse()`` is exact up to float64 rounding.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape == (2, 3):
            m = np.vstack([m, [0.0, 0.0, 1.0]])
        if m.shape != (3, 3):
            raise ValueError(f"affine matrix must be 2x3 or 3x3, got {m.shape}")
        object.__setattr__(self, "matrix", m)

    # construction
    @classmethod
    def identity(cls) -> Affine:
        return cls(np.eye(3))

    @classmethod
    def translation(cls, tx: float, ty: float) -> Affine:
        return cls(np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]))

    @classmethod
    def scaling(cls, sx: float, sy: float | None = None) -> Affine:
        """Scale about the origin ``(0, 0)`` (the centre of the top-left pixel)."""
        sy = sx if sy is None else sy
        return cls(np.diag([float(sx), float(sy), 1.0]))

    @classmethod
    def rotation(cls, degrees: float, centre: Sequence[float] = (0.0, 0.0)) -> Affine:
        """Rotate by ``degrees`` (counter-clockwise as seen on screen, y pointing down) about ``centre``."""
        t = np.deg2rad(degrees)
        c, s = np.cos(t), np.sin(t)
        rot = cls(np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]))
        cx, cy = centre
        return cls.translation(-cx, -cy).then(rot).then(cls.translation(cx, cy))

    @classmethod
    def mirror_x(cls, width: int | float) -> Affine:
        """Horizontal mirror of an image ``width`` pixels wide: ``x -> width - 1 - x``, as ``cv2.flip(img, 1)``."""
        return cls(np.array([[-1.0, 0.0, float(width) - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))

    # algebra
    def then(self, other: Affine) -> Affine:
        """The transform that applies ``self`` first and ``other`` second."""
        return Affine(other.matrix @ self.matrix)

    def inverse(self) -> Affine:
        return Affine(np.linalg.inv(self.matrix))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map points of shape ``(..., 2)`` (x, y); NaN points stay NaN."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        out = flat @ self.matrix[:2, :2].T + self.matrix[:2, 2]
        return out.reshape(pts.shape)

    @property
    def cv2_matrix(self) -> np.ndarray:
        """The 2x3 matrix for ``cv2.warpAffine``."""
        return self.matrix[:2, :].astype(np.float64)

    @property
    def scale_factors(self) -> tuple[float, float]:
        """Lengths of the images of the unit x and y vectors (how much the transform stretches each axis)."""
        m = self.matrix[:2, :2]
        return float(np.hypot(m[0, 0], m[1, 0])), float(np.hypot(m[0, 1], m[1, 1]))

    def to_list(self) -> list[list[float]]:
        return self.matrix.tolist()

    @classmethod
    def from_list(cls, values: Sequence[Sequence[float]]) -> Affine:
        return cls(np.asarray(values, dtype=np.float64))


def resample_transform(spacing_src: Sequence[float], spacing_dst: float | Sequence[float]) -> Affine:
    """Map pixel coordinates of an image at ``spacing_src`` (row_mm, col_mm) to a grid at ``spacing_dst``.

    Pixel *edges* are preserved: the top-left corner of the image, at ``(-0.5, -0.5)``, stays there, so
    ``x_dst = (x_src + 0.5) * col_src / col_dst - 0.5``. This is OpenCV's ``resize`` convention.
    """
    row_src, col_src = (float(v) for v in spacing_src)
    if isinstance(spacing_dst, int | float):
        row_dst = col_dst = float(spacing_dst)
    else:
        row_dst, col_dst = (float(v) for v in spacing_dst)
    sx, sy = col_src / col_dst, row_src / row_dst
    return Affine.translation(0.5, 0.5).then(Affine.scaling(sx, sy)).then(Affine.translation(-0.5, -0.5))


def resampled_size(shape_hw: tuple[int, int], spacing: Sequence[float], out_spacing: float) -> tuple[int, int]:
    """Size ``(h, w)`` of an image of ``shape_hw`` pixels at ``spacing`` resampled to ``out_spacing`` (rounded; at least
    1 pixel). Dataset preparation and inference both size their resampled films with it."""
    h, w = shape_hw
    row, col = (float(v) for v in spacing)
    return max(1, int(round(h * row / out_spacing))), max(1, int(round(w * col / out_spacing)))


def roi_transform(
    centre_xy: Sequence[float],
    spacing: Sequence[float],
    roi_size_px: int,
    out_spacing: float,
    mirror: bool = False,
) -> Affine:
    """Original-image pixels -> a square ROI of ``roi_size_px`` pixels at ``out_spacing`` mm, centred on ``centre_xy``.

    The centre lands on ROI pixel ``(roi_size_px // 2, roi_size_px // 2)`` (233 for the 466-px high-cost ROI, as in
    the published annotations). With ``mirror`` the ROI is flipped horizontally afterwards (left knees).
    """
    row_mm, col_mm = (float(v) for v in spacing)
    cx, cy = (float(v) for v in centre_xy)
    half = roi_size_px // 2
    transform = (
        Affine.translation(-cx, -cy)
        .then(Affine.scaling(col_mm / out_spacing, row_mm / out_spacing))
        .then(Affine.translation(half, half))
    )
    if mirror:
        transform = transform.then(Affine.mirror_x(roi_size_px))
    return transform


def antialias_sigma(scale: float) -> float:
    """Gaussian sigma (in source pixels) that suppresses aliasing when shrinking by ``scale`` (< 1); 0 otherwise."""
    if scale >= 1.0:
        return 0.0
    return max(0.0, (1.0 / scale - 1.0) / 2.0)


def gaussian_blur_float32(image: np.ndarray, sigma_x: float, sigma_y: float) -> np.ndarray:
    """``cv2.GaussianBlur`` of ``image`` as float32 (same kernels and border), without a float copy of the input.

    Integer images are filtered straight into a float32 result (one separable filter call), which saves converting a
    whole film to float32 first; the values equal those of blurring the float32 copy up to float rounding.
    """
    if image.dtype not in (np.uint8, np.uint16):
        return cv2.GaussianBlur(image.astype(np.float32, copy=False), (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    # GaussianBlur's kernel rule for a float32 image: odd size round(8 sigma + 1), float32 taps, reflect-101 border.
    kx = cv2.getGaussianKernel(int(round(sigma_x * 8 + 1)) | 1, sigma_x, cv2.CV_32F)
    ky = cv2.getGaussianKernel(int(round(sigma_y * 8 + 1)) | 1, sigma_y, cv2.CV_32F)
    return cv2.sepFilter2D(image, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_REFLECT_101)


def warp(
    image: np.ndarray,
    transform: Affine,
    out_size: tuple[int, int],
    *,
    antialias: bool = True,
    interpolation: int = cv2.INTER_LINEAR,
    border_value: float = 0.0,
) -> np.ndarray:
    """Resample ``image`` so that output pixel ``p`` shows source point ``transform.inverse().apply(p)``.

    ``out_size`` is ``(height, width)``. With ``antialias`` the source is low-pass filtered first when the
    transform shrinks it, so strong downsampling (0.15 mm -> 1 mm) does not alias. Outside the source is
    ``border_value``.
    """
    src = np.ascontiguousarray(image)
    if src.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        src = src.astype(np.float32)
    if antialias:
        sx, sy = transform.scale_factors
        sig_x, sig_y = antialias_sigma(sx), antialias_sigma(sy)
        if sig_x > 0.3 or sig_y > 0.3:
            src = gaussian_blur_float32(src, max(sig_x, 1e-3), max(sig_y, 1e-3))
    h, w = out_size
    return cv2.warpAffine(
        src,
        transform.cv2_matrix,
        (int(w), int(h)),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


@dataclass(frozen=True)
class Homography:
    """A 2-D projective transform (3x3 matrix) mapping source points to destination points.

    The perspective counterpart of :class:`Affine`, used by training augmentation: ``h.then(g)`` applies ``h`` first;
    ``apply`` divides by the homogeneous coordinate. An affine transform is a homography with last row ``(0, 0, 1)``.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3):
            raise ValueError(f"homography matrix must be 3x3, got {m.shape}")
        object.__setattr__(self, "matrix", m)

    @classmethod
    def identity(cls) -> Homography:
        return cls(np.eye(3))

    @classmethod
    def from_affine(cls, affine: Affine) -> Homography:
        return cls(affine.matrix.copy())

    @classmethod
    def perspective(cls, px: float, py: float, centre: Sequence[float] = (0.0, 0.0)) -> Homography:
        """Pure perspective about ``centre``: ``(x, y) -> (x, y) / (1 + px*(x-cx) + py*(y-cy))`` (centre fixed)."""
        cx, cy = (float(v) for v in centre)
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [float(px), float(py), 1.0]])
        to_origin = Affine.translation(-cx, -cy).matrix
        back = Affine.translation(cx, cy).matrix
        return cls(back @ m @ to_origin)

    def then(self, other: Homography | Affine) -> Homography:
        """The transform that applies ``self`` first and ``other`` second."""
        return Homography(other.matrix @ self.matrix)

    def inverse(self) -> Homography:
        return Homography(np.linalg.inv(self.matrix))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map points of shape ``(..., 2)`` (x, y); NaN points stay NaN."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        hom = flat @ self.matrix[:, :2].T + self.matrix[:, 2]
        out = hom[:, :2] / hom[:, 2:3]
        return out.reshape(pts.shape)

    @property
    def is_affine(self) -> bool:
        return bool(np.allclose(self.matrix[2, :2], 0.0, atol=1e-15) and self.matrix[2, 2] != 0.0)

    def to_affine(self) -> Affine:
        """The same transform as an :class:`Affine`; ``ValueError`` if it has perspective terms."""
        if not self.is_affine:
            raise ValueError("homography has perspective terms; it is not affine")
        return Affine(self.matrix / self.matrix[2, 2])

    def local_scale(self, point: Sequence[float]) -> tuple[float, float]:
        """How much the transform stretches the x and y axes near source ``point`` (column norms of the Jacobian)."""
        x, y = (float(v) for v in point)
        m = self.matrix
        w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
        u = m[0, 0] * x + m[0, 1] * y + m[0, 2]
        v = m[1, 0] * x + m[1, 1] * y + m[1, 2]
        jac = np.array(
            [
                [(m[0, 0] * w - u * m[2, 0]) / w**2, (m[0, 1] * w - u * m[2, 1]) / w**2],
                [(m[1, 0] * w - v * m[2, 0]) / w**2, (m[1, 1] * w - v * m[2, 1]) / w**2],
            ]
        )
        return float(np.hypot(jac[0, 0], jac[1, 0])), float(np.hypot(jac[0, 1], jac[1, 1]))

    def to_list(self) -> list[list[float]]:
        return self.matrix.tolist()


def warp_perspective(
    image: np.ndarray,
    transform: Homography | Affine,
    out_size: tuple[int, int],
    *,
    antialias: bool = True,
    antialias_at: Sequence[float] | None = None,
    interpolation: int = cv2.INTER_LINEAR,
    border_value: float = 0.0,
) -> np.ndarray:
    """Like :func:`warp` for a projective transform (one ``cv2.warpPerspective``; border ``border_value``).

    With ``antialias`` the source is low-pass filtered when the transform shrinks it near source point
    ``antialias_at`` (default: the source point shown at the centre of the output).
    """
    if isinstance(transform, Affine):
        transform = Homography.from_affine(transform)
    src = np.ascontiguousarray(image)
    if src.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        src = src.astype(np.float32)
    h, w = out_size
    if antialias:
        at = antialias_at
        if at is None:
            at = transform.inverse().apply(np.array([(w - 1) / 2.0, (h - 1) / 2.0]))
        sx, sy = transform.local_scale(at)
        sig_x, sig_y = antialias_sigma(sx), antialias_sigma(sy)
        if sig_x > 0.3 or sig_y > 0.3:
            src = gaussian_blur_float32(src, max(sig_x, 1e-3), max(sig_y, 1e-3))
    return cv2.warpPerspective(
        src,
        transform.matrix,
        (int(w), int(h)),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


# The fixed framing between a prepared image and a network input: [rescale] -> pad (centred, zeros) -> crop.
# Training datasets and inference both use these, so a knee is framed identically in both.


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
