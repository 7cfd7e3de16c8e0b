"""Server-side pictures for the review app: windowed 8-bit PNG views of a radiograph, with an explicit transform.

Every picture is the image resampled by an axis-aligned affine map from **original-image pixels** ``(x, y)`` to
**view pixels** ``(u, v)``::

    u = sx * x + tx        v = sy * y + ty

with pixel centres at integer coordinates in both frames (kneel's convention): original pixel ``(i, j)`` covers
``[i - 0.5, i + 0.5]`` and view pixel ``(u, v)`` covers ``[u - 0.5, u + 0.5]``. The browser draws a view of
``width x height`` pixels in an SVG whose ``viewBox`` is ``-0.5 -0.5 width height``: SVG user coordinates *are* view
pixel coordinates, whatever the zoom on screen, so a landmark at ``(x, y)`` is drawn at ``(sx * x + tx,
sy * y + ty)`` and a pointer at ``(u, v)`` is the point ``((u - tx) / sx, (v - ty) / sy)`` (``static/geometry.js``
does the same arithmetic).

* :func:`knee_view`: a ``size x size`` window centred on ``(cx, cy)`` at ``mm_per_px`` millimetres per view pixel:
  ``sx = col_mm / mm_per_px``, ``tx = (size - 1) / 2 - sx * cx`` (``sy``, ``ty`` with ``row_mm`` and ``cy``), so the
  centre point is the centre of the view and anisotropic pixels come out square in millimetres.
* :func:`film_view`: the whole film scaled by ``s = max_side / max(rows, columns)`` (at most 1):
  ``sx = sy = s``, ``tx = ty = (s - 1) / 2``, so the image's outer edges (``-0.5``) land on the view's edges.

Resampling is :func:`kneel.geometry.warp` (anti-aliased when shrinking) on the part of the image the view needs;
outside the image is black. Windowing maps the ``low``-``high`` percentiles of the pixels the view covers (inside
the image) to 0-255, as :func:`kneel.io.normalize_intensity` does for a whole image.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kneel.geometry import Affine, antialias_sigma, warp

__all__ = ["ViewTransform", "knee_view", "film_view", "render_view", "encode_png", "RadiographCache"]


@dataclass(frozen=True)
class ViewTransform:
    """Original pixels -> view pixels: ``u = sx * x + tx``, ``v = sy * y + ty``; the view is ``width x height``."""

    sx: float
    sy: float
    tx: float
    ty: float
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(np.array([[self.sx, 0.0, self.tx], [0.0, self.sy, self.ty], [0.0, 0.0, 1.0]]))

    def to_view(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([self.sx * xy[..., 0] + self.tx, self.sy * xy[..., 1] + self.ty], axis=-1)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([(uv[..., 0] - self.tx) / self.sx, (uv[..., 1] - self.ty) / self.sy], axis=-1)

    def to_dict(self) -> dict[str, float | int]:
        return {"sx": self.sx, "sy": self.sy, "tx": self.tx, "ty": self.ty, "width": self.width,
                "height": self.height}  # fmt: skip


def knee_view(centre: tuple[float, float], spacing: tuple[float, float], mm_per_px: float, size: int) -> ViewTransform:
    """A ``size x size`` view centred on ``centre`` (original pixels) at ``mm_per_px`` (spacing: row_mm, col_mm)."""
    row_mm, col_mm = spacing
    sx, sy = col_mm / mm_per_px, row_mm / mm_per_px
    half = (size - 1) / 2.0
    return ViewTransform(sx, sy, half - sx * centre[0], half - sy * centre[1], int(size), int(size))


def film_view(shape: tuple[int, int], max_side: int) -> ViewTransform:
    """The whole ``(rows, columns)`` film, scaled to at most ``max_side`` view pixels on its longer side."""
    rows, cols = shape
    s = min(1.0, max_side / max(rows, cols))
    return ViewTransform(s, s, (s - 1) / 2.0, (s - 1) / 2.0, max(1, round(cols * s)), max(1, round(rows * s)))


def render_view(image: np.ndarray, view: ViewTransform, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """The uint8 ``(height, width)`` picture of ``view`` on ``image`` (float, bone bright), windowed to the
    ``low``-``high`` percentiles of the image pixels it covers (see the module docstring)."""
    rows, cols = image.shape
    inverse = view.affine.inverse()
    corners = inverse.apply(np.array([[-0.5, -0.5], [view.width - 0.5, view.height - 0.5]], dtype=np.float64))
    sigma = max(antialias_sigma(view.sx), antialias_sigma(view.sy), 0.0)
    margin = int(math.ceil(4 * sigma)) + 2
    x0 = max(0, int(math.floor(corners[:, 0].min())) - margin)
    x1 = min(cols, int(math.ceil(corners[:, 0].max())) + margin + 1)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - margin)
    y1 = min(rows, int(math.ceil(corners[:, 1].max())) + margin + 1)
    out = np.zeros((view.height, view.width), dtype=np.uint8)
    if x1 <= x0 or y1 <= y0:
        return out
    part = np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32)
    shifted = Affine.translation(x0, y0).then(view.affine)  # part pixel -> original pixel -> view pixel
    ones = np.ones_like(part)
    values = warp(part, shifted, (view.height, view.width), antialias=True)
    inside = warp(ones, shifted, (view.height, view.width), antialias=False, interpolation=cv2.INTER_NEAREST) > 0.5
    seen = values[inside]
    if seen.size == 0:
        return out
    lo, hi = (float(v) for v in np.percentile(seen, [low, high]))
    if not hi > lo:
        hi = lo + 1.0
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out[inside] = np.floor(scaled[inside]).astype(np.uint8)
    return out


def encode_png(picture: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError("PNG encoding failed")
    return encoded.tobytes()


class RadiographCache:
    """The last few images read (float32, bone bright), so moving between the knees of a film reads it once."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, tuple[float, float] | None], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, spacing: tuple[float, float] | None) -> np.ndarray:
        """The image of ``path`` (``spacing``: the one ``kneel predict`` used, needed for plain images)."""
        from kneel.io.errors import SpacingError
        from kneel.io.radiograph import read_radiograph

        key = (str(path), spacing)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            image = read_radiograph(path).image
        except SpacingError:
            if spacing is None:
                raise
            image = read_radiograph(path, spacing=spacing).image  # a plain image: the spacing kneel predict used
        with self._lock:
            self._items[key] = image
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return image
