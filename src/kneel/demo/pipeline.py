"""The demo's steps, each one call into the part of kneel that does the work (no shortcuts, no fake numbers).

synthetic cohorts (:func:`kneel.synth.generate_cohort`) -> training data (:func:`kneel.data.prepare.prepare_datasets`)
-> tiny low-cost and high-cost models, cross-validated, LC -> HC transfer (:func:`kneel.training.train`)
-> landmarks on held-out films, exact and reference geometry with the same weights
(:func:`kneel.inference.predict_files`) -> evaluation (:func:`kneel.evaluation.evaluate`,
:func:`kneel.evaluation.evaluate_cv`) -> ``report.html`` and ``summary.md`` (:mod:`kneel.demo.summary`).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.landmarks import CENTRE_LANDMARK, NUM_LANDMARKS

__all__ = [
    "DemoSettings",
    "DemoError",
    "DemoPaths",
    "require",
    "find_config",
    "no_learning_baseline",
    "drop_films",
    "films_missing",
]


class DemoError(KneelError):
    """A demo step cannot run (a part of kneel is missing, or a step produced nothing usable)."""


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's numbers (recorded in each step's stamp).

    Defaults take about 20 minutes on a 2-core CPU (8.6 with one high-cost network per fold, `hc_members=1`); raise
    the sizes and epochs for better models.
    """

    train_images: int = 400
    test_images: int = 12
    calibration_images: int = 40
    seed: int = 0
    folds: int = 2
    hc_members: int = 3
    """high-cost networks per fold, each from its own seed (training config ``members``): their spread ranks the
    errors (measured on 383 held-out knees: knee-level rank correlation of the calibrated radius 0.52 with one
    network per fold, 0.62 with three), at three times the high-cost training and prediction time."""
    lc_epochs: int = 6
    hc_epochs: int = 16
    lc_config: str = "tiny_lc.yaml"
    hc_config: str = "tiny_hc.yaml"
    workers: int = 2
    threads: int = 0
    """torch threads (0: all CPU cores)."""
    fold_processes: int = 2
    """folds trained at the same time, each in its own process (the CPU's threads divided among them)."""
    lc_val_from: int = 5
    hc_val_from: int = 11
    """validation from this epoch on (besides the first and the last): the kept epochs come late with the cosine
    schedule (measured: LC epoch 6 of 6, HC 15-16 of 16), and skipping earlier validations saves ~1 minute."""
    keep_films: bool = False
    """keep the training and calibration cohorts' DICOM films after their last use (~6 GiB at the defaults)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEMO_PRESETS: dict[str, DemoSettings] = {
    "tiny": DemoSettings(),
    # The small preset pair (width 16, 192 px) through the same pipeline: issue 11's sub-millimetre model, trained on
    # the 2-core CPU well within 2 hours (docs/training.md, "Accuracy versus training time", row small-30ep).
    # One network per fold: a second member (seed 43) made its spread rank errors better alone (0.46 -> 0.49) but
    # not the calibrated radius (0.498 -> 0.500 on 383 held-out knees), at twice the 30-minute training.
    "small": DemoSettings(
        lc_config="small_lc.yaml", hc_config="small_hc.yaml", hc_epochs=30, hc_val_from=23, hc_members=1
    ),
}
"""Named demo settings: ``kneel demo --preset NAME`` (any option given beside it still wins)."""


@dataclass(frozen=True)
class DemoPaths:
    """Where each step writes under the demo's output folder."""

    out: Path

    @property
    def train_cohort(self) -> Path:
        return self.out / "cohorts" / "train"

    @property
    def test_cohort(self) -> Path:
        return self.out / "cohorts" / "test"

    @property
    def calibration_cohort(self) -> Path:
        return self.out / "cohorts" / "calibration"

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def model(self) -> Path:
        return self.out / "model"

    def predictions(self, geometry: str) -> Path:
        return self.out / "predictions" / geometry

    @property
    def evaluation(self) -> Path:
        return self.out / "evaluation" / "test"

    @property
    def evaluation_cv(self) -> Path:
        return self.out / "evaluation" / "cv"

    @property
    def baseline(self) -> Path:
        return self.out / "predictions" / "no_learning_baseline.csv"


