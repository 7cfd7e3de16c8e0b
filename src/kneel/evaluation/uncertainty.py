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

from kneel.evaluation.matching import MatchedKnees, _choose_file_key

__all__ = [
    "UncertaintyReport",
    "uncertainty_report",
    "aligned_columns",
    "knee_quality",
    "calibration_figure",
    "plot_calibration",
]

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
    """``pred[column]`` as a (knees, 16) array in the order of ``knees`` (``fill`` where absent).

    Files are paired as :func:`~kneel.evaluation.matching.match_predictions` pairs them (exact, base name or stem),
    so a table keyed ``/data/a.dcm`` lines up with ground truth keyed ``a.dcm``.
    """
    key = _choose_file_key(pred["file"].astype(str).unique().tolist(), sorted(set(map(str, knees.files))))
    lut = {
        (key(str(f)), str(s), int(k)): v
        for f, s, k, v in zip(pred["file"], pred["side"], pred["landmark"], pred[column], strict=True)
    }
    n = len(knees.files)
    out = np.full((n, knees.errors.shape[1]), fill, dtype=object if isinstance(fill, str) else np.float64)
    for i, (f, s) in enumerate(zip(knees.files, knees.sides, strict=True)):
        for k in range(out.shape[1]):
            value = lut.get((key(str(f)), str(s), k), fill)
            out[i, k] = fill if isinstance(fill, str) and not isinstance(value, str) else value
    return out


def knee_quality(knees: MatchedKnees, pred: pd.DataFrame) -> np.ndarray:
    """Each knee's ``quality`` (its first landmark row that has one; ``""`` for a knee without predictions)."""
    if "quality" not in pred:
        return np.full(len(knees.files), "", dtype=object)
    cells = aligned_columns(knees, pred, "quality", fill="")
    return np.array([next((c for c in row if c), "") for row in cells], dtype=object)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).correlation)


def _knee_arrays(knees: MatchedKnees, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(predicted, knee mean error, knee mean radius, knee max error) over the landmarks the ground truth holds.

    A knee counts as predicted when every landmark of its ground truth has a prediction and a finite radius.
    """
    err = knees.errors
    present = np.isfinite(knees.true[:, :, 0])
    complete = np.all(~present | (np.isfinite(err) & np.isfinite(radius)), axis=1) & present.any(axis=1)
    e = np.where(present, err, np.nan)[complete]
    r = np.where(present, radius, np.nan)[complete]
    if not complete.any():
        return complete, np.zeros(0), np.zeros(0), np.zeros(0)
    return complete, np.nanmean(e, axis=1), np.nanmean(r, axis=1), np.nanmax(e, axis=1)


def uncertainty_report(
    knees: MatchedKnees, pred: pd.DataFrame, stated_coverage: float | None, outlier_mm: float = OUTLIER_MM
) -> UncertaintyReport:
    """Coverage, ranking and flag figures of one prediction set (module docstring); ``stated_coverage`` None (not a
    calibrated radius, or unknown) gives NaN there."""
    radius = aligned_columns(knees, pred, "uncertainty_mm")
    err = knees.errors
    both = np.isfinite(radius) & np.isfinite(err)
    predicted, knee_err, knee_rad, knee_max = _knee_arrays(knees, radius)
    far = knee_max >= outlier_mm
    flagged = knee_quality(knees, pred)[predicted] == "uncertain"
    ok_err = knee_err[~flagged]
    return UncertaintyReport(
        knees=int(predicted.sum()),
        stated_coverage=float("nan") if stated_coverage is None else float(stated_coverage),
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


def _observed_curve(err: np.ndarray, radius: np.ndarray, levels: dict[str, float], stated: float | None):
    """(stated levels, observed coverage): every stored level when ``levels`` holds the stated one, else the stated
    coverage alone; empty when it is unknown."""
    ok = np.isfinite(radius) & np.isfinite(err)
    if stated is None or not np.isfinite(stated) or not ok.any():
        return [], []
    base = levels.get(f"{stated:g}") if levels else None
    if not base:
        return [float(stated)], [float(np.mean(err[ok] <= radius[ok]))]
    xs = sorted(float(k) for k in levels)
    return xs, [float(np.mean(err[ok] <= radius[ok] * levels[f"{x:g}"] / base)) for x in xs]


def calibration_figure(
    knees: MatchedKnees, pred: pd.DataFrame, levels: dict[str, float] | None, stated: float | None, title: str = ""
):
    """Stated vs observed coverage (radii rescaled to each stored level of ``levels``, the calibration's multipliers;
    without them the stated level alone) and knee radius vs knee error. ``stated`` None: not a calibrated radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radius = aligned_columns(knees, pred, "uncertainty_mm")
    xs, ys = _observed_curve(knees.errors, radius, levels or {}, stated)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    if xs:
        left.plot(xs, ys, "o-", color="#c0392b", label="observed")
    else:
        left.text(0.7, 0.65, "no stated coverage:\nnot a calibrated radius", ha="center", va="center", fontsize=9)
    left.plot([0.4, 1.0], [0.4, 1.0], "--", color="grey", label="perfect calibration")
    left.fill_between([0.4, 1.0], [0.35, 0.95], [0.45, 1.05], color="grey", alpha=0.15, label="±5 points")
    left.set_xlim(0.4, 1.0)
    left.set_ylim(0.3, 1.02)
    left.set_xlabel("stated coverage")
    left.set_ylabel("observed coverage (landmarks inside the radius)")
    left.set_title("Calibration of the uncertainty radius")
    left.legend(loc="lower right", fontsize=8)
    predicted, knee_err, knee_rad, _ = _knee_arrays(knees, radius)
    if knee_err.size:
        flagged = knee_quality(knees, pred)[predicted] == "uncertain"
        for mask, colour, label in ((~flagged, "#2c7fb8", "flagged ok"), (flagged, "#e67e22", "flagged uncertain")):
            if mask.any():
                right.scatter(knee_rad[mask], knee_err[mask], s=18, color=colour, label=f"{label} ({mask.sum()})")
        right.legend(loc="upper left", fontsize=8)
        top = max(float(max(np.max(knee_rad), np.max(knee_err))) * 1.1, 1e-3)
        right.plot([0, top], [0, top], ":", color="grey")
        right.set_xlim(0, top)
        right.set_ylim(0, top)
    at = f" at {stated:.0%}" if stated is not None and np.isfinite(stated) else ""
    right.set_xlabel(f"knee mean radius{at} (mm)")
    right.set_ylabel("knee mean error (mm)")
    right.set_title(f"Uncertainty vs error (Spearman {_spearman(knee_rad, knee_err):.2f})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_calibration(
    knees: MatchedKnees,
    pred: pd.DataFrame,
    levels: dict[str, float] | None,
    stated: float | None,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Write :func:`calibration_figure` as a PNG (atomic)."""
    import io

    import matplotlib.pyplot as plt

    from kneel.io.atomic import atomic_write_bytes

    fig = calibration_figure(knees, pred, levels, stated, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
