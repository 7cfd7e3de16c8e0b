"""The published KNEEL annotation files and the coordinate frames they use.

Two formats (reference §2):

* ``bf_landmarks_1_0.3.csv``: one row per knee, columns ``subject_id,side,kl,tibia,femur,bbox,center``. ``tibia``
  (9 points) and ``femur`` (7 points) are in the **ROI frame**: the 466x466 px high-cost ROI at 0.3 mm/px, left knees
  mirrored (stored as ``466 - x``) so every ROI looks like a right knee. ``bbox`` (x0, y0, x1, y1) and ``center``
  (cx, cy; = tibial landmark 4) are in the **padded frame**: the whole image resampled to 0.3 mm/px and zero-padded
  by 100 px on every side. ``read_bf_landmarks``/``write_bf_landmarks`` round-trip the file byte for byte.
* VIA point CSVs (``oai_landmarks_00_via_format*.csv``): one row per point in **original-image pixels**
  (``region_shape_attributes`` ``{"name":"point","cx":..,"cy":..}``, ``region_attributes`` ``{"Bone":"T"|"F",
  "Side":"R"|"L"}``), points of a knee in the order T0..T8 then F9..F15. ``read_via_points``/``write_via_points``
  round-trip every value (unknown JSON keys included).

Frames and their relations (all points ``(x, y)``; the reference's own arithmetic, reproduced exactly):

* ROI -> padded: un-mirror left knees (``x -> 466 - x``), then add the bbox origin ``(x0, y0)``.
* padded -> low-cost (whole image, 1 mm/px, unpadded): ``(xy - 100) * 0.3``.
* padded -> original pixels: ``(xy - 100) * 0.3 / spacing`` per axis (x with the column spacing, y with the row
  spacing); scaling about the origin, as the reference's ``cv2.resize`` bookkeeping did.

The reference mirrors with ``466 - x`` here, while ``kneel.geometry.Affine.mirror_x`` uses ``width - 1 - x``
(reference §8 item 4); these functions describe the *files*, so they keep the file's convention.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kneel.io.atomic import atomic_write_text
from kneel.io.errors import AnnotationError
from kneel.landmarks import FEMUR, NUM_LANDMARKS, TIBIA, KneeSide

__all__ = [
    "HC_SPACING",
    "LC_SPACING",
    "IMAGE_PAD",
    "ROI_SIZE_MM",
    "ROI_SIZE_PX",
    "BF_COLUMNS",
    "VIA_COLUMNS",
    "KneeAnnotation",
    "ViaPoint",
    "ViaKnee",
    "read_bf_landmarks",
    "write_bf_landmarks",
    "format_bf_landmarks",
    "read_via_points",
    "write_via_points",
    "format_via_points",
    "group_via_knees",
    "roi_to_padded",
    "padded_to_roi",
    "padded_to_lc",
    "lc_to_padded",
    "padded_to_original",
    "original_to_padded",
    "implied_spacing",
]

HC_SPACING = 0.3
"""mm per pixel of the high-cost ROI and of the padded frame."""
LC_SPACING = 1.0
"""mm per pixel of the low-cost whole-image frame."""
IMAGE_PAD = 100
"""Zero padding (px, at 0.3 mm/px) on every side of the padded frame."""
ROI_SIZE_MM = 140.0
"""Nominal high-cost ROI size in mm."""
ROI_SIZE_PX = int(ROI_SIZE_MM / HC_SPACING)
"""ROI size in pixels at 0.3 mm/px: ``int(140 / 0.3) = 466`` (139.8 mm)."""

BF_COLUMNS: tuple[str, ...] = ("subject_id", "side", "kl", "tibia", "femur", "bbox", "center")
VIA_COLUMNS: tuple[str, ...] = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)
_N_TIBIA = len(TIBIA)
_N_FEMUR = len(FEMUR)


# ----------------------------------------------------------------------------------------------------------------
# records


@dataclass
class KneeAnnotation:
    """One knee of ``bf_landmarks_1_0.3.csv``.

    Attributes:
        subject_id: OAI participant ID.
        side: The knee (``KneeSide.R``/``KneeSide.L``).
        kl: Kellgren-Lawrence grade 0-4.
        landmarks_roi: (16, 2) float array, T0..T8 then F9..F15, in the ROI frame as stored (left knees mirrored).
        bbox: ``(x0, y0, x1, y1)`` of the ROI in the padded 0.3 mm frame (466 px wide and high).
        centre: ``(cx, cy)``: tibial landmark 4 in the padded 0.3 mm frame.
    """

    subject_id: int
    side: KneeSide
    kl: int
    landmarks_roi: np.ndarray
    bbox: tuple[int, int, int, int]
    centre: tuple[int, int]

    @property
    def landmarks_padded(self) -> np.ndarray:
        """The 16 landmarks in the padded 0.3 mm frame (see ``roi_to_padded``)."""
        return roi_to_padded(self)

    @property
    def centre_lc(self) -> np.ndarray:
        """The knee centre in the unpadded 1 mm whole-image frame (the low-cost target)."""
        return padded_to_lc(np.asarray(self.centre, dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KneeAnnotation):
            return NotImplemented
        return (
            self.subject_id == other.subject_id
            and self.side == other.side
            and self.kl == other.kl
            and np.array_equal(self.landmarks_roi, other.landmarks_roi)
            and tuple(self.bbox) == tuple(other.bbox)
            and tuple(self.centre) == tuple(other.centre)
        )


@dataclass
class ViaPoint:
    """One row of a VIA point CSV (a point in original-image pixels), every field kept.

    Attributes:
        filename: Image file name (``<subject_id>.png`` in the OAI files).
        file_size: As written (text; VIA stores the PNG's size in bytes).
        file_attributes: Parsed JSON object (usually empty).
        region_count, region_id: As written.
        shape: Parsed ``region_shape_attributes`` (``name``, ``cx``, ``cy`` and any other keys).
        attributes: Parsed ``region_attributes`` (``Bone``, ``Side`` and any other keys).
    """

    filename: str
    file_size: str
    file_attributes: dict[str, Any]
    region_count: int
    region_id: int
    shape: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def xy(self) -> tuple[float, float]:
        """``(cx, cy)`` in original-image pixels."""
        return (self.shape["cx"], self.shape["cy"])

    @property
    def bone(self) -> str | None:
        """``"T"`` or ``"F"`` (``None`` if not annotated)."""
        value = self.attributes.get("Bone")
        return None if value is None else str(value).strip()

    @property
    def side(self) -> KneeSide | None:
        value = self.attributes.get("Side")
        return None if value is None else KneeSide.parse(value)


@dataclass
class ViaKnee:
    """The points of one knee in a VIA file, in file order (T0..T8 then F9..F15 when complete).

    Attributes:
        filename: Image file name.
        side: The knee.
        landmarks: (n, 2) float array in original-image pixels.
        bones: ``"T"``/``"F"`` per point.
    """

    filename: str
    side: KneeSide
    landmarks: np.ndarray
    bones: tuple[str, ...]

    @property
    def subject_id(self) -> int | str:
        """The file name's stem, as an int when it is a number (OAI participant IDs)."""
        stem = Path(self.filename).stem
        return int(stem) if stem.isdigit() else stem

    @property
    def complete(self) -> bool:
        """16 points: 9 tibial then 7 femoral."""
        return self.bones == ("T",) * _N_TIBIA + ("F",) * _N_FEMUR


# ----------------------------------------------------------------------------------------------------------------
# bf_landmarks_1_0.3.csv


def _csv_rows(path: Path, columns: tuple[str, ...], header_name: str) -> Iterator[tuple[int, list[str]]]:
    """Non-empty data rows of a CSV whose header must be ``columns``, with their 1-based line numbers.

    Raises:
        AnnotationError: The file cannot be read or its header differs.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AnnotationError(f"cannot read: {exc.strerror or exc}", path) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != columns:
        raise AnnotationError(f"expected the {header_name} {','.join(columns)}, got {header}", path)
    for line_no, row in enumerate(reader, start=2):
        if row:
            yield line_no, row


def read_bf_landmarks(path: str | os.PathLike[str]) -> list[KneeAnnotation]:
    """Read ``bf_landmarks_1_0.3.csv`` (or a file in the same format) into typed records, in file order.

    Raises:
        AnnotationError: Missing columns or a malformed row (names the line).
    """
    path = Path(path)
    records = []
    for line_no, row in _csv_rows(path, BF_COLUMNS, "header"):
        try:
            records.append(_parse_bf_row(row))
        except (ValueError, IndexError) as exc:
            raise AnnotationError(f"line {line_no}: {exc}", path) from None
    return records


def _numbers(text: str, count: int, what: str) -> list[float]:
    parts = [p for p in text.split(",") if p.strip() != ""]
    if len(parts) != count:
        raise ValueError(f"{what} must have {count} numbers, got {len(parts)}")
    return [float(p) for p in parts]


def _ints(text: str, count: int, what: str) -> tuple[int, ...]:
    values = _numbers(text, count, what)
    if any(v != int(v) for v in values):
        raise ValueError(f"{what} must be integers: {text!r}")
    return tuple(int(v) for v in values)


def _parse_bf_row(row: Sequence[str]) -> KneeAnnotation:
    if len(row) != len(BF_COLUMNS):
        raise ValueError(f"expected {len(BF_COLUMNS)} fields, got {len(row)}")
    subject, side, kl, tibia, femur, bbox, centre = row
    points = _numbers(tibia, 2 * _N_TIBIA, "tibia") + _numbers(femur, 2 * _N_FEMUR, "femur")
    landmarks = np.asarray(points, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
    return KneeAnnotation(
        subject_id=int(subject),
        side=KneeSide.parse(side),
        kl=int(kl),
        landmarks_roi=landmarks,
        bbox=_ints(bbox, 4, "bbox"),  # type: ignore[arg-type]
        centre=_ints(centre, 2, "center"),  # type: ignore[arg-type]
    )


def _fmt(value: float) -> str:
    """Integral values as integers (as the published file), others with a round-trip exact repr."""
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def format_bf_landmarks(records: Iterable[KneeAnnotation]) -> str:
    """The CSV text ``write_bf_landmarks`` writes (``\\n`` line ends, fields quoted only when they hold commas)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(BF_COLUMNS)
    for rec in records:
        pts = np.asarray(rec.landmarks_roi, dtype=np.float64)
        if pts.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"subject {rec.subject_id} {rec.side}: landmarks_roi must be (16, 2), got {pts.shape}")
        writer.writerow(
            [
                str(int(rec.subject_id)),
                KneeSide.parse(rec.side).value,
                str(int(rec.kl)),
                ",".join(_fmt(v) for v in pts[list(TIBIA)].ravel()),
                ",".join(_fmt(v) for v in pts[list(FEMUR)].ravel()),
                ",".join(_fmt(v) for v in rec.bbox),
                ",".join(_fmt(v) for v in rec.centre),
            ]
        )
    return out.getvalue()


