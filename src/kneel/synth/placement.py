"""Where the knees lie in the film: pixel spacing, film size, knee centres, rotations, and exact ground truth.

The numbers follow the 748 published knees (their ``center`` column, in mm from the image corner, and the spacing
implied by the VIA files; see ``KNEE_RADIOGRAPH_APPEARANCE.md``): spacing 0.1-0.2 mm (median 0.15; 0.15, 0.17 and
0.102 most common), right-knee centres at x ~ 88-143 mm, centre-to-centre distance 124-247 mm (median 171), both
y ~ 147-215 mm, on 35 x 43 cm landscape films.

Exactness: every landmark is snapped to the integer grid of the reference's padded 0.3 mm frame
(``x_pad = x_mm / 0.3 + 100``) *before* the bones are drawn around it, so the integer ``annotations.csv`` and the
float ground truth in original pixels describe the very same points, and the rendered contours pass through them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kneel.geometry import Affine
from kneel.io.annotations import HC_SPACING, IMAGE_PAD, ROI_SIZE_PX, padded_to_original

__all__ = [
    "SPACING_TABLE",
    "FilmLayout",
    "PlacedKnee",
    "sample_layout",
    "knee_pose",
    "snap_knee",
    "ROI_HALF",
]

ROI_HALF = ROI_SIZE_PX // 2

SPACING_TABLE: tuple[tuple[float, int], ...] = (
    (0.100, 65),
    (0.101, 45),
    (0.102, 85),
    (0.150, 211),
    (0.157, 29),
    (0.158, 67),
    (0.169, 30),
    (0.170, 194),
    (0.200, 22),
)
"""(spacing mm, number of published knees) implied by ``center`` vs the refined VIA tibial landmark 4."""

_FILMS_MM: tuple[tuple[float, float], ...] = ((430.0, 350.0), (431.8, 355.6), (427.0, 348.0))
"""(width, height) of landscape cassettes: 35 x 43 cm and 14 x 17 in (and a slightly cropped digitised one)."""


@functools.lru_cache(maxsize=1)
def _published_centres() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-knee centres (mm), left-knee centres (mm), and both-knee offsets L - R (mm) of the published file."""
    from kneel.synth.shapes import _read_centres

    rows = _read_centres()
    right = np.array([c for _, side, c in rows if side == "R"])
    left = np.array([c for _, side, c in rows if side == "L"])
    by_subject: dict[int, dict[str, np.ndarray]] = {}
    for sid, side, c in rows:
        by_subject.setdefault(sid, {})[side] = c
    pairs = np.array([d["L"] - d["R"] for d in by_subject.values() if len(d) == 2])
    return right, left, pairs


@dataclass(frozen=True)
class PlacedKnee:
    """One knee placed in the film. ``pose`` maps the knee frame (mm) to the film (mm from the pixel (0, 0) centre)."""

    side: str
    kl: int
    shape_mm: np.ndarray  # (16, 2) knee frame, snapped so that the film points are on the padded grid
    pose: Affine
    padded: np.ndarray  # (16, 2) integers, padded 0.3 mm frame
    original_px: np.ndarray  # (16, 2) float, original pixels


@dataclass(frozen=True)
class FilmLayout:
    """Film geometry: size, spacing and the two knee centres (mm) with their in-plane rotations (degrees)."""

    rows: int
    cols: int
    spacing: tuple[float, float]  # (row_mm, col_mm)
    centres: dict[str, tuple[float, float]]
    angles: dict[str, float]
    sides: tuple[str, ...]  # knees present ('R', 'L' or both)
    unusual: bool

    @property
    def size_mm(self) -> tuple[float, float]:
        """(width, height) in mm."""
        return self.cols * self.spacing[1], self.rows * self.spacing[0]


