"""A knee with hand-computable measurements, and ways to put it on a film."""

from __future__ import annotations

import numpy as np

# Right-knee view, mm, y down (femur above: smaller y). Flat tibial plateau at y = 100 except the spines; straight
# femoral segments, so every gap below is one linear interpolation done by hand.
TIBIA_MM = [(0, 100), (10, 100), (20, 100), (30, 92), (40, 95), (50, 92), (60, 100), (70, 100), (80, 100)]
FEMUR_MM = [(4, 95), (16, 94), (28, 90), (40, 70), (52, 90), (64, 97), (76, 96)]
KNEE_MM = np.array(TIBIA_MM + FEMUR_MM, dtype=np.float64)

# Expected values, worked out by hand from the points above (see each comment).
EXPECTED = {
    "tibial_plateau_width_mm": 80.0,  # |T8 - T0|
    "femoral_condyle_width_mm": float(np.hypot(72.0, 1.0)),  # |F15 - F9| = |(72, 1)|
    "condyle_plateau_width_ratio": float(np.hypot(72.0, 1.0)) / 80.0,
    "jsw_lateral_15_mm": 100.0 - (95.0 - 1.0 * 8.0 / 12.0),  # u = 12: femur on F9-F10, 8/12 of the way
    "jsw_lateral_25_mm": 100.0 - (94.0 - 4.0 * 4.0 / 12.0),  # u = 20: femur on F10-F11, 4/12 of the way
    "jsw_medial_25_mm": 100.0 - (90.0 + 7.0 * 8.0 / 12.0),  # u = 60: femur on F13-F14, 8/12 of the way
    "jsw_medial_15_mm": 100.0 - (97.0 - 1.0 * 4.0 / 12.0),  # u = 68: femur on F14-F15, 4/12 of the way
    "min_jsw_lateral_mm": 5.0,  # over u in [4 (F9), 20 (T2)]: smallest at F9 (100 - 95)
    "min_jsw_medial_mm": 3.0,  # over u in [60 (T6), 76 (F15)]: smallest at F14 (100 - 97)
    "jsw_ratio_medial_lateral": 3.0 / 5.0,
    "plateau_obliquity_deg": 0.0,  # T1 and T7 both at y = 100
    # F10 -> F14 = (48, +3 mm down): the femoral line falls by atan(3/48) toward medial; the plateau line is level,
    # so the lines converge medially by that angle.
    "condyle_plateau_angle_deg": float(np.degrees(np.arctan2(3.0, 48.0))),
}


def to_film(
    knee_mm: np.ndarray,
    side: str,
    spacing: tuple[float, float],
    angle_deg: float = 0.0,
    offset_mm: tuple[float, float] = (150.0, 180.0),
) -> np.ndarray:
    """Pixels of a knee on a film: mirrored for a left knee (the left knee's lateral side is on the image right),
    rotated by ``angle_deg`` counter-clockwise on screen about T4, moved to ``offset_mm``, divided by the spacing.

    Written out by hand (not with kneel.geometry) so the tests do not check the code against itself.
    """
    pts = np.asarray(knee_mm, dtype=np.float64).copy()
    centre = pts[4].copy()
    pts -= centre
    if side == "L":
        pts[:, 0] = -pts[:, 0]
    t = np.radians(angle_deg)
    # counter-clockwise on screen with y pointing down: (x, y) -> (x cos t + y sin t, -x sin t + y cos t)
    x = pts[:, 0] * np.cos(t) + pts[:, 1] * np.sin(t)
    y = -pts[:, 0] * np.sin(t) + pts[:, 1] * np.cos(t)
    row_mm, col_mm = spacing
    return np.stack([(x + offset_mm[0]) / col_mm, (y + offset_mm[1]) / row_mm], axis=1)
