"""``kneel crop``: standard knee regions of interest for downstream models (Kellgren-Lawrence graders and the like).

Each knee's ROI is a square of ``size_mm`` at ``spacing_mm`` per pixel (``round(size_mm / spacing_mm)`` pixels a
side), centred on T4 (the tibial intercondylar centre: the KNEEL high-cost ROI centre, and the centre DeepKnee cuts
its ROIs around). The defaults, 140 mm at 0.4 mm (350 x 350 pixels), are DeepKnee's grader input (Tiulpin et al.,
Sci Rep 2018; see docs/measurements.md for the source). Left knees are mirrored to the right-knee orientation unless
``mirror_left`` is off; with ``level`` the ROI is rotated about T4 so that the tibial plateau line (T1->T7) is
horizontal.

The mapping from original-image pixels to crop pixels is one affine transform (:class:`kneel.geometry.Affine`),
built as: translate T4 to the origin -> scale to mm (``col_mm``, ``row_mm``: anisotropic spacing exact) -> mirror
(``x -> -x``) -> rotate -> scale to crop pixels -> put T4 on crop pixel ``(size_px // 2, size_px // 2)``. The image
is resampled with exactly that matrix (``kneel.geometry.warp``, anti-aliased), its six numbers are written to
``crops.csv`` and the landmarks are mapped through it into ``landmarks.csv``, so any later result in a crop maps back
with the inverse matrix.

Intensity (16-bit output): ``window`` (default) maps the film's 5th-99th percentile to 0-65535, the windowing
DeepKnee applies to the whole film before cutting its ROIs; ``raw`` keeps the radiograph's values (bone bright,
modality units) clipped to 0-65535. Outside the film is 0.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.geometry import Affine, warp
from kneel.io.atomic import atomic_write_bytes, atomic_write_text
from kneel.io.landmark_table import write_landmark_table
from kneel.landmarks import CENTRE_LANDMARK, NUM_LANDMARKS, KneeSide
from kneel.measure.definitions import TIBIAL_LINE
from kneel.measure.knees import KneeSet, find_image, load_knees

__all__ = ["CropSettings", "CropSummary", "crop_transform", "crop_knee", "crop_knees", "crop"]

PathLike = str | os.PathLike[str]
DEEPKNEE_SIZE_MM = 140.0
"""DeepKnee's ROI side (``sizemm=140`` in ``ouludeepknee/data/utils.py:process_file_or_image``)."""
DEEPKNEE_SPACING_MM = 0.4
"""DeepKnee resizes its 140 mm ROI to 350 x 350 pixels: 0.4 mm per pixel."""
AFFINE_COLUMNS: tuple[str, ...] = ("a00", "a01", "a02", "a10", "a11", "a12")
"""``crops.csv`` columns of the affine matrix original px -> crop px: ``x' = a00 x + a01 y + a02``,
``y' = a10 x + a11 y + a12``."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CropSettings:
    """How ROIs are cut (defaults: DeepKnee's 140 mm at 0.4 mm, left knees mirrored, not levelled, windowed)."""

    size_mm: float = DEEPKNEE_SIZE_MM
    spacing_mm: float = DEEPKNEE_SPACING_MM
    level: bool = False
    mirror_left: bool = True
    intensity: str = "window"
    image_format: str = "png"

    def __post_init__(self) -> None:
        if not all(np.isfinite(v) and v > 0 for v in (self.size_mm, self.spacing_mm)):
            raise ValueError(f"size and spacing must be positive mm, got {self.size_mm} and {self.spacing_mm}")
        if self.intensity not in ("window", "raw"):
            raise ValueError(f"intensity must be 'window' or 'raw', got {self.intensity!r}")
        if self.image_format not in ("png", "npz"):
            raise ValueError(f"format must be 'png' or 'npz', got {self.image_format!r}")

    @property
    def size_px(self) -> int:
        """Side of the crop in pixels: ``round(size_mm / spacing_mm)``."""
        return max(1, int(round(self.size_mm / self.spacing_mm)))


@dataclass
class CropSummary:
    """What :func:`crop` wrote."""

    out: Path
    crops: pd.DataFrame
    written: int
    failed: int


def crop_transform(
    points_px: np.ndarray, spacing: Sequence[float], side: str, settings: CropSettings = CropSettings()
) -> tuple[Affine, bool, float]:
    """The affine original px -> crop px of one knee, whether it mirrors, and the rotation applied (degrees,
    counter-clockwise on screen, after mirroring); see the module docstring for the chain."""
    pts = np.asarray(points_px, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
    centre = pts[CENTRE_LANDMARK]
    if not np.all(np.isfinite(centre)):
        raise ValueError("the knee centre T4 is missing")
    row_mm, col_mm = (float(v) for v in spacing)
    transform = Affine.translation(-centre[0], -centre[1]).then(Affine.scaling(col_mm, row_mm))
    mirrored = KneeSide.parse(side) is KneeSide.L and settings.mirror_left
    if mirrored:
        transform = transform.then(Affine.scaling(-1.0, 1.0))
    rotation = 0.0
    if settings.level:
        a, b = TIBIAL_LINE
        mm = transform.apply(pts[[a, b]])
        d = mm[1] - mm[0]
        if not np.all(np.isfinite(d)) or not np.any(d):
            raise ValueError(f"cannot level: the plateau line T{a}-T{b} is missing")
        if KneeSide.parse(side) is KneeSide.L and not mirrored:
            d = -d  # an unmirrored left knee has its medial side on the image left: level it pointing left
        rotation = float(np.degrees(np.arctan2(d[1], d[0])))
        transform = transform.then(Affine.rotation(rotation))
    half = settings.size_px // 2
    transform = transform.then(Affine.scaling(1.0 / settings.spacing_mm)).then(Affine.translation(half, half))
    return transform, mirrored, rotation


def _window(image: np.ndarray) -> tuple[float, float]:
    """The film's 5th and 99th percentiles (ignoring NaN)."""
    lo, hi = np.nanpercentile(image, [5.0, 99.0])
    return float(lo), float(hi)


def crop_knee(
    image: np.ndarray,
    transform: Affine,
    settings: CropSettings,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """The uint16 crop of ``image`` (bone bright) through ``transform`` (see the module docstring for intensity)."""
    n = settings.size_px
    src = np.asarray(image, dtype=np.float32)
    if settings.intensity == "window":
        lo, hi = _window(src) if window is None else window
        out = warp(src, transform, (n, n), antialias=True, border_value=lo)
        scale = 65535.0 / (hi - lo) if hi > lo else 0.0
        out = (out.astype(np.float64) - lo) * scale
    else:
        out = warp(src, transform, (n, n), antialias=True, border_value=0.0).astype(np.float64)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


def crop_name(file: str, side: str, suffix: str) -> str:
    """File name of a knee's crop: the file key made safe, a short hash of it (keys may collide once made safe),
    the side."""
    digest = hashlib.sha1(file.encode("utf-8")).hexdigest()[:8]
    safe = _UNSAFE.sub("_", file.replace("/", "__").replace("\\", "__")).strip("._")[-80:]
    return f"{safe or 'file'}-{digest}_{side}.{suffix}"


def _encode(crop: np.ndarray, settings: CropSettings, transform: Affine, landmarks: np.ndarray) -> bytes:
    if settings.image_format == "png":
        import cv2

        ok, buffer = cv2.imencode(".png", crop)
        if not ok:
            raise KneelError("PNG encoding failed")
        return buffer.tobytes()
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        image=crop,
        affine=transform.matrix,
        landmarks_px=landmarks,
        spacing_mm=np.array([settings.spacing_mm, settings.spacing_mm]),
    )
    return buffer.getvalue()


def crop_knees(
    knees: KneeSet,
    out: PathLike,
    settings: CropSettings = CropSettings(),
    *,
    images: PathLike | None = None,
    stream: TextIO | None = None,
) -> CropSummary:
    """Cut, write and tabulate the ROI of every knee (see the module docstring); a knee that fails gets a row with
    its reason (and a line on ``stream``) and the run goes on.

    Writes ``out/crops/<name>.{png,npz}``, ``out/crops.csv`` (one row per knee: status, crop file, size, spacing,
    mirroring, rotation, the source spacing, the intensity window and the affine matrix) and ``out/landmarks.csv``
    (the landmarks in crop pixels: a landmark table of the crops, with ``row_mm,col_mm`` = the crop spacing,
    ``mirrored`` and the landmarks' ``uncertainty_mm`` when the source has them, so ``kneel measure`` reads it
    directly).
    """
    from kneel.io import read_radiograph

    stream = sys.stderr if stream is None else stream
    out = Path(out)
    (out / "crops").mkdir(parents=True, exist_ok=True)
    rows, landmark_rows = [], []
    film_cache: dict[str, tuple[np.ndarray, tuple[float, float] | None]] = {}
    order = sorted(range(len(knees)), key=lambda i: (knees.files[i], knees.sides[i] != "R"))
    for i in order:
        file, side = knees.files[i], knees.sides[i]
        row: dict[str, object] = {"file": file, "side": side, "crop": "", "status": "ok"}
        try:
            if knees.errors[i]:
                raise KneelError(knees.errors[i])
            points = knees.points_px[i]
            spacing = tuple(float(v) for v in knees.spacing[i])
            transform, mirrored, rotation = crop_transform(points, spacing, side, settings)
            found = find_image(file, images, knees.paths[i])
            if found is None:
                raise KneelError("radiograph not found (give --images DIR)")
            key = str(found)
            if key not in film_cache:
                film_cache.clear()  # one film at a time: knees of a film are consecutive
                image = read_radiograph(found, spacing=spacing).image
                film_cache[key] = (image, _window(image) if settings.intensity == "window" else None)
            image, window = film_cache[key]
            crop_px = crop_knee(image, transform, settings, window)
            landmarks = transform.apply(points)
            name = crop_name(file, side, settings.image_format)
            atomic_write_bytes(out / "crops" / name, _encode(crop_px, settings, transform, landmarks))
            m = transform.matrix
            row.update(
                crop=f"crops/{name}",
                size_px=settings.size_px,
                crop_spacing_mm=settings.spacing_mm,
                mirrored=mirrored,
                level=settings.level,
                rotation_deg=rotation,
                centre_x_px=float(points[CENTRE_LANDMARK, 0]),
                centre_y_px=float(points[CENTRE_LANDMARK, 1]),
                row_mm=spacing[0],
                col_mm=spacing[1],
                spacing_source=knees.spacing_source[i],
                intensity=settings.intensity,
                window_low=np.nan if window is None else window[0],
                window_high=np.nan if window is None else window[1],
                **dict(zip(AFFINE_COLUMNS, (m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2]), strict=True)),
            )
            for k in range(NUM_LANDMARKS):
                landmark_rows.append(
                    {
                        "file": f"crops/{name}",
                        "side": side,
                        "landmark": k,
                        "x_px": float(landmarks[k, 0]),
                        "y_px": float(landmarks[k, 1]),
                        "row_mm": settings.spacing_mm,
                        "col_mm": settings.spacing_mm,
                        "mirrored": mirrored,
                        "source_file": file,
                        "source_x_px": float(points[k, 0]),
                        "source_y_px": float(points[k, 1]),
                        "uncertainty_mm": float(knees.uncertainty_mm[i, k]),
                    }
                )
        except (KneelError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, KneelError) else str(exc)
            row["status"] = " ".join(str(reason).split())
            print(f"kneel crop: {file} {side}: {row['status']}", file=stream)
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "crops.csv", table.to_csv(index=False, lineterminator="\n"))
    columns = ["file", "side", "landmark", "x_px", "y_px", "row_mm", "col_mm", "mirrored", "source_file"]
    landmarks_table = pd.DataFrame(landmark_rows, columns=columns + ["source_x_px", "source_y_px", "uncertainty_mm"])
    if landmarks_table["uncertainty_mm"].isna().all():
        landmarks_table = landmarks_table.drop(columns=["uncertainty_mm"])
    write_landmark_table(landmarks_table, out / "landmarks.csv")
    failed = int((table["status"] != "ok").sum()) if len(table) else 0
    return CropSummary(out=out, crops=table, written=len(table) - failed, failed=failed)


def crop(
    source: PathLike,
    out: PathLike,
    settings: CropSettings = CropSettings(),
    *,
    images: PathLike | None = None,
    spacing: float | Sequence[float] | None = None,
    stream: TextIO | None = None,
) -> CropSummary:
    """ROIs of every knee of a landmark table or a ``kneel predict --out`` folder (see :func:`crop_knees`)."""
    knees = load_knees(source, images=images, spacing=spacing)
    return crop_knees(knees, out, settings, images=images, stream=stream)
