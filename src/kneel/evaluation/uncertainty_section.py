"""The uncertainty section of ``kneel evaluate``: is ``uncertainty_mm`` a radius that holds, and does the flag catch
the knees that are far off?

A prediction set gets the section when its table carries ``uncertainty_mm`` and ``quality`` columns (every table
``kneel predict`` writes); other sets (a baseline, another tool's table) simply have none. The figures are those of
:func:`kneel.evaluation.uncertainty.uncertainty_report`; the observed coverage is judged against the **stated
coverage**, found, first that applies:

1. ``coverage=`` (``--coverage``), for every set;
2. a ``uncertainty_coverage`` column of the table;
3. the ``results/*.json`` of the ``kneel predict`` folder the table sits in (each knee records its
   ``uncertainty_coverage``; ``None`` there: the model had no ``calibration.json`` and ``uncertainty_mm`` is the
   uncalibrated fold spread);
4. ``calibration=`` (``--calibration``, a model folder or its ``calibration.json``), which also gives the multipliers
   at other coverages, so the calibration plot draws the whole stated-vs-observed curve instead of one point.

Written: ``uncertainty.{csv,md,tex}`` (one row per set) and ``calibration_<set>.png`` (the calibration plot).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import EvaluationInputError, MatchedKnees
from kneel.evaluation.uncertainty import OUTLIER_MM, UncertaintyReport, plot_calibration, uncertainty_report

__all__ = [
    "UNCERTAINTY_COLUMNS",
    "StatedCoverage",
    "UncertaintySet",
    "has_uncertainty",
    "stated_coverage",
    "uncertainty_sets",
    "uncertainty_table",
    "format_uncertainty",
    "uncertainty_definition",
]

UNCERTAINTY_COLUMNS: tuple[str, ...] = ("uncertainty_mm", "quality")
"""A prediction table with both columns gets an uncertainty section."""


@dataclass
class StatedCoverage:
    """What a prediction set's ``uncertainty_mm`` promises: its stated coverage (None: not a calibrated radius or
    unknown), where that came from, the flag radius and the calibration's multipliers per level (may be empty)."""

    value: float | None
    source: str
    flag_radius_mm: float | None = None
    levels: dict[str, float] = field(default_factory=dict)


@dataclass
class UncertaintySet:
    """One prediction set's uncertainty figures and its calibration plot."""

    name: str
    report: UncertaintyReport
    stated: StatedCoverage
    plot: Path
    rows: int = 0
    """Landmark rows of the prediction table."""
    missing_radii: int = 0
    """Rows whose ``uncertainty_mm`` is empty or not a number (their knee is left out of the figures)."""

    def warning(self) -> str | None:
        """A line for the report's warnings when radii are missing, else None."""
        if not self.missing_radii:
            return None
        return (
            f"{self.name}: uncertainty_mm is empty for {self.missing_radii} of {self.rows} predicted landmarks; their "
            "knees are left out of the uncertainty figures."
        )


def has_uncertainty(pred: pd.DataFrame) -> bool:
    """Whether a prediction table carries the uncertainty columns (radii may be empty: the section says so)."""
    return set(UNCERTAINTY_COLUMNS) <= set(pred.columns)


def _number(value: object, high: float = math.inf) -> float | None:
    """``value`` as a float in (0, high), else None."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and 0.0 < v < high else None


def _from_results(folder: Path) -> StatedCoverage | None:
    """The stated coverage recorded in a ``kneel predict`` folder's results (the first result holding a knee: one
    run's settings, hence its calibration, are the same for every file; run.json enforces it)."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        knees = data.get("knees") if isinstance(data, dict) else None
        if not isinstance(knees, dict) or not knees:
            continue
        knee = next(iter(knees.values()))
        value = _number(knee.get("uncertainty_coverage"), 1.0)
        source = f"{folder.name}/{path.name}"
        if value is None:
            return StatedCoverage(None, f"{source}: not calibrated (uncertainty_mm is the fold spread)")
        return StatedCoverage(value, source, _number(knee.get("flag_radius_mm")))
    return None


def _load_calibration(path: str | os.PathLike[str] | None):
    if path is None:
        return None
    from kneel.inference.calibration import Calibration, CalibrationError

    try:
        return Calibration.load(path)
    except CalibrationError as exc:
        raise EvaluationInputError(exc.reason, Path(path)) from None


def stated_coverage(
    table: str | os.PathLike[str] | None,
    pred: pd.DataFrame,
    coverage: float | None = None,
    calibration: str | os.PathLike[str] | None = None,
) -> StatedCoverage:
    """The stated coverage of a set's ``uncertainty_mm`` (module docstring for the order of the sources)."""
    cal = _load_calibration(calibration)
    levels = dict(cal.levels) if cal is not None else {}
    flag = cal.flag_radius_mm if cal is not None else None
    if coverage is not None:
        value = _number(coverage, 1.0)
        if value is None:
            raise EvaluationInputError(f"coverage must be a number between 0 and 1, got {coverage!r}")
        return StatedCoverage(value, "given", flag, levels)
    if "uncertainty_coverage" in pred.columns:
        values = {v for v in (_number(c, 1.0) for c in pred["uncertainty_coverage"]) if v is not None}
        if len(values) == 1:
            return StatedCoverage(values.pop(), "table column uncertainty_coverage", flag, levels)
    found = _from_results(Path(table).parent / "results") if table is not None else None
    if found is not None:  # the predictions say what their radius is, whatever calibration is given
        return StatedCoverage(found.value, found.source, found.flag_radius_mm or flag, levels if found.value else {})
    if cal is not None:
        return StatedCoverage(cal.coverage, "calibration.json", flag, levels)
    return StatedCoverage(None, "unknown (no results/ folder next to the table; give --coverage)")


