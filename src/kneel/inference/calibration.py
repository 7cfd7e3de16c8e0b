"""Calibrated landmark uncertainty: a radius in mm that holds the true landmark with a stated probability.

The pipeline measures five raw signals per landmark, all in mm (:data:`SIGNALS`): the spread of the fold models'
predictions (``spread``), the radius of the soft-argmax heatmap about its mean (``heatmap``), how far the landmark moved
between the first high-cost pass and the refined one (``refine_shift``), the distance between the predictions of the ROI
and of its mirror image (``flip``), and the knee's residual from the mean published knee shape (``shape``, one value for
the knee's 16 landmarks; the best single ranker of knees in docs/inference.md). None of them is a probability.

Calibration turns them into one: on knees with known landmarks that the models never saw (a held-out annotated set run
through the whole pipeline, :func:`fit_calibration`), a log-linear *difficulty model* predicts each landmark's typical
error from the log of the signals (plus one offset per landmark), fitted by least squares on all the knees; the ratio
``error / predicted error`` of every knee is taken out of fold (cross-fitting: the knees are dealt into ``folds``
groups, and each group's ratios come from a difficulty model fitted on the other groups), and the conformal quantile of
all the ratios at the stated coverage becomes the multiplier (cross-conformal calibration with a normalised score,
pooled over landmarks). The radius of a new landmark is ``multiplier x predicted error``: if the new knee is
exchangeable with the calibration knees, the true landmark lies inside the radius about ``coverage`` of the time (over
landmarks and knees), and the radius is large where the signals say the prediction is hard. Every knee serves both the
difficulty model and the quantile, which matters with the few dozen knees users have: fitted on one random half instead
(split conformal: calibrations written before cross-fitting, ``cross_folds`` 0), the model's ranking of knees depended
on which half it got (docs/inference.md).

Knee quality is about the whole knee, not one landmark at a time: the calibration knees' out-of-fold ratio vectors (16
ratios each, ``knee_ratios``) are kept, and a new knee's ``far_probability``, the chance that *any* of its landmarks
lies ``flag_radius_mm`` (5 mm by default: at that size a landmark is of little use for measurements) or more from the
truth, is estimated as the share of those vectors that would put one of its landmarks that far, given its predicted
errors (``(1 + count) / (n + 1)``, on the safe side; the landmarks of a knee err together, and whole vectors keep that).
Far-off landmarks are rare and, with models that err little, hard to foresee, so this probability rarely gets large; the
flag therefore also marks the knees to review first: a knee is ``"uncertain"`` when its largest radius exceeds
``review_radius_mm`` (the radius that the least certain ``review_fraction`` of the calibration knees exceed, 20 % by
default) or its ``far_probability`` exceeds ``flag_probability`` (``1 - coverage`` unless set). Calibrations written
before ``knee_ratios`` existed flag a knee when any per-landmark radius exceeds ``flag_radius_mm``.

The calibration is stored with the model (``MODEL/calibration.json``); :class:`~kneel.inference.Predictor` applies it
when present.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kneel.errors import KneelError
from kneel.io.atomic import atomic_write_text
from kneel.landmarks import NUM_LANDMARKS

__all__ = [
    "SIGNALS",
    "CALIBRATION_FILE",
    "DEFAULT_COVERAGE",
    "DEFAULT_CROSS_FOLDS",
    "DEFAULT_FLAG_RADIUS_MM",
    "DEFAULT_REVIEW_FRACTION",
    "PLOT_LEVELS",
    "Calibration",
    "CalibrationError",
    "fit_calibration",
    "knee_quality",
    "signal_rank_correlations",
]

SIGNALS: tuple[str, ...] = ("spread", "heatmap", "refine_shift", "flip", "shape")
"""Raw per-landmark signals in mm, in the order of the difficulty model's weights."""
CALIBRATION_FILE = "calibration.json"
DEFAULT_COVERAGE = 0.9
DEFAULT_FLAG_RADIUS_MM = 5.0
DEFAULT_REVIEW_FRACTION = 0.2
DEFAULT_CROSS_FOLDS = 5
PLOT_LEVELS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_FLOOR_MM = 0.05
"""Signals and errors below this (mm) are treated as this before taking logs (sub-pixel noise)."""
_RIDGE = 1e-3


