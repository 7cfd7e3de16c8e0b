"""Synthetic bilateral PA knee radiographs with exact landmark ground truth, built on the 748 real KNEEL shapes.

``generate_cohort(out, n, seed, layout, single_knee_fraction, compression, split, workers)`` writes DICOM films,
``ground_truth.csv`` (the landmark table, original pixels), ``annotations.csv`` (the reference's
``bf_landmarks_1_0.3.csv`` format) and, for the OAI layout, ``contents.csv``. Modules, one job each:

* ``shapes``: the real shapes, the fixed subject split, small smooth deformations;
* ``placement``: spacing, film size, knee centres and rotations, snapping landmarks to the exact grid;
* ``anatomy``: bones and soft tissue of one knee, built around its landmarks;
* ``acquisition``: exposure, heel effect, noise, detector response, collimation, markers, storage;
* ``film``: plan and render one film;
* ``cohort``: the writer (DICOM files, tables, folder layouts, worker processes).
"""

from __future__ import annotations

from kneel.synth.cohort import CohortSummary, SynthError, generate_cohort
from kneel.synth.film import FilmPlan, plan_film, render_film
from kneel.synth.shapes import is_held_out, source_pool

__all__ = [
    "generate_cohort",
    "CohortSummary",
    "SynthError",
    "FilmPlan",
    "plan_film",
    "render_film",
    "is_held_out",
    "source_pool",
]
