"""What inference returns: landmarks per knee in original pixels and millimetres, with uncertainty and quality.

Millimetres are the pixel coordinates times the spacing (``x_mm = x_px * col_mm``, ``y_mm = y_px * row_mm``), measured
from the centre of the top-left pixel. ``uncertainty_mm`` is the RMS distance of the fold models' predictions from
their mean (the ensemble's spread) in millimetres; a knee is flagged ``"uncertain"`` when that spread is large
(:data:`QUALITY_MEDIAN_MM`, :data:`QUALITY_MAX_MM`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kneel.inference.presence import STATUS_NO_KNEE, STATUS_OK, KneeEvidence
from kneel.landmarks import NUM_LANDMARKS, KneeSide, landmark_names

__all__ = [
    "QUALITY_MEDIAN_MM",
    "QUALITY_MAX_MM",
    "quality_flag",
    "KneePrediction",
    "RadiographPrediction",
    "CSV_COLUMNS",
]

QUALITY_MEDIAN_MM = 1.0
"""A knee is ``"uncertain"`` when the median landmark spread of the folds exceeds this (mm) ..."""
QUALITY_MAX_MM = 2.5
"""... or when any single landmark's spread exceeds this (mm)."""

CSV_COLUMNS = (
    "file",
    "side",
    "landmark",
    "name",
    "x_px",
    "y_px",
    "x_mm",
    "y_mm",
    "uncertainty_mm",
    "sop_instance_uid",
    "quality",
)
"""Columns of ``landmarks.csv``: the landmark table's keys ``file,side,landmark`` then the prediction columns."""


def quality_flag(uncertainty_mm: np.ndarray) -> str:
    """``"ok"`` or ``"uncertain"`` from the per-landmark fold spread (thresholds above; NaN counts as uncertain)."""
    u = np.asarray(uncertainty_mm, dtype=np.float64)
    if not np.all(np.isfinite(u)):
        return "uncertain"
    if np.median(u) > QUALITY_MEDIAN_MM or np.max(u) > QUALITY_MAX_MM:
        return "uncertain"
    return "ok"


