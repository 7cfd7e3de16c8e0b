"""Measurements researchers take from the 16 landmarks, with uncertainties, and their agreement with a reference.

* ``measure(source)``: one row per knee (widths, joint-space widths, angles; mm and degrees), from a landmark table or
  a ``kneel predict --out`` folder; ``write_measurements`` writes the CSV and JSON of ``kneel measure``.
* ``kneel.measure.definitions``: the exact definitions (docs/measurements.md shows each on a knee).
* ``kneel.measure.uncertainty``: landmark radii -> measurement half-widths (Monte Carlo, fixed seed).
* ``kneel.measure.agreement``: measured vs reference tables: bias, mean absolute difference, Bland-Altman.
* ``kneel.measure.crop``: standard knee ROIs for graders (``kneel crop``).
"""

from __future__ import annotations

from kneel.measure.agreement import agreement, agreement_markdown, plot_bland_altman, write_agreement
from kneel.measure.definitions import MEASUREMENT_NAMES, MEASUREMENTS, measure_canonical, measure_knees
from kneel.measure.knees import KneeSet, MeasureInputError, load_knees
from kneel.measure.run import measure, measure_knee_set, measure_prediction, write_measurements

__all__ = [
    "MEASUREMENTS",
    "MEASUREMENT_NAMES",
    "KneeSet",
    "MeasureInputError",
    "load_knees",
    "measure",
    "measure_knee_set",
    "measure_knees",
    "measure_canonical",
    "measure_prediction",
    "write_measurements",
    "agreement",
    "agreement_markdown",
    "plot_bland_altman",
    "write_agreement",
]