class CalibrationError(KneelError):
    """Calibration cannot be fitted or read (too few knees, missing signals, a corrupt file)."""


@dataclass
class Calibration:
    """A fitted uncertainty calibration (module docstring); JSON round-trips through :meth:`save`/:meth:`load`."""

    coverage: float
    signals: list[str]
    weights: list[float]
    """Difficulty model: ``log(error) ~ intercept + offsets[k] + sum_j weights[j] * log(signal_j)``."""
    intercept: float
    offsets: list[float]
    multiplier: float
    """Conformal quantile of the out-of-fold ``error / predicted error`` (of the held-back half when ``cross_folds``
    is 0)."""
    flag_radius_mm: float = DEFAULT_FLAG_RADIUS_MM
    knee_ratios: list[list[float]] | None = None
    """Out-of-fold ``error / predicted error`` of each calibration knee's 16 landmarks: the joint distribution behind
    :meth:`far_probability` (``None`` in calibrations written before it existed)."""
    flag_probability: float | None = None
    """A knee is ``"uncertain"`` when its :meth:`far_probability` exceeds this (``None``: ``1 - coverage``)."""
    review_fraction: float | None = None
    """Share of the calibration knees whose largest radius exceeds :attr:`review_radius_mm` (the review budget)."""
    review_radius_mm: float | None = None
    """A knee whose largest radius exceeds this is ``"uncertain"`` (``None``: no review rule)."""
    levels: dict[str, float] = field(default_factory=dict)
    """Conformal multipliers at other coverages (``"0.5"`` ... ``"0.95"``), for calibration plots."""
    n_knees: int = 0
    n_fit: int = 0
    n_conformal: int = 0
    cross_folds: int = 0
    """Cross-fitting folds of the conformal ratios (module docstring); 0: split conformal on a held-back half."""
    diagnostics: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------------ apply
    def expected_error_mm(self, signals: Mapping[str, np.ndarray]) -> np.ndarray:
        """Typical error (mm) per landmark from the signals: arrays of shape (..., 16); NaN where a signal is NaN."""
        first = np.asarray(signals[self.signals[0]], dtype=np.float64)
        log_err = np.full(first.shape, self.intercept) + np.asarray(self.offsets)[..., :]
        for name, w in zip(self.signals, self.weights, strict=True):
            log_err = log_err + w * np.log(np.maximum(np.asarray(signals[name], dtype=np.float64), _FLOOR_MM))
        return np.exp(log_err)

    def radius_mm(self, signals: Mapping[str, np.ndarray]) -> np.ndarray:
        """The calibrated radius (mm) per landmark at :attr:`coverage`, shape of the signals."""
        return self.multiplier * self.expected_error_mm(signals)

    def radius_at(self, signals: Mapping[str, np.ndarray], coverage: float) -> np.ndarray:
        """The radius at another stored coverage level (:attr:`levels`), e.g. for a calibration plot."""
        key = f"{coverage:g}"
        if key not in self.levels:
            raise CalibrationError(f"no multiplier stored for coverage {key} (stored: {', '.join(self.levels)})")
        return self.levels[key] * self.expected_error_mm(signals)

    @property
    def flag_above(self) -> float:
        """The far probability above which a knee is ``"uncertain"``."""
        return 1.0 - self.coverage if self.flag_probability is None else float(self.flag_probability)

    def far_probability(self, signals: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Per knee (signals of shape (..., 16) -> (...)): the estimated probability that any of its landmarks lies
        ``flag_radius_mm`` or more from the truth; NaN where a signal is NaN; ``None`` without ``knee_ratios``."""
        if self.knee_ratios is None:
            return None
        expected = self.expected_error_mm(signals)  # (..., 16)
        ratios = np.asarray(self.knee_ratios, dtype=np.float64)  # (n, 16)
        far = np.any(expected[..., None, :] * ratios >= self.flag_radius_mm, axis=-1)  # (..., n)
        p = (1.0 + far.sum(axis=-1)) / (len(ratios) + 1.0)
        return np.where(np.all(np.isfinite(expected), axis=-1), p, np.nan)

    def quality(self, radius_mm: np.ndarray, far_probability: float | None = None) -> str:
        """``"ok"`` or ``"uncertain"`` for one knee from its (16,) radii and far probability (module docstring);
        without a far probability (older calibrations) from the radii against ``flag_radius_mm``; NaN is uncertain."""
        return knee_quality(radius_mm, self.flag_radius_mm, far_probability, self.flag_above, self.review_radius_mm)

    # ------------------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write ``calibration.json`` (``path`` is the file or the model folder); atomic."""
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read ``calibration.json`` (the file or its model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            calibration = cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise CalibrationError(f"unreadable uncertainty calibration: {exc}", path) from None
        calibration._check(path)
        return calibration

    @classmethod
    def find(cls, model_dir: str | Path) -> Calibration | None:
        """The calibration stored in a model folder, or ``None`` when it has none."""
        path = Path(model_dir) / CALIBRATION_FILE
        return cls.load(path) if path.is_file() else None

    def _check(self, path: Path | None = None) -> None:
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown or len(self.weights) != len(self.signals) or len(self.offsets) != NUM_LANDMARKS:
            raise CalibrationError(f"malformed uncertainty calibration (signals {self.signals})", path)
        if not (0.0 < self.coverage < 1.0 and math.isfinite(self.multiplier) and self.multiplier > 0):
            raise CalibrationError("malformed uncertainty calibration (coverage or multiplier)", path)
        if self.knee_ratios is not None:
            try:
                ratios = np.asarray(self.knee_ratios, dtype=np.float64)
            except (TypeError, ValueError):
                ratios = np.zeros((0,))
            if ratios.ndim != 2 or ratios.shape[1] != NUM_LANDMARKS or not np.all(ratios >= 0):
                raise CalibrationError("malformed uncertainty calibration (knee_ratios)", path)
        p = self.flag_probability
        if p is not None and not (isinstance(p, int | float) and 0.0 < p < 1.0):
            raise CalibrationError("malformed uncertainty calibration (flag_probability)", path)
        f, r = self.review_fraction, self.review_radius_mm
        if f is not None and not (isinstance(f, int | float) and 0.0 <= f < 1.0):
            raise CalibrationError("malformed uncertainty calibration (review_fraction)", path)
        if r is not None and not (isinstance(r, int | float) and r > 0):
            raise CalibrationError("malformed uncertainty calibration (review_radius_mm)", path)


def knee_quality(
    radius_mm: np.ndarray,
    flag_radius_mm: float,
    far_probability: float | None = None,
    flag_probability: float | None = None,
    review_radius_mm: float | None = None,
) -> str:
    """A calibrated knee's quality from its (16,) radii: ``"uncertain"`` when a radius or the far probability is not
    finite, the far probability exceeds ``flag_probability``, or the largest radius exceeds ``review_radius_mm``
    (when set); else ``"ok"``. Without a far probability or its threshold (calibrations written before them), the
    older rule: ``"uncertain"`` when any radius exceeds ``flag_radius_mm``."""
    r = np.asarray(radius_mm, dtype=np.float64)
    if far_probability is None or flag_probability is None:
        return "ok" if np.all(np.isfinite(r)) and float(np.max(r)) <= flag_radius_mm else "uncertain"
    p = float(far_probability)
    if not (np.all(np.isfinite(r)) and math.isfinite(p)) or p > flag_probability:
        return "uncertain"
    if review_radius_mm is not None and float(np.max(r)) > review_radius_mm:
        return "uncertain"
    return "ok"


# ---------------------------------------------------------------------------------------------------------- fitting
def _design(signals: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Rows (knee, landmark) -> [one-hot landmark (16), log signals]."""
    n = np.asarray(signals[names[0]]).shape[0]
    onehot = np.tile(np.eye(NUM_LANDMARKS), (n, 1))
    logs = [np.log(np.maximum(np.asarray(signals[s], dtype=np.float64).reshape(-1), _FLOOR_MM)) for s in names]
    return np.column_stack([onehot, *logs]) if logs else onehot


def _fit_difficulty(
    signals: Mapping[str, np.ndarray], errors: np.ndarray, names: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of log error on the log signals with one free offset per landmark: (16 offsets, weights).
    A small ridge on the signal weights only keeps collinear signals stable."""
    x = _design(signals, names)
    y = np.log(np.maximum(np.asarray(errors, dtype=np.float64).reshape(-1), _FLOOR_MM))
    penalty = np.diag([0.0] * NUM_LANDMARKS + [_RIDGE * len(y)] * len(names))
    beta = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    return beta[:NUM_LANDMARKS], beta[NUM_LANDMARKS:]


def _conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) coverage)``-th smallest score: the split-conformal threshold (inf if n is too small)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(s) + 1) * coverage)
    return float(s[rank - 1]) if rank <= len(s) else float("inf")


