"""Knee shapes for the generator: the 748 real annotated knees, a subject split, and small smooth deformations.

Every synthetic knee starts from one real knee of the published KNEEL annotations (``bf_landmarks_1_0.3.csv``), so
landmark geometry and its variation with the KL grade (joint-space narrowing, flattening) are real. A sampled shape is
the real shape plus a small random similarity transform and a small move along the main modes of variation of its
KL grade (a per-grade PCA), so no two synthetic knees are identical while staying inside the real distribution.

Shapes are returned in the *knee frame*: millimetres, right-knee orientation (lateral side towards -u), origin at
tibial landmark 4, u to the right and v down.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kneel.landmarks import CENTRE_LANDMARK, NUM_LANDMARKS

__all__ = [
    "SourceKnee",
    "Split",
    "source_knees",
    "is_held_out",
    "source_pool",
    "sample_shape",
    "ROI_SPACING_MM",
]

Split = Literal["train", "test", "all"]
ROI_SPACING_MM = 0.3
"""Pixel size of the ROI frame in which the published shapes are stored."""
HELD_OUT_MODULUS = 5
"""Subjects whose id is divisible by this form the fixed held-out (test) subset: 139 of 720 subjects, 143 knees."""


@dataclass(frozen=True)
class SourceKnee:
    """One real annotated knee: the subject it comes from and its landmarks in the knee frame (mm)."""

    subject_id: int
    side: str
    kl: int
    shape_mm: np.ndarray  # (16, 2), knee frame


def is_held_out(subject_id: int) -> bool:
    """Whether a real subject belongs to the held-out subset (``--split test``); ``--split train`` never uses it."""
    return int(subject_id) % HELD_OUT_MODULUS == 0


@functools.lru_cache(maxsize=1)
def source_knees() -> tuple[SourceKnee, ...]:
    """The 748 published knees, in file order, as knee-frame shapes in mm."""
    knees = []
    for subject_id, side, kl, roi, _ in _read_published():
        shape = (roi - roi[CENTRE_LANDMARK]) * ROI_SPACING_MM
        knees.append(SourceKnee(subject_id, side, kl, shape))
    return tuple(knees)


def _read_centres() -> list[tuple[int, str, np.ndarray]]:
    """(subject_id, side, knee centre in mm from the image's top-left pixel) of every published knee."""
    return [(sid, side, (centre - 100.0) * ROI_SPACING_MM) for sid, side, _, _, centre in _read_published()]


@functools.lru_cache(maxsize=1)
def _read_published() -> list[tuple[int, str, int, np.ndarray, np.ndarray]]:
    """(subject_id, side, kl, ROI landmarks (16, 2), centre in the padded frame) of every row of the published CSV."""
    from kneel.io.annotations import read_bf_landmarks
    from kneel.resources import bf_landmarks_csv

    out = []
    for ann in read_bf_landmarks(bf_landmarks_csv()):
        roi = np.asarray(ann.landmarks_roi, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
        side = ann.side.value if hasattr(ann.side, "value") else str(ann.side)
        out.append((int(ann.subject_id), side, int(ann.kl), roi, np.asarray(ann.centre, dtype=np.float64)))
    return out


def source_pool(split: Split) -> tuple[SourceKnee, ...]:
    """The real knees a cohort of this split may draw shapes from."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    knees = source_knees()
    if split == "all":
        return knees
    want_held_out = split == "test"
    return tuple(k for k in knees if is_held_out(k.subject_id) == want_held_out)


@functools.lru_cache(maxsize=16)
def _grade_modes(split: Split, kl: int, n_modes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Principal modes of shape variation (unit vectors, (n, 32)) and their standard deviations for one KL grade."""
    shapes = np.stack([k.shape_mm.ravel() for k in source_pool(split) if k.kl == kl])
    if len(shapes) < 3:
        shapes = np.stack([k.shape_mm.ravel() for k in source_pool(split)])
    centred = shapes - shapes.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    sd = sing / np.sqrt(max(len(shapes) - 1, 1))
    return vt[:n_modes], sd[:n_modes]


def _is_plausible(shape: np.ndarray) -> bool:
    """Landmarks must keep running lateral to medial (x strictly increasing within each bone), as in the real file."""
    tibia_ok = np.all(np.diff(shape[:9, 0]) > 1.0)
    femur_ok = np.all(np.diff(shape[9:, 0]) > 1.0)
    return bool(tibia_ok and femur_ok)


def sample_shape(knee: SourceKnee, rng: np.random.Generator, split: Split = "all", strength: float = 1.0) -> np.ndarray:
    """A real knee's shape with a small random deformation (knee frame, mm, T4 at the origin).

    The deformation is a similarity transform (scale sd 3 %, aspect sd 1.5 %, shear sd 1.5 %) about T4 plus a move of
    sd 0.3 x the grade's own spread along its six main modes. ``strength=0`` returns the real shape unchanged.
    """
    base = knee.shape_mm
    for _ in range(10):
        modes, sd = _grade_modes(split, knee.kl)
        coeffs = rng.normal(0.0, 0.3 * strength, size=len(sd)) * sd
        shape = base + (coeffs @ modes).reshape(NUM_LANDMARKS, 2)
        scale = 1.0 + rng.normal(0.0, 0.03 * strength)
        aspect = 1.0 + rng.normal(0.0, 0.015 * strength)
        shear = rng.normal(0.0, 0.015 * strength)
        lin = np.array([[scale * aspect, shear], [0.0, scale / aspect]])
        shape = shape @ lin.T
        shape = shape - shape[CENTRE_LANDMARK]
        if _is_plausible(shape):
            return shape
    return base.copy()
