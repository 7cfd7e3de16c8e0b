"""Landmark localisation metrics in millimetres: errors, recall at thresholds, bone groupings, outliers.

The definitions follow the reference's reports (KNEEL_REFERENCE.md section 6.2): recall at ``t`` mm is the fraction
of errors ``<= t``; a bone's error for one knee is the mean of its group's landmark errors (cross-validation style:
tibia = landmarks 0 and 8, femur = 9 and 15; test style: tibia 0, 4, 8, femur 9, 12, 15); a table cell is the
mean +- std over the two bones; "% out" is the share of knees with any landmark at or beyond 10 mm.
Missing values (NaN) are ignored everywhere rather than counted as hits or misses; callers report them separately.

Confidence intervals (:func:`bootstrap_ci`) resample *knees* with replacement (a knee's 16 landmarks are not
independent, so landmarks are never resampled alone): percentile bootstrap, ``BOOTSTRAP_RESAMPLES`` resamples from
``numpy.random.default_rng(BOOTSTRAP_SEED)``, resample ``b`` being ``rng.integers(0, N, size=N)`` drawn in order.
"""

from __future__ import annotations

import warnings
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
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CI_LEVEL",
    "bootstrap_indices",
    "bootstrap_ci",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5)
"""Recall thresholds of the paper's tables, in mm."""
OUTLIER_MM = 10.0
"""A knee with any landmark error at or above this many mm counts as an outlier ("% out")."""
BOOTSTRAP_RESAMPLES = 2000
"""Bootstrap resamples behind every confidence interval (Monte-Carlo error of a 95 % bound: about 0.1 std)."""
BOOTSTRAP_SEED = 0
"""Seed of the resampling: the same tables give the same intervals on every run."""
CI_LEVEL = 0.95
"""Coverage of the reported confidence intervals."""


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


def bootstrap_indices(num: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """Resampled knee indices, one block of at most 256 resamples at a time (shape ``(block, num)``).

    Resample ``b`` is ``rng.integers(0, num, size=num)`` with ``rng = numpy.random.default_rng(seed)``, drawn for
    ``b = 0, 1, ...`` in order, so a plain loop reproduces the intervals exactly.
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        block = min(256, resamples - done)
        yield np.stack([rng.integers(0, num, size=num) for _ in range(block)])
        done += block


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    errors_mm: np.ndarray,
    groups: Mapping[str, Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap confidence intervals of the mean landmark error and of the grouped recall.

    Knees (rows of the ``(N, 16)`` error array, NaN = not evaluated) are resampled with replacement. Each resample
    gives the statistics the tables report: the mean of all its finite landmark errors (``"mean_mm"``) and, for each
    threshold ``t``, the recall of :func:`grouped_recall` (mean over the bone groups of the share of knees whose bone
    error is ``<= t``; ``"recall_<t>mm"``, a fraction). The interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles over the resamples; NaN when there is nothing to resample.
    """
    err = np.asarray(errors_mm, dtype=np.float64)
    if err.ndim != 2:
        raise ValueError(f"expected errors of shape (knees, landmarks), got {err.shape}")
    keys = ["mean_mm"] + [f"recall_{float(t):g}mm" for t in thresholds]
    if err.shape[0] == 0 or np.all(np.isnan(err)):
        return {k: (float("nan"), float("nan")) for k in keys}
    finite = ~np.isnan(err)
    # Per-knee sums whose resampled totals give every statistic: error sum and count, then per bone its count of
    # knees with a finite bone error and, per threshold, of those within it.
    columns = [np.where(finite, err, 0.0).sum(axis=1), finite.sum(axis=1).astype(np.float64)]
    bones = list(group_errors(err, groups).values())
    for bone in bones:
        columns.append((~np.isnan(bone)).astype(np.float64))
    for t in thresholds:
        for bone in bones:
            columns.append((np.nan_to_num(bone, nan=np.inf) <= t).astype(np.float64))
    per_knee = np.stack(columns, axis=1)
    nb = len(bones)
    stats = []
    for idx in bootstrap_indices(err.shape[0], resamples, seed):
        totals = per_knee[idx].sum(axis=1)  # (block, columns)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any finite bone error: NaN
            mean = totals[:, 0] / totals[:, 1]
            valid = totals[:, 2 : 2 + nb]
            recalls = [
                np.nanmean(totals[:, 2 + nb * (j + 1) : 2 + nb * (j + 2)] / valid, axis=1)
                for j in range(len(thresholds))
            ]
        stats.append(np.stack([mean, *recalls], axis=1))
    values = np.concatenate(stats, axis=0)
    return {k: _interval(values[:, j], level) for j, k in enumerate(keys)}
