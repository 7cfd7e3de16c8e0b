"""Does a set of 16 predicted points look like a knee? Similarity fit to the mean shape of the published knees.

A landmark network always answers with 16 points, knee or not. On a knee they form the two joint contours of a real
tibia and femur; on anything else (a shin, a chest, noise) they do not. :func:`shape_fit` aligns the predicted points
(in mm, left knees mirrored to the right-knee orientation) to the mean shape of the 748 published knees by the best
similarity transform (Umeyama's least squares) and reports the residual RMS distance in mm, the size relative to the
mean knee and the rotation. The thresholds that decide live in :mod:`kneel.inference.presence`; the residual limit
is calibrated per model from its own out-of-fold predictions (:func:`oof_residuals`,
:mod:`kneel.inference.presence_limits`).
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneel.landmarks import CENTRE_LANDMARK, NUM_LANDMARKS

__all__ = [
    "ShapeFit",
    "mean_knee_shape",
    "shape_fit",
    "published_shape_fits",
    "oof_residuals",
]

_ROI_SPACING_MM = 0.3
"""Pixel spacing of the published annotations' ROI frame."""


@dataclass(frozen=True)
class ShapeFit:
    """How well 16 points fit the mean knee: residual RMS (mm), size relative to the mean knee, rotation (degrees)."""

    residual_mm: float
    scale: float
    angle_deg: float

    def as_dict(self) -> dict[str, float]:
        return {"residual_mm": self.residual_mm, "scale": self.scale, "angle_deg": self.angle_deg}


@functools.lru_cache(maxsize=1)
def _published_shapes() -> np.ndarray:
    """(748, 16, 2) published knees in mm, right-knee orientation (as stored), T4 at the origin."""
    from kneel.io.annotations import read_bf_landmarks
    from kneel.resources import bf_landmarks_csv

    shapes = []
    for ann in read_bf_landmarks(bf_landmarks_csv()):
        roi = np.asarray(ann.landmarks_roi, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
        shapes.append((roi - roi[CENTRE_LANDMARK]) * _ROI_SPACING_MM)
    return np.stack(shapes)


@functools.lru_cache(maxsize=1)
def mean_knee_shape() -> np.ndarray:
    """(16, 2) mean of the published knees in mm (right-knee orientation, centred on its centroid)."""
    shapes = _published_shapes()
    mean = shapes.mean(axis=0)
    return mean - mean.mean(axis=0)


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares similarity ``target ~ s R source + t`` (no reflection): scale, angle (rad), fitted source."""
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    a, b = source - mu_s, target - mu_t
    var_s = float((a**2).sum())
    if var_s <= 0.0:
        return 0.0, 0.0, np.broadcast_to(mu_t, source.shape).copy()
    cov = b.T @ a
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign)) / var_s
    fitted = scale * a @ rot.T + mu_t
    return scale, float(np.arctan2(rot[1, 0], rot[0, 0])), fitted


def shape_fit(points_mm: np.ndarray, mirrored: bool = False) -> ShapeFit:
    """Fit the mean knee to 16 points in mm (``mirrored``: a left knee, flipped in x first).

    The mean knee is scaled, rotated and moved onto the points; the residual is measured in the points' own mm, so a
    shrunken cloud of points (what a network gives when it sees no knee) has a small residual but a small ``scale``.
    Non-finite points give an infinite residual.
    """
    pts = np.asarray(points_mm, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
    if not np.all(np.isfinite(pts)):
        return ShapeFit(float("inf"), 0.0, 0.0)
    if mirrored:
        pts = pts * np.array([-1.0, 1.0])
    scale, angle, fitted = _similarity(mean_knee_shape(), pts)
    residual = float(np.sqrt(((fitted - pts) ** 2).sum(axis=1).mean()))
    return ShapeFit(residual, scale, float(np.degrees(angle)))


@functools.lru_cache(maxsize=1)
def published_shape_fits() -> tuple[ShapeFit, ...]:
    """:func:`shape_fit` of every published knee: how far real knees are from the mean (the reference for limits)."""
    return tuple(shape_fit(s) for s in _published_shapes())


def oof_residuals(hc_dir: str | os.PathLike[str]) -> np.ndarray:
    """Residuals (mm) of :func:`shape_fit` on the out-of-fold predictions that ``kneel train`` wrote for a high-cost
    stage (``hc/oof_predictions.csv``, else ``hc/fold_*/oof_predictions.csv``; ROI frame in mm, left knees mirrored).
    Empty when there are none (converted snapshots, models trained elsewhere)."""
    root = Path(hc_dir)
    files = [root / "oof_predictions.csv"] if (root / "oof_predictions.csv").is_file() else []
    files = files or sorted(root.glob("fold_*/oof_predictions.csv"))
    knees: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = {}
    for path in files:
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    key = (path.parent.name, row["file"], row["side"])
                    knees.setdefault(key, {})[int(row["landmark"])] = (float(row["x_mm"]), float(row["y_mm"]))
        except (OSError, KeyError, ValueError):
            continue
    out = [
        shape_fit(np.array([points[k] for k in range(NUM_LANDMARKS)])).residual_mm
        for points in knees.values()
        if len(points) == NUM_LANDMARKS
    ]
    return np.asarray(out, dtype=np.float64)