def write_bf_landmarks(records: Iterable[KneeAnnotation], path: str | os.PathLike[str]) -> None:
    """Write records in the ``bf_landmarks`` format, atomically (the published file comes back byte for byte)."""
    atomic_write_text(path, format_bf_landmarks(records))


# ----------------------------------------------------------------------------------------------------------------
# VIA point CSVs


def read_via_points(path: str | os.PathLike[str]) -> list[ViaPoint]:
    """Read a VIA region CSV of points, in file order.

    Raises:
        AnnotationError: Missing columns, invalid JSON or a region that is not a point with ``cx``/``cy``.
    """
    path = Path(path)
    points = []
    for line_no, row in _csv_rows(path, VIA_COLUMNS, "VIA header"):
        try:
            points.append(_parse_via_row(row))
        except (ValueError, KeyError, TypeError) as exc:
            raise AnnotationError(f"line {line_no}: {exc}", path) from None
    return points


def _json_object(text: str, what: str) -> dict[str, Any]:
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {text!r}")
    return value


def _parse_via_row(row: Sequence[str]) -> ViaPoint:
    if len(row) != len(VIA_COLUMNS):
        raise ValueError(f"expected {len(VIA_COLUMNS)} fields, got {len(row)}")
    filename, file_size, file_attrs, count, region_id, shape_text, attrs_text = row
    shape = _json_object(shape_text, "region_shape_attributes")
    if shape.get("name") != "point" or "cx" not in shape or "cy" not in shape:
        raise ValueError(f"region is not a point with cx, cy: {shape_text!r}")
    for key in ("cx", "cy"):
        if isinstance(shape[key], bool) or not isinstance(shape[key], (int, float)):
            raise ValueError(f"{key} is not a number: {shape_text!r}")
    return ViaPoint(
        filename=filename,
        file_size=file_size,
        file_attributes=_json_object(file_attrs, "file_attributes"),
        region_count=int(count),
        region_id=int(region_id),
        shape=shape,
        attributes=_json_object(attrs_text, "region_attributes"),
    )


