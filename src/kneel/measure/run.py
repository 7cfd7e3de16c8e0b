"""``kneel measure``: every knee of a landmark source -> one row of measurements with uncertainties; CSV and JSON.

The wide table has one row per knee: ``file, side``, the carried columns (``kl``, ``quality``), the spacing used
and its source, ``coverage`` (of the uncertainty half-widths), ``status`` (``ok`` or the reason a knee has no
measurements), then for each measurement of :data:`kneel.measure.definitions.MEASUREMENTS` its value and
``<name>_uncertainty`` (half-width at ``coverage``; empty when the source has no landmark uncertainty).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kneel.io.atomic import atomic_write_text
from kneel.measure.definitions import MEASUREMENT_NAMES, MEASUREMENTS, canonical_mm, measure_canonical
from kneel.measure.knees import KneeSet, load_knees, stated_coverage
from kneel.measure.uncertainty import DEFAULT_COVERAGE, DEFAULT_SAMPLES, DEFAULT_SEED, propagate

__all__ = [
    "measure",
    "measure_knee_set",
    "measure_prediction",
    "write_measurements",
    "uncertainty_column",
    "METHOD",
]

PathLike = str | os.PathLike[str]
METHOD = "monte-carlo"


def uncertainty_column(name: str) -> str:
    """Column holding the uncertainty half-width of measurement ``name``."""
    return f"{name}_uncertainty"


def measure_knee_set(
    knees: KneeSet,
    *,
    coverage: float | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """The wide measurement table of ``knees`` (see the module docstring).

    ``coverage`` overrides the coverage the source states for its ``uncertainty_mm`` radii; without either,
    :data:`~kneel.measure.uncertainty.DEFAULT_COVERAGE` is assumed.
    """
    n = len(knees)
    mirror = knees.right_view_mirror
    spacing = knees.spacing if n else np.zeros((0, 2))
    points = canonical_mm(knees.points_px, spacing, mirror) if n else np.zeros((0, 16, 2))
    values = measure_canonical(points) if n else {name: np.zeros(0) for name in MEASUREMENT_NAMES}
    cov = knees.coverage.copy() if coverage is None else np.full(n, float(coverage))
    cov = np.where(np.isfinite(cov), cov, DEFAULT_COVERAGE)
    has_radius = np.all(np.isfinite(knees.uncertainty_mm), axis=1) if n else np.zeros(0, bool)
    unc = propagate(points, knees.uncertainty_mm, cov, samples=samples, seed=seed, values=values) if n else {}

    status = []
    for i in range(n):
        if knees.errors[i]:
            status.append(knees.errors[i])
        elif not np.all(np.isfinite(knees.points_px[i])):
            missing = int(np.sum(~np.all(np.isfinite(knees.points_px[i]), axis=1)))
            status.append(f"{missing} landmark(s) missing")
        else:
            status.append("ok")
    table = pd.DataFrame({"file": knees.files, "side": knees.sides})
    for column in knees.extra.columns:
        table[column] = knees.extra[column].to_numpy()
    table["row_mm"] = spacing[:, 0]
    table["col_mm"] = spacing[:, 1]
    table["spacing_source"] = knees.spacing_source
    table["coverage"] = np.where(has_radius, cov, np.nan)
    table["status"] = status
    for name in MEASUREMENT_NAMES:
        table[name] = values[name]
        table[uncertainty_column(name)] = unc[name] if n else np.zeros(0)
    return table


def measure(
    source: PathLike,
    *,
    images: PathLike | None = None,
    spacing: float | Sequence[float] | None = None,
    coverage: float | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Measure every knee of a landmark table or a ``kneel predict --out`` folder (see :func:`load_knees`)."""
    return measure_knee_set(
        load_knees(source, images=images, spacing=spacing), coverage=coverage, samples=samples, seed=seed
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    fixed = [c for c in table.columns if c not in MEASUREMENT_NAMES and not c.endswith("_uncertainty")]
    out = []
    for row in table.to_dict(orient="records"):
        record = {c: _clean(row[c]) for c in fixed}
        record["measurements"] = {
            name: {"value": _clean(row[name]), "uncertainty": _clean(row[uncertainty_column(name)])}
            for name in MEASUREMENT_NAMES
        }
        out.append(record)
    return out


def describe(samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """What the numbers mean: units, definitions and the uncertainty method (written at the top of the JSON)."""
    return {
        "definitions": {m.name: {"unit": m.unit, "definition": m.definition} for m in MEASUREMENTS},
        "uncertainty": {
            "method": METHOD,
            "samples": int(samples),
            "seed": int(seed),
            "meaning": "half-width u: under the landmark error model (isotropic Gaussian per landmark, independent, "
            "radius uncertainty_mm at the stated coverage) the true value lies within +-u of the reported one with "
            "probability `coverage`",
        },
        "frame": "left knees are mirrored: medial and lateral keep their anatomical meaning on both sides",
        "docs": "docs/measurements.md",
    }


def write_measurements(
    table: pd.DataFrame, out: PathLike, *, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED
) -> list[Path]:
    """Write ``measurements.csv`` (the wide table, floats round-trip exact) and ``measurements.json``; atomic."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "measurements.csv", out / "measurements.json"
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    body = {**describe(samples, seed), "knees": _records(table)}
    atomic_write_text(json_path, json.dumps(body, indent=1, allow_nan=False) + "\n")
    return [csv_path, json_path]


def measure_prediction(prediction: Any, *, coverage: float | None = None, samples: int = DEFAULT_SAMPLES) -> dict:
    """Measurements of one :class:`~kneel.inference.results.RadiographPrediction`: side -> name -> ``{"value",
    "uncertainty"}`` (``None`` where undefined), for the HTTP service's ``/v1`` response. A film without knees gives
    ``{}``."""
    data = prediction.to_dict()
    knees = list(prediction)
    n = len(knees)
    if n == 0:
        return {}
    knee_dicts = data.get("knees") or {}
    stated = [stated_coverage(data, knee_dicts.get(k.side.value) or {}) for k in knees]
    knee_set = KneeSet(
        files=[str(data.get("file", ""))] * n,
        sides=[k.side.value for k in knees],
        points_px=np.asarray([k.landmarks_px for k in knees], dtype=np.float64).reshape(n, 16, 2),
        spacing=np.asarray([prediction.spacing] * n, dtype=np.float64).reshape(n, 2),
        spacing_source=[str(prediction.spacing_source)] * n,
        uncertainty_mm=np.asarray([k.uncertainty_mm for k in knees], dtype=np.float64).reshape(n, 16),
        coverage=np.asarray(stated, dtype=np.float64),
        paths=[data.get("path")] * n,
        errors=[None] * n,
    )
    table = measure_knee_set(knee_set, coverage=coverage, samples=samples)
    return {record["side"]: record["measurements"] for record in _records(table)}