def require(module: str, step: str) -> Any:
    """Import a part of kneel the demo needs, or stop with an error naming the step and the missing module."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DemoError(f"step '{step}' needs {module}, which is not available: {exc}") from exc


def find_config(name: str) -> Path:
    """A training config by file name: as given, ``./configs/``, or the configs shipped with kneel."""
    from kneel.resources import configs_dir, packaged_config

    for candidate in (Path(name), Path.cwd() / "configs" / name):
        if candidate.is_file():
            return candidate
    packaged = packaged_config(name)
    if packaged is not None:
        return packaged
    raise DemoError(f"training config {name} not found (looked in ., ./configs and {configs_dir()})")


def _films(cohort: Path) -> pd.DataFrame:
    path = cohort / "films.csv"
    if not path.is_file():
        raise DemoError("the synthetic cohort has no films.csv", path)
    return pd.read_csv(path, dtype={"file": str})


def _film_names(cohort: Path) -> list[str]:
    """The films ``cohort/films.csv`` lists (none for an empty cohort, whose table has no header either)."""
    try:
        return [str(name) for name in _films(cohort)["file"]]
    except pd.errors.EmptyDataError:
        return []


def films_missing(cohort: Path) -> bool:
    """Whether any film that ``cohort/films.csv`` lists is absent (e.g. removed by :func:`drop_films`)."""
    return any(not (cohort / name).is_file() for name in _film_names(cohort))


def drop_films(cohort: Path) -> int:
    """Delete the DICOM films a synthetic cohort lists, keeping its tables; returns the bytes freed.

    The films of a cohort are large (10-20 MB each, uncompressed) and, once prepared or predicted, no later demo step
    reads them; they are a pure function of the cohort's seed, so a step that needs them again re-renders them.
    """
    freed = 0
    for name in _film_names(cohort):
        film = cohort / name
        if film.is_file() and film.resolve().is_relative_to(cohort.resolve()):
            freed += film.stat().st_size
            film.unlink()
    return freed


def no_learning_baseline(train_cohort: Path, test_cohort: Path, out_csv: Path) -> Path:
    """What a model that learned nothing from the images would answer: the mean training shape at each half's centre.

    The mean landmark layout (mm, relative to tibial landmark 4, right-knee orientation) is taken from the training
    cohort's ground truth; on each held-out film it is placed at the centre of the image half that holds the knee
    (right knee: image left). Its errors are the level the trained models must beat.
    """
    gt = pd.read_csv(train_cohort / "ground_truth.csv", dtype={"file": str})
    films = _films(train_cohort).set_index("file")
    offsets = []
    for (file, side), g in gt.groupby(["file", "side"]):
        g = g.sort_values("landmark")
        if len(g) != NUM_LANDMARKS:
            continue
        xy = g[["x_px", "y_px"]].to_numpy(dtype=np.float64)
        row_mm, col_mm = films.loc[file, ["spacing_row_mm", "spacing_col_mm"]].to_numpy(dtype=np.float64)
        d = (xy - xy[CENTRE_LANDMARK]) * [col_mm, row_mm]
        if side == "L":
            d[:, 0] = -d[:, 0]
        offsets.append(d)
    if not offsets:
        raise DemoError("no complete knee in the training ground truth", train_cohort / "ground_truth.csv")
    mean_shape = np.mean(offsets, axis=0)
    rows = []
    for film in _films(test_cohort).itertuples(index=False):
        for side in ("R", "L"):
            cx = film.columns * (0.25 if side == "R" else 0.75)
            cy = film.rows * 0.5
            d = mean_shape.copy()
            if side == "L":
                d[:, 0] = -d[:, 0]
            xy = np.array([cx, cy]) + d / [film.spacing_col_mm, film.spacing_row_mm]
            for k, (x, y) in enumerate(xy):
                rows.append(
                    {
                        "file": film.file,
                        "side": side,
                        "landmark": k,
                        "x_px": x,
                        "y_px": y,
                        "x_mm": x * film.spacing_col_mm,
                        "y_mm": y * film.spacing_row_mm,
                    }
                )
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    from kneel.io.atomic import atomic_write_text

    atomic_write_text(out_csv, pd.DataFrame(rows).to_csv(index=False, float_format="%.6f"))
    return out_csv


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: every core); returns the number set."""
    import torch

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
