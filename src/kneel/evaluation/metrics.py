"""Landmark localisation metrics in millimetres: errors, recall at thresholds, bone groupings, outliers.

The definitions follow the reference's reports (KNEEL_REFERENCE.md section 6.2): recall at ``t`` mm is the fraction
of errors ``<= t``; a bone's error for one knee is the mean of its group's landmark errors (cross-validation style:
tibia = landmarks 0 and 8, femur = 9 and 15; test style: tibia 0, 4, 8, femur 9, 12, 15); a table cell is the
mean +- std over the two bones; "% out" is the share of knees with any landmark at or beyond 10 mm.
Missing values (NaN) are ignored everywhere rather than counted as hits or misses; callers report them separately.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "OUTLIER_MM",
    "landmark_errors_mm",
    "recall_at",
    "error_summary",
    "group_errors",
    "grouped_recall",
    "outlier_percent",
    "cumulative_curve",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5)
"""Recall thresholds of the paper's tables, in mm."""
OUTLIER_MM = 10.0
"""A knee with any landmark error at or above this many mm counts as an outlier ("% out")."""


def landmark_errors_mm(
    pred_xy: np.ndarray, true_xy: np.ndarray, spacing: float | Sequence[float] | np.ndarray
) -> np.ndarray:
    """Euclidean distance in mm between predicted and true points given in pixels.

    Args:
        pred_xy: points ``(..., 2)`` as (x, y) pixels; NaN for a missing prediction.
        true_xy: points of the same shape.
        spacing: pixel spacing as ``(row_mm, col_mm)``: a scalar (isotropic), a pair, or one value/pair per row of
            the leading axis (shape ``(N,)``, ``(N, 1)`` or ``(N, 2)`` for points of shape ``(N, ..., 2)``). A 1-D
            spacing of length 2 is always read as one ``(row_mm, col_mm)`` pair.

    Returns:
        Errors of shape ``pred_xy.shape[:-1]``; NaN where either point is NaN.
    """
    pred = np.asarray(pred_xy, dtype=np.float64)
    true = np.asarray(true_xy, dtype=np.float64)
    if pred.shape != true.shape or pred.shape[-1:] != (2,):
        raise ValueError(f"point arrays must have equal shapes (..., 2), got {pred.shape} and {true.shape}")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim == 0:
        row_mm = col_mm = sp
    elif sp.shape == (2,):
        row_mm, col_mm = sp[0], sp[1]
    else:
        if pred.ndim < 2 or sp.shape[0] != pred.shape[0]:
            raise ValueError(f"per-row spacing of shape {sp.shape} does not match points of shape {pred.shape}")
        if sp.ndim == 1 or sp.shape[1:] == (1,):
            sp = np.stack([sp.reshape(-1), sp.reshape(-1)], axis=-1)
        if sp.shape[1:] != (2,):
            raise ValueError(f"spacing must be (N,) or (N, 2), got {sp.shape}")
        extra = (1,) * (pred.ndim - 2)
        row_mm = sp[:, 0].reshape((-1, *extra))
        col_mm = sp[:, 1].reshape((-1, *extra))
    dx = (pred[..., 0] - true[..., 0]) * col_mm
    dy = (pred[..., 1] - true[..., 1]) * row_mm
    return np.hypot(dx, dy)


def recall_at(
    errors_mm: Iterable[float] | np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, float]:
    """Fraction of (non-NaN) errors ``<= t`` for each threshold ``t``; NaN for every threshold if none is finite."""
    err = np.asarray(list(errors_mm) if not isinstance(errors_mm, np.ndarray) else errors_mm, dtype=np.float64)
    err = err[~np.isnan(err)].ravel()
    if err.size == 0:
        return {float(t): float("nan") for t in thresholds}
    return {float(t): float(np.mean(err <= t)) for t in thresholds}


def error_summary(errors_mm: np.ndarray) -> dict[str, float]:
    """Mean, median, std (population), 95th percentile and count of the non-NaN errors."""
    err = np.asarray(errors_mm, dtype=np.float64).ravel()
    err = err[~np.isnan(err)]
    if err.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "std": nan, "p95": nan, "n": 0}
    return {
        "mean": float(err.mean()),
        "median": float(np.median(err)),
        "std": float(err.std()),
        "p95": float(np.percentile(err, 95)),
        "n": int(err.size),
    }


def group_errors(errors_mm: np.ndarray, groups: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Per-knee error of each bone group: the mean over the group's landmarks of an ``(N, 16)`` error array.

    A knee whose group contains a NaN gets NaN for that group (it is missing, not better).
    """
    err = np.asarray(errors_mm, dtype=np.float64)
    if err.ndim != 2:
        raise ValueError(f"expected errors of shape (knees, landmarks), got {err.shape}")
    return {name: err[:, list(idx)].mean(axis=1) for name, idx in groups.items()}


def grouped_recall(
    errors_mm: np.ndarray,
    groups: Mapping[str, Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[float, tuple[float, float]]:
    """The paper's table cell: recall at each threshold as (mean, std) over the bone groups (fractions, not %)."""
    per_group = {name: recall_at(values, thresholds) for name, values in group_errors(errors_mm, groups).items()}
    out: dict[float, tuple[float, float]] = {}
    for t in thresholds:
        values = np.array([rec[float(t)] for rec in per_group.values()], dtype=np.float64)
        if np.all(np.isnan(values)):
            out[float(t)] = (float("nan"), float("nan"))
        else:
            out[float(t)] = (float(np.nanmean(values)), float(np.nanstd(values)))
    return out


def outlier_percent(errors_mm: np.ndarray, limit_mm: float = OUTLIER_MM) -> float:
    """Percentage of knees (rows of ``(N, 16)``) with any landmark error ``>= limit_mm``; fully-NaN knees ignored."""
    err = np.asarray(errors_mm, dtype=np.float64)
    if err.ndim != 2:
        raise ValueError(f"expected errors of shape (knees, landmarks), got {err.shape}")
    present = ~np.all(np.isnan(err), axis=1)
    if not present.any():
        return float("nan")
    hit = np.any(np.nan_to_num(err[present], nan=-np.inf) >= limit_mm, axis=1)
    return float(100.0 * hit.mean())


def cumulative_curve(errors_mm: np.ndarray, max_mm: float = 10.0, num: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds ``0..max_mm`` and the fraction of non-NaN errors at or below each."""
    err = np.asarray(errors_mm, dtype=np.float64).ravel()
    err = np.sort(err[~np.isnan(err)])
    grid = np.linspace(0.0, max_mm, num)
    if err.size == 0:
        return grid, np.full_like(grid, np.nan)
    return grid, np.searchsorted(err, grid, side="right") / err.size