def sample_layout(
    rng: np.random.Generator,
    *,
    single_knee: bool = False,
    unusual_probability: float = 0.03,
    anisotropic_probability: float = 0.03,
) -> FilmLayout:
    """Draw a film: spacing from the published distribution, a cassette size, knee centres and rotations."""
    values = np.array([v for v, _ in SPACING_TABLE])
    weights = np.array([w for _, w in SPACING_TABLE], dtype=float)
    spacing = float(rng.choice(values, p=weights / weights.sum()))
    row_mm = col_mm = spacing
    if rng.random() < anisotropic_probability:
        col_mm = round(spacing * (1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.005, 0.03)), 5)
    width_mm, height_mm = _FILMS_MM[int(rng.integers(len(_FILMS_MM)))]
    width_mm -= rng.uniform(0.0, 12.0)
    height_mm -= rng.uniform(0.0, 12.0)
    cols, rows = int(round(width_mm / col_mm)), int(round(height_mm / row_mm))
    width_mm, height_mm = cols * col_mm, rows * row_mm

    unusual = bool(rng.random() < unusual_probability)
    patient = rng.normal(0.0, 1.5)
    if unusual:
        patient = rng.choice([-1.0, 1.0]) * rng.uniform(8.0, 20.0)
    r, left = _sample_centres(rng, width_mm, height_mm, patient)
    angles = {"R": patient + rng.normal(0.0, 1.5), "L": patient + rng.normal(0.0, 1.5)}
    sides: tuple[str, ...] = ("R", "L")
    if single_knee:
        sides = (str(rng.choice(["R", "L"])),)
    centres = {"R": (float(r[0]), float(r[1])), "L": (float(left[0]), float(left[1]))}
    return FilmLayout(rows, cols, (row_mm, col_mm), centres, angles, sides, unusual)


def _sample_centres(
    rng: np.random.Generator, width_mm: float, height_mm: float, patient_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Right and left knee centres (mm): a published right knee, a published both-knee offset, jitter, rotation.

    Draws again until, as on every published film, the right knee lies in the image's left half and the left knee in
    the right half (10 mm margin) and both 140 mm ROIs stay within the film plus the reference's 30 mm padding.
    """
    right, _, pairs = _published_centres()
    half = 0.5 * width_mm
    for _ in range(100):
        r = right[int(rng.integers(len(right)))] + rng.normal(0.0, 4.0, size=2)
        offset = pairs[int(rng.integers(len(pairs)))] + rng.normal(0.0, [6.0, 3.0])
        offset[0] = np.clip(offset[0], 120.0, 250.0)
        left = r + offset
        shift_x = 0.0
        if r[0] < 50.0:
            shift_x = 50.0 - r[0]
        if left[0] + shift_x > width_mm - 50.0:
            shift_x = width_mm - 50.0 - left[0]
        r[0] += shift_x
        left[0] += shift_x
        mid = 0.5 * (r + left)
        rot = Affine.rotation(patient_deg, centre=(float(mid[0]), float(mid[1])))
        r, left = rot.apply(r), rot.apply(left)
        for c in (r, left):
            c[1] = np.clip(c[1], 95.0, height_mm - 60.0)
        if 50.0 <= r[0] <= half - 10.0 and half + 10.0 <= left[0] <= width_mm - 50.0:
            return r, left
    # Not reached in practice: a symmetric film at the median published distance.
    y = 0.5 * height_mm
    return np.array([half - 85.5, y]), np.array([half + 85.5, y])


def knee_pose(side: str, centre_mm: tuple[float, float], angle_deg: float) -> Affine:
    """Knee frame -> film mm: mirror left knees (lateral side outwards), rotate, move T4 to ``centre_mm``."""
    pose = Affine.identity()
    if side == "L":
        pose = Affine.scaling(-1.0, 1.0)
    return pose.then(Affine.rotation(angle_deg)).then(Affine.translation(*centre_mm))


def snap_knee(
    shape_mm: np.ndarray,
    side: str,
    kl: int,
    centre_mm: tuple[float, float],
    angle_deg: float,
    spacing: tuple[float, float],
) -> PlacedKnee:
    """Place a knee and snap its landmarks to the padded 0.3 mm integer grid (moves each by at most 0.21 mm).

    The returned ``shape_mm`` is the snapped shape in the knee frame: render the bones around it and the image,
    ``padded`` and ``original_px`` all agree exactly.
    """
    pose = knee_pose(side, centre_mm, angle_deg)
    film_mm = pose.apply(shape_mm)
    padded = np.round(film_mm / HC_SPACING + IMAGE_PAD)
    snapped_mm = (padded - IMAGE_PAD) * HC_SPACING
    shape_snapped = pose.inverse().apply(snapped_mm)
    original_px = padded_to_original(padded, spacing)
    return PlacedKnee(side, int(kl), shape_snapped, pose, padded.astype(np.int64), original_px)
