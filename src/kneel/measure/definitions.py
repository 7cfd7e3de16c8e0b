"""The knee measurements and their exact definitions, computed from the 16 landmarks in millimetres.

Every function here works on *canonical* points: ``(..., 16, 2)`` arrays of ``(x, y)`` in mm of the film (``x =
x_px * col_mm``, ``y = y_px * row_mm``, so anisotropic spacing is exact), with left knees mirrored (``x -> -x``) so
that every knee is seen as a right knee of a PA film: lateral on the left, medial on the right, femur above. Which side
is lateral or medial comes from the landmark *indices* (T0 and F9 lateral, T8 and F15 medial, on both knees), never
from the image; the mirroring only fixes the handedness of the film, which matters for one measurement (the plateau
obliquity to the film's horizontal).

The knee frame (docs/measurements.md has the figures):

* ``u`` axis: from T0 (lateral plateau margin) to T8 (medial plateau margin); ``u = 0`` at T0, ``u = W`` at T8 where
  ``W = |T8 - T0|`` is the tibial plateau width.
* ``v`` axis: perpendicular to ``u``, pointing to the femur (the side of the mean of F9-F15), so ``v`` grows
  proximally.
* Tibial contour: the polyline T0-T1-...-T8; femoral contour: F9-F10-...-F15.
* Joint-space gap at ``u``: (lowest femoral contour point on the line ``u = const``) minus (highest tibial contour
  point on it), in ``v``. It is negative where the contours cross.

All functions are vectorised over leading axes and return NaN where a measurement is undefined (missing landmarks,
a position outside the contours).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kneel.landmarks import NUM_LANDMARKS

__all__ = [
    "Measurement",
    "MEASUREMENTS",
    "MEASUREMENT_NAMES",
    "ANGLE_NAMES",
    "FIXED_POSITIONS",
    "TIBIAL_LINE",
    "FEMORAL_LINE",
    "canonical_mm",
    "knee_frame",
    "to_frame",
    "joint_space_gap",
    "jsw_positions",
    "measure_canonical",
    "measure_knees",
]

TIBIAL_LINE: tuple[int, int] = (1, 7)
"""Landmarks defining the tibial plateau line (lateral and medial plateau, the floors of the two compartments)."""
FEMORAL_LINE: tuple[int, int] = (10, 14)
"""Landmarks defining the femoral condyle line (the distal points of the lateral and medial condyles)."""

FIXED_POSITIONS: dict[str, float] = {
    "jsw_lateral_15_mm": 0.15,
    "jsw_lateral_25_mm": 0.25,
    "jsw_medial_25_mm": 0.75,
    "jsw_medial_15_mm": 0.85,
}
"""Fixed-location joint-space widths: fraction of the plateau width from the lateral margin T0 (``s`` in ``u = s W``).

