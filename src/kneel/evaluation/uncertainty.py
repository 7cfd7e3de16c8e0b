"""Does the uncertainty mean something? Coverage of the radius, ranking of errors and the quality flag's hits.

Inputs are a prediction table with ``uncertainty_mm`` (the calibrated radius per landmark, :mod:`kneel.inference.
calibration`) and ``quality`` columns, matched with the ground truth (:class:`~kneel.evaluation.matching.
MatchedKnees`). Measured:

* **coverage**: the share of landmarks whose true position lies within ``uncertainty_mm`` of the prediction (it should
  equal the stated coverage);
* **ranking**: Spearman's rank correlation between a knee's mean radius and its mean error;
* **the flag**: of the knees with any landmark at least ``outlier_mm`` (5 mm) off, the share flagged ``uncertain``
  (recall); of the knees flagged ``uncertain``, the share that are that far off (precision); and the 95th percentile
  of the mean error of the knees flagged ``ok``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import MatchedKnees

__all__ = ["UncertaintyReport", "uncertainty_report", "aligned_columns", "calibration_figure", "plot_calibration"]

OUTLIER_MM = 5.0


@dataclass
class UncertaintyReport:
    """Figures of :func:`uncertainty_report` (NaN where they cannot be computed)."""

    knees: int
    stated_coverage: float
    observed_coverage: float
    knee_rank_correlation: float
    landmark_rank_correlation: float
    knees_far_off: int
    flagged: int
    flag_recall: float
    flag_precision: float
    ok_p95_mean_error_mm: float
    median_radius_mm: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def aligned_columns(knees: MatchedKnees, pred: pd.DataFrame, column: str, fill: float | str = np.nan) -> np.ndarray:
    """``pred[column]`` as a (knees, 16) array in the order of ``knees`` (``fill`` where absent)."""
    lut = {
        (str(f), str(s), int(k)): v
        for f, s, k, v in zip(pred["file"], pred["side"], pred["landmark"], pred[column], strict=True)
    }
    n = len(knees.files)
    out = np.full((n, knees.errors.shape[1]), fill, dtype=object if isinstance(fill, str) else np.float64)
    for i, (f, s) in enumerate(zip(knees.files, knees.sides, strict=True)):
        for k in range(out.shape[1]):
            out[i, k] = lut.get((str(f), str(s), k), fill)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).correlation)


def uncertainty_report(
    knees: MatchedKnees, pred: pd.DataFrame, stated_coverage: float, outlier_mm: float = OUTLIER_MM
) -> UncertaintyReport:
    """Coverage, ranking and flag figures of one prediction set (module docstring)."""
    radius = aligned_columns(knees, pred, "uncertainty_mm")
    quality = aligned_columns(knees, pred, "quality", fill="")[:, 0] if "quality" in pred else np.array([])
    err = knees.errors
    both = np.isfinite(radius) & np.isfinite(err)
    predicted = np.all(np.isfinite(err), axis=1) & np.all(np.isfinite(radius), axis=1)
    knee_err, knee_rad = err[predicted].mean(axis=1), radius[predicted].mean(axis=1)
    far = np.max(err[predicted], axis=1) >= outlier_mm if predicted.any() else np.zeros(0, bool)
    flagged = (quality[predicted] == "uncertain") if len(quality) else np.zeros(predicted.sum(), bool)
    ok_err = knee_err[~flagged]
    return UncertaintyReport(
        knees=int(predicted.sum()),
        stated_coverage=float(stated_coverage),
        observed_coverage=float(np.mean(err[both] <= radius[both])) if both.any() else float("nan"),
        knee_rank_correlation=_spearman(knee_rad, knee_err),
        landmark_rank_correlation=_spearman(radius[both], err[both]),
        knees_far_off=int(far.sum()),
        flagged=int(flagged.sum()),
        flag_recall=float(np.mean(flagged[far])) if far.any() else float("nan"),
        flag_precision=float(np.mean(far[flagged])) if flagged.any() else float("nan"),
        ok_p95_mean_error_mm=float(np.percentile(ok_err, 95)) if ok_err.size else float("nan"),
        median_radius_mm=float(np.median(radius[both])) if both.any() else float("nan"),
    )


def calibration_figure(knees: MatchedKnees, pred: pd.DataFrame, levels: dict[str, float], stated: float):
    """Stated vs observed coverage (radii rescaled to each stored level) and knee radius vs knee error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radius = aligned_columns(knees, pred, "uncertainty_mm")
    err = knees.errors
    ok = np.isfinite(radius) & np.isfinite(err)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    base = levels.get(f"{stated:g}")
    if base and ok.any():
        xs = sorted(float(k) for k in levels)
        ys = [float(np.mean(err[ok] <= radius[ok] * levels[f"{x:g}"] / base)) for x in xs]
        left.plot(xs, ys, "o-", color="#c0392b", label="observed")
    left.plot([0.4, 1.0], [0.4, 1.0], "--", color="grey", label="perfect calibration")
    left.fill_between([0.4, 1.0], [0.35, 0.95], [0.45, 1.05], color="grey", alpha=0.15, label="±5 points")
    left.set_xlim(0.4, 1.0)
    left.set_ylim(0.3, 1.02)
    left.set_xlabel("stated coverage")
    left.set_ylabel("observed coverage (landmarks inside the radius)")
    left.set_title("Calibration of the uncertainty radius")
    left.legend(loc="lower right", fontsize=8)
    rows = np.all(ok, axis=1)
    if rows.any():
        right.scatter(radius[rows].mean(axis=1), err[rows].mean(axis=1), s=18, color="#2c7fb8")
        top = float(max(np.max(radius[rows].mean(axis=1)), np.max(err[rows].mean(axis=1)))) * 1.1
        right.plot([0, top], [0, top], ":", color="grey")
        right.set_xlim(0, top)
        right.set_ylim(0, top)
    right.set_xlabel(f"knee mean radius at {stated:.0%} (mm)")
    right.set_ylabel("knee mean error (mm)")
    right.set_title(f"Uncertainty vs error (Spearman {_spearman(radius[rows].mean(1), err[rows].mean(1)):.2f})")
    fig.tight_layout()
    return fig


def plot_calibration(
    knees: MatchedKnees, pred: pd.DataFrame, levels: dict[str, float], stated: float, path: str | os.PathLike[str]
) -> Path:
    """Write :func:`calibration_figure` as a PNG (atomic)."""
    import io

    import matplotlib.pyplot as plt

    from kneel.io.atomic import atomic_write_bytes

    fig = calibration_figure(knees, pred, levels, stated)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