def _points(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


@dataclass
class KneePrediction:
    """One knee: 16 landmarks (T0-T8, F9-F15) in original pixels, their millimetre positions and uncertainty."""

    side: KneeSide
    landmarks_px: np.ndarray
    """(16, 2) ``(x, y)`` in original-image pixels, pixel centres at integers."""
    spacing: tuple[float, float]
    """(row_mm, col_mm) of the original image."""
    uncertainty_mm: np.ndarray
    """(16,) fold spread per landmark in mm."""
    centre_px: np.ndarray
    """(2,) centre of the last high-cost ROI (the low-cost centre, or the refined T4) in original pixels."""
    lc_centre_px: np.ndarray
    """(2,) the low-cost model's knee centre in original pixels."""
    lc_uncertainty_mm: float = float("nan")
    """Fold spread of the low-cost centre in mm."""
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    """Raw per-landmark uncertainty signals in mm (``spread``, ``heatmap``, ``refine_shift``, ``flip``, ``shape``),
    the inputs of the calibration (:mod:`kneel.inference.calibration`)."""
    uncertainty_coverage: float | None = None
    """Stated coverage of ``uncertainty_mm`` when it is a calibrated radius; ``None`` when it is the fold spread."""
    flag_radius_mm: float | None = None
    """With a calibration: the distance (mm) at which a landmark counts as far off for the flag."""
    far_probability: float | None = None
    """With a calibration: the estimated probability that any landmark lies ``flag_radius_mm`` or more from the
    truth (:meth:`kneel.inference.calibration.Calibration.far_probability`); ``None`` for older calibrations, whose
    flag compares each landmark's radius with ``flag_radius_mm``."""
    flag_probability: float | None = None
    """With ``far_probability``: the knee is ``"uncertain"`` when it exceeds this."""
    review_radius_mm: float | None = None
    """With ``far_probability``: the knee is also ``"uncertain"`` when its largest radius exceeds this (the review
    rule: the least certain share of the calibration knees exceeded it)."""

    @property
    def landmarks_mm(self) -> np.ndarray:
        """(16, 2) positions in mm from the centre of the top-left pixel."""
        row, col = self.spacing
        return self.landmarks_px * np.array([col, row])

    @property
    def quality(self) -> str:
        """``"ok"`` or ``"uncertain"``: from the calibrated radii when calibrated, else the fold-spread rule."""
        if self.flag_radius_mm is None:
            return quality_flag(self.uncertainty_mm)
        from kneel.inference.calibration import knee_quality

        return knee_quality(
            self.uncertainty_mm, self.flag_radius_mm, self.far_probability, self.flag_probability, self.review_radius_mm
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": self.side.value,
            "landmarks_px": self.landmarks_px.tolist(),
            "landmarks_mm": self.landmarks_mm.tolist(),
            "uncertainty_mm": self.uncertainty_mm.tolist(),
            "quality": self.quality,
            "centre_px": self.centre_px.tolist(),
            "lc_centre_px": self.lc_centre_px.tolist(),
            "lc_uncertainty_mm": float(self.lc_uncertainty_mm),
            "uncertainty_coverage": self.uncertainty_coverage,
            "flag_radius_mm": self.flag_radius_mm,
            "far_probability": self.far_probability,
            "flag_probability": self.flag_probability,
            "review_radius_mm": self.review_radius_mm,
            "signals": {name: np.asarray(v, dtype=np.float64).tolist() for name, v in self.signals.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], spacing: tuple[float, float]) -> KneePrediction:
        return cls(
            side=KneeSide.parse(data["side"]),
            landmarks_px=_points(data["landmarks_px"]),
            spacing=spacing,
            uncertainty_mm=np.asarray(data["uncertainty_mm"], dtype=np.float64),
            centre_px=np.asarray(data["centre_px"], dtype=np.float64),
            lc_centre_px=np.asarray(data["lc_centre_px"], dtype=np.float64),
            lc_uncertainty_mm=float(data.get("lc_uncertainty_mm", float("nan"))),
            signals={k: np.asarray(v, dtype=np.float64) for k, v in (data.get("signals") or {}).items()},
            uncertainty_coverage=data.get("uncertainty_coverage"),
            flag_radius_mm=data.get("flag_radius_mm"),
            far_probability=data.get("far_probability"),
            flag_probability=data.get("flag_probability"),
            review_radius_mm=data.get("review_radius_mm"),
        )


@dataclass
class RadiographPrediction:
    """All knees found in one radiograph, plus what a reader needs to trust or reproduce them."""

    file: str
    """The file key: as given on the command line, or relative to the input folder."""
    path: str
    shape: tuple[int, int]
    """(rows, columns) of the original image."""
    spacing: tuple[float, float]
    spacing_source: str
    sop_instance_uid: str | None
    film: str
    """``"bilateral"``, ``"single"`` (a single-knee film, see :mod:`kneel.inference.presence`) or ``"none"`` (refused
    before any knee was looked for)."""
    knees: dict[KneeSide, KneePrediction] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    refusal: str | None = None
    """Why the whole file holds no knee (DICOM tags, film size); ``None`` when knees were looked for."""
    absent: dict[KneeSide, str] = field(default_factory=dict)
    """Each knee looked for and not found, with the reason (one line)."""
    evidence: dict[KneeSide, KneeEvidence] = field(default_factory=dict)
    """What the presence decision measured for each knee looked for."""

    @property
    def status(self) -> str:
        """``"ok"`` when at least one knee was found, else ``"no_knee"`` (:mod:`kneel.inference.presence`)."""
        return STATUS_OK if self.knees else STATUS_NO_KNEE

    @property
    def reason(self) -> str:
        """One line: why there is no knee (``no_knee``), or which knees looked for are missing (``ok``, may be "")."""
        if self.refusal:
            return self.refusal
        parts = [f"knee {s.value}: {self.absent[s]}" for s in (KneeSide.R, KneeSide.L) if s in self.absent]
        if not parts and not self.knees:
            return "no knee was looked for"
        return "; ".join(parts)

    def knee_status(self) -> dict[str, dict[str, Any]]:
        """Per knee looked for: ``{"status", "reason", "evidence"}`` (JSON-ready)."""
        out: dict[str, dict[str, Any]] = {}
        for side in (KneeSide.R, KneeSide.L):
            if side not in self.knees and side not in self.absent:
                continue
            found = side in self.knees
            out[side.value] = {
                "status": STATUS_OK if found else STATUS_NO_KNEE,
                "reason": "" if found else self.absent[side],
                "evidence": self.evidence[side].as_dict() if side in self.evidence else {},
            }
        return out

    def __getitem__(self, side: str | KneeSide) -> KneePrediction:
        return self.knees[KneeSide.parse(side)]

    def __iter__(self) -> Iterator[KneePrediction]:
        for side in (KneeSide.R, KneeSide.L):
            if side in self.knees:
                yield self.knees[side]

    def bilateral_array(self) -> np.ndarray:
        """(2, 16, 2) in R, L order (NaN for a missing knee): the reference's ``preds`` row."""
        out = np.full((2, NUM_LANDMARKS, 2), np.nan)
        for i, side in enumerate((KneeSide.R, KneeSide.L)):
            if side in self.knees:
                out[i] = self.knees[side].landmarks_px
        return out

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Rows of ``landmarks.csv`` (:data:`CSV_COLUMNS`), R before L, landmarks in index order."""
        names = landmark_names()
        for knee in self:
            mm = knee.landmarks_mm
            quality = knee.quality
            for k in range(NUM_LANDMARKS):
                yield (
                    self.file,
                    knee.side.value,
                    k,
                    names[k],
                    float(knee.landmarks_px[k, 0]),
                    float(knee.landmarks_px[k, 1]),
                    float(mm[k, 0]),
                    float(mm[k, 1]),
                    float(knee.uncertainty_mm[k]),
                    self.sop_instance_uid or "",
                    quality,
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "image": {
                "rows": int(self.shape[0]),
                "columns": int(self.shape[1]),
                "spacing_mm": [float(v) if np.isfinite(v) else None for v in self.spacing],
                "spacing_source": self.spacing_source,
                "sop_instance_uid": self.sop_instance_uid,
                "film": self.film,
            },
            "knees": {knee.side.value: knee.to_dict() for knee in self},
            "missing": [s.value for s in (KneeSide.R, KneeSide.L) if s not in self.knees],
            "refusal": self.refusal,
            "presence": self.knee_status(),
            "warnings": list(self.warnings),
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RadiographPrediction:
        image = data["image"]
        spacing = tuple(float("nan") if v is None else float(v) for v in image["spacing_mm"])
        presence = data.get("presence", {})
        knees = {KneeSide.parse(s): KneePrediction.from_dict(k, spacing) for s, k in data.get("knees", {}).items()}
        return cls(
            file=data["file"],
            path=data.get("path", data["file"]),
            shape=(int(image["rows"]), int(image["columns"])),
            spacing=spacing,
            spacing_source=image.get("spacing_source", ""),
            sop_instance_uid=image.get("sop_instance_uid"),
            film=image.get("film", "bilateral"),
            knees=knees,
            warnings=list(data.get("warnings", [])),
            settings=dict(data.get("settings", {})),
            refusal=data.get("refusal"),
            absent={KneeSide.parse(s): str(v["reason"]) for s, v in presence.items() if v["status"] != STATUS_OK},
            evidence={KneeSide.parse(s): KneeEvidence.from_dict(v.get("evidence", {})) for s, v in presence.items()},
        )