def _csv_field(text: str, always_quote: bool) -> str:
    if always_quote or any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_via_points(points: Iterable[ViaPoint]) -> str:
    """The CSV text ``write_via_points`` writes: VIA's own layout (JSON fields quoted, compact JSON, ``\\n``)."""
    lines = [",".join(VIA_COLUMNS)]
    for p in points:
        fields = [
            _csv_field(p.filename, False),
            _csv_field(str(p.file_size), False),
            _csv_field(json.dumps(p.file_attributes, separators=(",", ":")), True),
            str(int(p.region_count)),
            str(int(p.region_id)),
            _csv_field(json.dumps(p.shape, separators=(",", ":")), True),
            _csv_field(json.dumps(p.attributes, separators=(",", ":")), True),
        ]
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def write_via_points(points: Iterable[ViaPoint], path: str | os.PathLike[str]) -> None:
    """Write points as a VIA region CSV, atomically (values as read: ``read_via_points`` gives them back equal)."""
    atomic_write_text(path, format_via_points(points))


def group_via_knees(points: Iterable[ViaPoint]) -> list[ViaKnee]:
    """Group VIA points by (filename, Side) in order of first appearance; points keep file order."""
    groups: dict[tuple[str, KneeSide], list[ViaPoint]] = {}
    for p in points:
        side = p.side
        if side is None:
            raise AnnotationError(f"{p.filename} region {p.region_id}: no Side attribute")
        groups.setdefault((p.filename, side), []).append(p)
    knees = []
    for (filename, side), pts in groups.items():
        xy = np.asarray([p.xy for p in pts], dtype=np.float64).reshape(-1, 2)
        knees.append(ViaKnee(filename, side, xy, tuple(p.bone or "?" for p in pts)))
    return knees


