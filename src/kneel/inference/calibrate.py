"""``kneel calibrate``: run a model on annotated radiographs it never saw and store its uncertainty calibration.

The films go through the whole pipeline (:func:`~kneel.inference.predict_files`, the same code as ``kneel predict``),
each predicted knee is paired with its ground truth (:func:`~kneel.evaluation.matching.match_predictions`), and the
raw signals of every landmark with its error in mm feed :func:`~kneel.inference.calibration.fit_calibration`. The
result is written to ``MODEL/calibration.json``, where :class:`~kneel.inference.Predictor` finds it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneel.inference.calibration import (
    DEFAULT_COVERAGE,
    DEFAULT_FLAG_RADIUS_MM,
    DEFAULT_REVIEW_FRACTION,
    SIGNALS,
    Calibration,
    CalibrationError,
    fit_calibration,
)
from kneel.landmarks import NUM_LANDMARKS, KneeSide

__all__ = ["CalibrationRun", "calibrate_model", "signals_by_knee"]


@dataclass
class CalibrationRun:
    """What :func:`calibrate_model` fitted and where it wrote it."""

    calibration: Calibration
    path: Path
    knees: int
    predictions: Path


def signals_by_knee(pred_dir: str | os.PathLike[str]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """``(file, side) -> {signal: (16,) mm}`` from the per-image results of a ``kneel predict`` folder."""
    from kneel.inference.outputs import OutputFolder

    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for prediction in OutputFolder(pred_dir).iter_results():
        for knee in prediction:
            out[(prediction.file, knee.side.value)] = {
                k: np.asarray(v, dtype=np.float64) for k, v in knee.signals.items()
            }
    return out


def calibrate_model(
    model_dir: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    ground_truth: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    coverage: float = DEFAULT_COVERAGE,
    flag_radius_mm: float = DEFAULT_FLAG_RADIUS_MM,
    flag_probability: float | None = None,
    review_fraction: float = DEFAULT_REVIEW_FRACTION,
    spacing: float | Sequence[float] | None = None,
    workers: int | None = 0,
    progress: bool = True,
    write: bool = True,
    flip_tta: bool = False,
) -> CalibrationRun:
    """Predict ``images`` with ``model_dir``, compare with ``ground_truth`` and store the fitted calibration.

    Args:
        model_dir: the model folder (``MODEL/{lc,hc}``) or a fetched model's name (``kneel-2019``);
            ``calibration.json`` is written there.
        images: radiographs (files, folders, globs) with ground truth, none of them used in training.
        ground_truth: landmark table ``file,side,landmark,x_px,y_px`` (or VIA / bf_landmarks, as ``kneel evaluate``).
        out: folder for the predictions (default ``MODEL/calibration_predictions``); resumable.
        coverage: stated coverage of the radius.
        flag_radius_mm: the distance (mm) at which a landmark counts as far off for the knee flag.
        flag_probability: knees whose probability of a far-off landmark exceeds this are ``"uncertain"`` (default
            ``1 - coverage``).
        review_fraction: also flag the knees whose largest radius exceeds that of this share of the calibration
            knees (the least certain); 0: off.
        spacing: pixel spacing for images without one (PNG).
        workers: DataLoader workers of the prediction run.
        progress: progress bars.
        write: write ``calibration.json`` (False: only return it).
        flip_tta: predict with mirror test-time augmentation and calibrate with its ``flip`` signal too; predictions
            with this calibration then always use it (``kneel predict`` turns it on).
    """
    from kneel.evaluation.matching import match_predictions, read_ground_truth, read_table
    from kneel.hub import resolve_model
    from kneel.inference.engine import predict_files

    model_dir = resolve_model(model_dir)  # a path, or a fetched model's name (kneel-2019)
    pred_dir = Path(out) if out is not None else model_dir / "calibration_predictions"
    predict_files(
        list(images), model_dir, pred_dir, workers=workers, progress=progress, spacing=spacing, flip_tta=flip_tta
    )
    table = pred_dir / "landmarks.csv"
    if not table.is_file():
        raise CalibrationError("the calibration run predicted no knee", pred_dir)
    pred = read_table(table)
    gt = read_ground_truth(ground_truth)
    matched = match_predictions(pred, gt, name="calibration")
    signals = signals_by_knee(pred_dir)
    rows, errors = [], []
    for i, (file, side) in enumerate(zip(matched.files, matched.sides, strict=True)):
        knee = signals.get((file, KneeSide.parse(side).value))
        if knee is None or not np.all(np.isfinite(matched.errors[i])):
            continue
        rows.append(knee)
        errors.append(matched.errors[i])
    if not rows:
        raise CalibrationError("no predicted knee matches the ground truth (file names or sides differ?)", table)
    names = [s for s in SIGNALS if all(s in r for r in rows)]
    stacked = {s: np.stack([r[s] for r in rows]).reshape(-1, NUM_LANDMARKS) for s in names}
    calibration = fit_calibration(
        stacked,
        np.stack(errors),
        coverage=coverage,
        flag_radius_mm=flag_radius_mm,
        flag_probability=flag_probability,
        review_fraction=review_fraction,
    )
    calibration.diagnostics["source"] = {
        "images": [str(p) for p in images],
        "ground_truth": str(ground_truth),
        "predictions": str(pred_dir),
    }
    path = calibration.save(model_dir) if write else model_dir / "calibration.json"
    return CalibrationRun(calibration, path, len(rows), pred_dir)