def signal_rank_correlations(signals: Mapping[str, np.ndarray], errors: np.ndarray) -> dict[str, dict[str, float]]:
    """Spearman correlation of each signal with the error, per landmark instance and per knee (mean over landmarks)."""
    from scipy.stats import spearmanr

    err = np.asarray(errors, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for name, values in signals.items():
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v) & np.isfinite(err)
        knees = np.all(np.isfinite(v), axis=1) & np.all(np.isfinite(err), axis=1)
        out[name] = {
            "landmark": float(spearmanr(v[ok], err[ok]).correlation) if ok.sum() > 2 else float("nan"),
            "knee": float(spearmanr(v[knees].mean(1), err[knees].mean(1)).correlation)
            if knees.sum() > 2
            else float("nan"),
        }
    return out


def fit_calibration(
    signals: Mapping[str, np.ndarray],
    errors: np.ndarray,
    *,
    coverage: float = DEFAULT_COVERAGE,
    use: tuple[str, ...] | None = None,
    flag_radius_mm: float = DEFAULT_FLAG_RADIUS_MM,
    flag_probability: float | None = None,
    review_fraction: float = DEFAULT_REVIEW_FRACTION,
    folds: int = DEFAULT_CROSS_FOLDS,
    seed: int = 0,
) -> Calibration:
    """Fit the difficulty model on all the knees and the conformal multiplier on their out-of-fold ratios.

    Args:
        signals: name -> (N knees, 16) raw signal in mm (:data:`SIGNALS`; missing or all-NaN ones are left out).
        errors: (N, 16) distance in mm between prediction and truth.
        coverage: stated probability that the truth lies inside the radius (0-1).
        use: the signals to use (default: every finite one given).
        flag_radius_mm: the distance (mm) that makes a landmark "far off" for the knee's flag.
        flag_probability: a knee whose probability of a far-off landmark exceeds this is ``"uncertain"`` (default
            ``1 - coverage``).
        review_fraction: share of the calibration knees (those with the largest radius) that the review rule flags;
            0 turns the rule off.
        folds: cross-fitting folds (by knee) for the out-of-fold ratios; at most the number of knees.
        seed: seed of the random deal of the knees into folds.
    """
    if not 0.0 < coverage < 1.0:
        raise CalibrationError(f"coverage must be between 0 and 1, not {coverage}")
    if flag_probability is not None and not 0.0 < flag_probability < 1.0:
        raise CalibrationError(f"flag_probability must be between 0 and 1, not {flag_probability}")
    if folds < 2:
        raise CalibrationError(f"folds must be at least 2, not {folds}")
    if not 0.0 <= review_fraction < 1.0:
        raise CalibrationError(f"review_fraction must be at least 0 and below 1, not {review_fraction}")
    err = np.asarray(errors, dtype=np.float64)
    if err.ndim != 2 or err.shape[1] != NUM_LANDMARKS:
        raise CalibrationError(f"errors must be (knees, {NUM_LANDMARKS}), got {err.shape}")
    names = [s for s in (use or SIGNALS) if s in signals and np.isfinite(np.asarray(signals[s])).any()]
    keep = np.all(np.isfinite(err), axis=1)
    for s in names:
        keep &= np.all(np.isfinite(np.asarray(signals[s], dtype=np.float64)), axis=1)
    err = err[keep]
    sig = {s: np.asarray(signals[s], dtype=np.float64)[keep] for s in names}
    n = len(err)
    need = math.ceil(1.0 / (1.0 - coverage))  # a finite conformal quantile needs n * 16 + 1 >= 1 / (1 - c)
    if n < 4 or n * NUM_LANDMARKS < need:
        raise CalibrationError(f"{n} usable knees are too few to calibrate (at least 4 needed)")

    offsets, weights = _fit_difficulty(sig, err, names)
    intercept = float(np.mean(offsets))
    folds = min(int(folds), n)
    calibration = Calibration(
        coverage=float(coverage),
        signals=list(names),
        weights=[float(w) for w in weights],
        intercept=intercept,
        offsets=[float(o - intercept) for o in offsets],
        multiplier=1.0,
        flag_radius_mm=float(flag_radius_mm),
        n_knees=int(n),
        n_fit=int(n),
        n_conformal=int(n),
        cross_folds=folds,
    )
    # Out-of-fold ratios: each knee's error over the typical error that a model fitted without its fold predicts.
    ratios = np.empty_like(err)
    groups = np.array_split(np.random.default_rng(seed).permutation(n), folds)
    for held in groups:
        train = np.setdiff1d(np.arange(n), held)
        o, w = _fit_difficulty({s: v[train] for s, v in sig.items()}, err[train], names)
        fold_model = dataclasses.replace(calibration, weights=list(w), intercept=0.0, offsets=list(o))
        ratios[held] = err[held] / fold_model.expected_error_mm({s: v[held] for s, v in sig.items()})
    calibration.multiplier = _conformal_quantile(ratios.reshape(-1), coverage)
    calibration.levels = {f"{c:g}": _conformal_quantile(ratios.reshape(-1), c) for c in PLOT_LEVELS}
    calibration.knee_ratios = [[float(r) for r in row] for row in ratios]
    calibration.flag_probability = None if flag_probability is None else float(flag_probability)
    radius = calibration.radius_mm(sig)
    calibration.review_fraction = float(review_fraction)
    if review_fraction > 0:  # the radius that the least certain review_fraction of the calibration knees exceed
        calibration.review_radius_mm = float(np.quantile(radius.max(axis=1), 1.0 - review_fraction))
    far = calibration.far_probability(sig)
    calibration.diagnostics = {
        "rank_correlation": signal_rank_correlations(sig, err),
        "calibrated_rank_correlation": signal_rank_correlations({"radius": radius}, err)["radius"],
        "coverage_out_of_fold": float(np.mean(ratios <= calibration.multiplier)),
        "review_radius_mm": calibration.review_radius_mm,
        "knees_flagged": float(
            np.mean([calibration.quality(r, p) == "uncertain" for r, p in zip(radius, far, strict=True)])
        ),
        "median_radius_mm": float(np.median(radius)),
        "mean_error_mm": float(np.mean(err)),
    }
    calibration._check()
    return calibration