def uncertainty_sets(
    sets: Sequence[MatchedKnees],
    tables: Sequence[pd.DataFrame],
    paths: Sequence[str | os.PathLike[str] | None],
    out: Path,
    slugs: Sequence[str],
    *,
    coverage: float | None = None,
    calibration: str | os.PathLike[str] | None = None,
) -> list[UncertaintySet]:
    """The figures and the calibration plot (``out/calibration_<slug>.png``) of every set with uncertainty columns."""
    items = []
    for knees, pred, path, slug in zip(sets, tables, paths, slugs, strict=True):
        if not has_uncertainty(pred):
            continue
        radius = pd.to_numeric(pred["uncertainty_mm"], errors="coerce")
        pred = pred.assign(uncertainty_mm=radius)
        stated = stated_coverage(path, pred, coverage, calibration)
        report = uncertainty_report(knees, pred, stated.value)
        plot = plot_calibration(knees, pred, stated.levels, stated.value, out / f"calibration_{slug}.png", knees.name)
        missing = int((~np.isfinite(radius.to_numpy(dtype=np.float64))).sum())
        items.append(UncertaintySet(knees.name, report, stated, plot, len(pred), missing))
    return items


def uncertainty_table(items: Sequence[UncertaintySet]) -> pd.DataFrame:
    """One row per set: every figure as a number (``uncertainty.csv``), plus where the stated coverage came from."""
    rows = []
    for item in items:
        row = {"set": item.name, **item.report.as_dict()}
        row["outlier_mm"] = OUTLIER_MM
        row["flag_radius_mm"] = np.nan if item.stated.flag_radius_mm is None else item.stated.flag_radius_mm
        row["coverage_source"] = item.stated.source
        row["landmarks_without_radius"] = item.missing_radii
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.1f} %"


def _share(value: float, of: int, none: str) -> str:
    return none if of == 0 else f"{100 * value:.0f} % ({round(value * of)} of {of})"


def format_uncertainty(items: Sequence[UncertaintySet]) -> pd.DataFrame:
    """Display cells: one row per figure, one column per set."""
    labels = [
        "knees evaluated",
        "stated coverage of uncertainty_mm",
        "observed coverage (landmarks within the radius)",
        "median radius (mm)",
        "Spearman: knee mean radius vs knee mean error",
        "Spearman per landmark",
        f"knees far off (any landmark ≥ {OUTLIER_MM:g} mm)",
        "knees flagged uncertain",
        "recall: far-off knees flagged uncertain",
        f"precision: flagged knees ≥ {OUTLIER_MM:g} mm off",
        "p95 of the mean error of knees flagged ok (mm)",
        "predicted landmarks without a radius",
    ]
    out = pd.DataFrame({"figure": labels})
    for item in items:
        r = item.report
        out[item.name] = [
            str(r.knees),
            _pct(r.stated_coverage) if np.isfinite(r.stated_coverage) else "unknown",
            _pct(r.observed_coverage),
            "n/a" if not np.isfinite(r.median_radius_mm) else f"{r.median_radius_mm:.2f}",
            "n/a" if not np.isfinite(r.knee_rank_correlation) else f"{r.knee_rank_correlation:.2f}",
            "n/a" if not np.isfinite(r.landmark_rank_correlation) else f"{r.landmark_rank_correlation:.2f}",
            str(r.knees_far_off),
            str(r.flagged),
            _share(r.flag_recall, r.knees_far_off, "no knee far off"),
            _share(r.flag_precision, r.flagged, "no knee flagged"),
            "n/a" if not np.isfinite(r.ok_p95_mean_error_mm) else f"{r.ok_p95_mean_error_mm:.2f}",
            f"{item.missing_radii} of {item.rows}",
        ]
    return out


def uncertainty_definition(items: Sequence[UncertaintySet]) -> str:
    """What the figures mean and what each set's radius promises, in one paragraph."""
    promises = []
    for item in items:
        s = item.stated
        if s.value is None:
            promises.append(f"{item.name}: no stated coverage ({s.source}), so the observed coverage judges nothing")
        else:
            flag = (
                f"; flagged uncertain when the calibration gives more than 1 - coverage probability that a landmark "
                f"lies {s.flag_radius_mm:g} mm or more off (older calibrations: when any radius exceeds it)"
                if s.flag_radius_mm
                else ""
            )
            promises.append(f"{item.name}: radius at a stated {s.value:.0%} coverage (from {s.source}){flag}")
    return (
        "uncertainty_mm per landmark, quality per knee. Observed coverage: share of landmarks whose true position lies "
        "within uncertainty_mm of the prediction; a calibrated radius should give the stated coverage (within a few "
        f"points). Far off: a knee with any landmark ≥ {OUTLIER_MM:g} mm from the truth; recall: share of those "
        "flagged uncertain; precision: share of the flagged knees that are far off. Spearman: rank correlation of a "
        "knee's mean radius and its mean error. " + "; ".join(promises) + "."
    )