``jsw_medial_15_mm`` lies at 15 % of the width from the *medial* margin (85 % from the lateral one), so both
compartments are sampled at the same distances from their own margins and a knee and its mirror image agree."""

_LATERAL_INNER, _MEDIAL_INNER = 2, 6
"""Inner ends of the two plateau compartments (T2, T6): the minimum width is sought between them and the margins,
away from the tibial spines (T3-T5) and the intercondylar notch (F12), where the gap is no joint space."""


@dataclass(frozen=True)
class Measurement:
    """One measurement: column name, unit, family (for the figures) and a one-line definition."""

    name: str
    unit: str
    family: str
    definition: str


MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("tibial_plateau_width_mm", "mm", "widths", "|T8 - T0|: lateral to medial tibial plateau margin"),
    Measurement("femoral_condyle_width_mm", "mm", "widths", "|F15 - F9|: lateral to medial femoral condyle margin"),
    Measurement("condyle_plateau_width_ratio", "1", "widths", "femoral condyle width / tibial plateau width"),
    Measurement("jsw_lateral_15_mm", "mm", "jsw", "joint-space gap at 15 % of the plateau width from T0 (lateral)"),
    Measurement("jsw_lateral_25_mm", "mm", "jsw", "joint-space gap at 25 % of the plateau width from T0 (lateral)"),
    Measurement("jsw_medial_25_mm", "mm", "jsw", "joint-space gap at 25 % of the plateau width from T8 (medial)"),
    Measurement("jsw_medial_15_mm", "mm", "jsw", "joint-space gap at 15 % of the plateau width from T8 (medial)"),
    Measurement("min_jsw_lateral_mm", "mm", "jsw", "smallest joint-space gap between the lateral margin and T2"),
    Measurement("min_jsw_medial_mm", "mm", "jsw", "smallest joint-space gap between T6 and the medial margin"),
    Measurement(
        "jsw_ratio_medial_lateral",
        "1",
        "jsw",
        "min_jsw_medial_mm / min_jsw_lateral_mm, each clipped at 0 (contact); undefined when the lateral space is 0",
    ),
    Measurement(
        "plateau_obliquity_deg",
        "deg",
        "angles",
        "angle of the tibial plateau line T1->T7 to the film's horizontal, positive when the medial end is higher",
    ),
    Measurement(
        "condyle_plateau_angle_deg",
        "deg",
        "angles",
        "angle from the femoral condyle line F10->F14 to the tibial plateau line T1->T7, positive when the two lines "
        "converge medially (joint space narrower medially)",
    ),
)
MEASUREMENT_NAMES: tuple[str, ...] = tuple(m.name for m in MEASUREMENTS)
ANGLE_NAMES: frozenset[str] = frozenset(m.name for m in MEASUREMENTS if m.unit == "deg")


def canonical_mm(points_px: np.ndarray, spacing: np.ndarray, mirror: np.ndarray | Sequence[bool]) -> np.ndarray:
    """``(N, 16, 2)`` pixels -> canonical mm: ``x * col_mm``, ``y * row_mm``, then ``x -> -x`` where ``mirror``.

    ``spacing`` is ``(N, 2)`` ``(row_mm, col_mm)`` (or one pair for all knees); ``mirror`` is ``(N,)`` (left knees).
    """
    pts = np.asarray(points_px, dtype=np.float64)
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pts.shape[0], 2))
    out = pts * np.stack([sp[:, 1], sp[:, 0]], axis=1)[:, None, :]
    flip = np.asarray(mirror, dtype=bool).reshape(-1)
    out[flip, :, 0] *= -1.0
    return out


def knee_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin (T0), ``u`` and ``v`` unit vectors of the knee frame, each ``(..., 2)`` (see the module docstring)."""
    p = np.asarray(points, dtype=np.float64)
    origin = p[..., 0, :]
    d = p[..., 8, :] - origin
    with np.errstate(invalid="ignore", divide="ignore"):
        e_u = d / np.linalg.norm(d, axis=-1, keepdims=True)
    # Perpendicular, then turned to the femur's side (the femoral landmarks' mean lies 10-30 mm proximal of T0-T8).
    e_v = np.stack([e_u[..., 1], -e_u[..., 0]], axis=-1)
    femur = p[..., 9:, :].mean(axis=-2) - origin
    sign = np.where(np.sum(femur * e_v, axis=-1) < 0, -1.0, 1.0)
    return origin, e_u, e_v * sign[..., None]


def to_frame(points: np.ndarray) -> np.ndarray:
    """Canonical points -> ``(..., 16, 2)`` knee-frame coordinates ``(u, v)`` in mm."""
    p = np.asarray(points, dtype=np.float64)
    origin, e_u, e_v = knee_frame(p)
    rel = p - origin[..., None, :]
    return np.stack([np.sum(rel * e_u[..., None, :], -1), np.sum(rel * e_v[..., None, :], -1)], axis=-1)