# ----------------------------------------------------------------------------------------------------------------
# frames


def _xy(points: Any) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {arr.shape}")
    return arr


def _spacing_xy(spacing: float | Sequence[float]) -> np.ndarray:
    """``(row_mm, col_mm)`` (or one number) -> per-axis factors in (x, y) order: (col_mm, row_mm)."""
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.size == 1:
        return np.array([values[0], values[0]])
    if values.size != 2:
        raise ValueError(f"spacing must be one number or (row_mm, col_mm), got {spacing!r}")
    return np.array([values[1], values[0]])


def roi_to_padded(ann: KneeAnnotation) -> np.ndarray:
    """(16, 2) landmarks of ``ann`` in the padded 0.3 mm frame: un-mirror L knees (``466 - x``), add (x0, y0)."""
    xy = _xy(ann.landmarks_roi).copy()
    if KneeSide.parse(ann.side) is KneeSide.L:
        xy[..., 0] = ROI_SIZE_PX - xy[..., 0]
    return xy + np.array(ann.bbox[:2], dtype=np.float64)


def padded_to_roi(xy_padded: Any, side: KneeSide | str, bbox: Sequence[int]) -> np.ndarray:
    """Inverse of ``roi_to_padded``: subtract (x0, y0), then mirror L knees (``466 - x``)."""
    xy = _xy(xy_padded) - np.array(bbox[:2], dtype=np.float64)
    if KneeSide.parse(side) is KneeSide.L:
        xy[..., 0] = ROI_SIZE_PX - xy[..., 0]
    return xy


def padded_to_lc(xy: Any) -> np.ndarray:
    """Padded 0.3 mm frame -> unpadded 1 mm whole-image frame: ``(xy - 100) * 0.3``."""
    return (_xy(xy) - IMAGE_PAD) * (HC_SPACING / LC_SPACING)


def lc_to_padded(xy: Any) -> np.ndarray:
    """1 mm whole-image frame -> padded 0.3 mm frame: ``xy / 0.3 + 100``."""
    return _xy(xy) / (HC_SPACING / LC_SPACING) + IMAGE_PAD


def padded_to_original(xy: Any, spacing: float | Sequence[float]) -> np.ndarray:
    """Padded 0.3 mm frame -> original-image pixels: ``(xy - 100) * 0.3 / spacing`` per axis.

    Args:
        xy: Points ``(..., 2)``.
        spacing: The original image's pixel spacing, ``(row_mm, col_mm)`` or one number.
    """
    return (_xy(xy) - IMAGE_PAD) * HC_SPACING / _spacing_xy(spacing)


def original_to_padded(xy: Any, spacing: float | Sequence[float]) -> np.ndarray:
    """Original-image pixels -> padded 0.3 mm frame: ``xy * spacing / 0.3 + 100`` per axis (spacing (row, col))."""
    return _xy(xy) * _spacing_xy(spacing) / HC_SPACING + IMAGE_PAD


def implied_spacing(xy_original: Any, xy_padded: Any) -> np.ndarray:
    """The pixel spacing (mm, per point, in (x, y) order) that maps original points onto padded ones.

    ``s = (padded - 100) * 0.3 / original``; used to recover the OAI films' spacing from the VIA and bf files.
    """
    return (_xy(xy_padded) - IMAGE_PAD) * HC_SPACING / _xy(xy_original)