def _envelope(uv: np.ndarray, queries: np.ndarray, upper: bool) -> np.ndarray:
    """Highest (``upper``) or lowest ``v`` of a polyline on each line ``u = q``; NaN where the line misses it.

    ``uv`` is ``(M, K, 2)`` (vertices in order), ``queries`` ``(M, Q)``. Segments parallel to ``v`` are skipped (the
    vertices at their ends count through the neighbouring segments). Taking the extreme over every crossing makes the
    gap well defined even for a contour that folds back on itself.
    """
    ua, ub = uv[:, :-1, 0][:, None, :], uv[:, 1:, 0][:, None, :]
    va, vb = uv[:, :-1, 1][:, None, :], uv[:, 1:, 1][:, None, :]
    q = queries[:, :, None]
    du = ub - ua
    inside = (q >= np.minimum(ua, ub)) & (q <= np.maximum(ua, ub)) & (du != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = va + (q - ua) / np.where(du == 0, 1.0, du) * (vb - va)
    fill = -np.inf if upper else np.inf
    v = np.where(inside, v, fill)
    out = v.max(axis=-1) if upper else v.min(axis=-1)
    return np.where(np.isfinite(out), out, np.nan)


def joint_space_gap(uv: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Joint-space gap (mm) at each ``u`` of ``queries`` ``(M, Q)``: lowest femoral minus highest tibial ``v``."""
    tibia = _envelope(uv[:, :9], queries, upper=True)
    femur = _envelope(uv[:, 9:], queries, upper=False)
    return femur - tibia


def _range_min(queries: np.ndarray, gap: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Minimum of ``gap`` over the queries within ``lo <= u <= hi`` (``(M,)`` each); NaN for an empty range.

    Between consecutive vertex positions the femoral envelope is a minimum of linear functions (concave) and the
    tibial one a maximum (convex), so the gap is concave there and its minimum over a range lies at a vertex position
    or at an end of the range: with those among the queries, the minimum is exact.
    """
    keep = (queries >= lo[:, None]) & (queries <= hi[:, None]) & (lo <= hi)[:, None]
    out = np.where(keep & np.isfinite(gap), gap, np.inf).min(axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def _wrap_deg(angle: np.ndarray) -> np.ndarray:
    """Degrees wrapped to ``(-180, 180]``."""
    return 180.0 - np.mod(180.0 - angle, 360.0)


def _line_angle(vec: np.ndarray) -> np.ndarray:
    """Angle (deg) of ``(a, b)`` vectors measured from the first axis toward the second."""
    return np.degrees(np.arctan2(vec[..., 1], vec[..., 0]))


def _jsw_queries(uv: np.ndarray) -> tuple[np.ndarray, tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """Every ``u`` where a gap is needed: the fixed positions, every vertex position and the compartments' ends; and
    the two compartments' ranges ``(lo, hi)`` (lateral, medial)."""
    width = uv[:, 8, 0]  # = |T8 - T0| up to rounding: positions are fractions of the u coordinate of T8
    fractions = np.array(list(FIXED_POSITIONS.values()))
    u_femur = uv[:, 9:, 0]
    f_lo, f_hi = u_femur.min(axis=1), u_femur.max(axis=1)
    lateral = (np.maximum(uv[:, 0, 0], f_lo), np.minimum(uv[:, _LATERAL_INNER, 0], f_hi))
    medial = (np.maximum(uv[:, _MEDIAL_INNER, 0], f_lo), np.minimum(uv[:, 8, 0], f_hi))
    ends = np.stack([*lateral, *medial], axis=1)
    queries = np.concatenate([width[:, None] * fractions[None, :], uv[:, :, 0], ends], axis=1)
    return queries, (lateral, medial)


def measure_canonical(points: np.ndarray) -> dict[str, np.ndarray]:
    """Every measurement of :data:`MEASUREMENTS` for canonical points ``(M, 16, 2)``; each value ``(M,)``.

    A knee with any non-finite landmark gets NaN everywhere (every measurement but the widths needs the whole frame).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected points of shape (M, {NUM_LANDMARKS}, 2), got {p.shape}")
    complete = np.all(np.isfinite(p), axis=(1, 2))
    p = np.where(complete[:, None, None], p, np.nan)
    uv = to_frame(p)
    out: dict[str, np.ndarray] = {}

    plateau = np.linalg.norm(p[:, 8] - p[:, 0], axis=-1)
    condyles = np.linalg.norm(p[:, 15] - p[:, 9], axis=-1)
    out["tibial_plateau_width_mm"] = plateau
    out["femoral_condyle_width_mm"] = condyles
    with np.errstate(invalid="ignore", divide="ignore"):
        out["condyle_plateau_width_ratio"] = condyles / plateau

    queries, ranges = _jsw_queries(uv)
    gap = joint_space_gap(uv, queries)
    nf = len(FIXED_POSITIONS)
    for j, name in enumerate(FIXED_POSITIONS):
        out[name] = gap[:, j]
    (lat_lo, lat_hi), (med_lo, med_hi) = ranges
    lateral = _range_min(queries[:, nf:], gap[:, nf:], lat_lo, lat_hi)
    medial = _range_min(queries[:, nf:], gap[:, nf:], med_lo, med_hi)
    out["min_jsw_lateral_mm"] = lateral
    out["min_jsw_medial_mm"] = medial
    # Crossing contours count as contact (0 mm) in the ratio; with the lateral space closed it is undefined.
    clipped_lateral = np.maximum(lateral, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["jsw_ratio_medial_lateral"] = np.where(
            clipped_lateral > 0, np.maximum(medial, 0.0) / clipped_lateral, np.nan
        )

    t_a, t_b = TIBIAL_LINE
    f_a, f_b = FEMORAL_LINE
    tibial_vec = p[:, t_b] - p[:, t_a]
    # Film frame: x to the right, y down; "higher" is -y, so the counter-clockwise angle on screen is atan2(-dy, dx).
    out["plateau_obliquity_deg"] = _line_angle(np.stack([tibial_vec[:, 0], -tibial_vec[:, 1]], axis=-1))
    phi_t = _line_angle(uv[:, t_b] - uv[:, t_a])
    phi_f = _line_angle(uv[:, f_b] - uv[:, f_a])
    out["condyle_plateau_angle_deg"] = _wrap_deg(phi_t - phi_f)
    return out


def jsw_positions(points: np.ndarray) -> dict[str, np.ndarray]:
    """Where each joint-space width is taken: name -> ``(M, 2, 2)``, the tibial and the femoral end of the gap in
    canonical mm (NaN where undefined). For drawing and checking; the widths are the ``v`` distances between them."""
    p = np.asarray(points, dtype=np.float64)
    origin, e_u, e_v = knee_frame(p)
    uv = to_frame(p)
    queries, ((lat_lo, lat_hi), (med_lo, med_hi)) = _jsw_queries(uv)
    tibia = _envelope(uv[:, :9], queries, upper=True)
    femur = _envelope(uv[:, 9:], queries, upper=False)
    gap = femur - tibia
    nf = len(FIXED_POSITIONS)
    pick: dict[str, np.ndarray] = {name: np.full(len(p), j) for j, name in enumerate(FIXED_POSITIONS)}
    for name, lo, hi in (("min_jsw_lateral_mm", lat_lo, lat_hi), ("min_jsw_medial_mm", med_lo, med_hi)):
        q = queries[:, nf:]
        keep = (q >= lo[:, None]) & (q <= hi[:, None]) & np.isfinite(gap[:, nf:])
        pick[name] = nf + np.argmin(np.where(keep, gap[:, nf:], np.inf), axis=1)
    rows = np.arange(len(p))
    out = {}
    for name, j in pick.items():
        u, vt, vf = queries[rows, j], tibia[rows, j], femur[rows, j]
        ends = np.stack([u[:, None] * e_u + vt[:, None] * e_v, u[:, None] * e_u + vf[:, None] * e_v], axis=1)
        out[name] = ends + origin[:, None, :]
    return out


def measure_knees(points_px: np.ndarray, spacing: np.ndarray, sides: Sequence[str]) -> dict[str, np.ndarray]:
    """Measurements of ``(N, 16, 2)`` original-pixel landmarks with their films' ``(N, 2)`` ``(row_mm, col_mm)``.

    ``sides`` are ``'R'``/``'L'`` per knee; left knees are mirrored first, so both sides report in the same
    anatomical terms.
    """
    mirror = np.array([str(s).upper() == "L" for s in sides], dtype=bool)
    return measure_canonical(canonical_mm(points_px, spacing, mirror))
