"""The overlay pictures of ``kneel predict --overlays``: the normalised film with each knee's landmarks, drawn with
OpenCV only (a few milliseconds per image).

Each knee's landmarks and label take the colour of its quality: green ``ok``, orange ``uncertain``. A knee flagged
``uncertain`` whose ``uncertainty_mm`` is a calibrated radius (``uncertainty_coverage`` set) also gets a magenta
circle of each landmark's radius, converted to pixels with the image spacing (an ellipse where the pixels are not
square): the true landmark lies inside it with the stated coverage. Knees flagged ``ok`` get no circles, nor do
uncalibrated knees (their ``uncertainty_mm`` is a fold spread, which promises no coverage). A legend in the top-left
corner names the colours, the flag rule and what the circle means.
"""

from __future__ import annotations

import numpy as np

from kneel.inference.results import KneePrediction, RadiographPrediction

__all__ = ["OK_COLOUR", "UNCERTAIN_COLOUR", "RADIUS_COLOUR", "draw_overlay", "radius_axes_px"]

OK_COLOUR = (80, 220, 80)
"""BGR of the landmarks and label of a knee flagged ``ok``."""
UNCERTAIN_COLOUR = (0, 140, 255)
"""BGR of the landmarks and label of a knee flagged ``uncertain``."""
RADIUS_COLOUR = (255, 0, 255)
"""BGR of the calibrated-radius circles (magenta: no landmark, label or film pixel has it)."""
_CENTRE_COLOUR = (0, 0, 255)
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_MAIN = (0, 4, 8, 9, 12, 15)
"""Landmarks drawn a little larger (plateau and condyle margins, the joint centres)."""


def radius_axes_px(knee: KneePrediction, scale: float) -> np.ndarray:
    """(16, 2) half-axes (x, y) in overlay pixels of each landmark's radius ``uncertainty_mm``: ``r / col_mm`` and
    ``r / row_mm`` original pixels, times the overlay's ``scale``; NaN where the radius is not finite."""
    row_mm, col_mm = knee.spacing
    radius = np.asarray(knee.uncertainty_mm, dtype=np.float64).reshape(-1, 1)
    axes = radius / np.array([col_mm, row_mm], dtype=np.float64) * scale
    return np.where(np.isfinite(axes) & (axes >= 0), axes, np.nan)


def _has_radius(knee: KneePrediction) -> bool:
    return bool(np.isfinite(np.asarray(knee.uncertainty_mm, dtype=np.float64)).any())


def _circled(knee: KneePrediction) -> bool:
    return knee.quality == "uncertain" and knee.uncertainty_coverage is not None and _has_radius(knee)


def _to_overlay(points_px: np.ndarray, scale: float) -> np.ndarray:
    """Original pixel centres to overlay pixel centres (pixel edges scale, centres sit half a pixel in)."""
    return (np.asarray(points_px, dtype=np.float64) + 0.5) * scale - 0.5


def _draw_knee(canvas: np.ndarray, knee: KneePrediction, scale: float) -> None:
    import cv2

    colour = OK_COLOUR if knee.quality == "ok" else UNCERTAIN_COLOUR
    pts = _to_overlay(knee.landmarks_px, scale)
    if _circled(knee):
        limit = 2.0 * max(canvas.shape[:2])  # a radius beyond the picture draws nothing useful
        for (x, y), (ax, ay) in zip(pts, radius_axes_px(knee, scale), strict=True):
            if np.isfinite(ax) and np.isfinite(ay) and np.isfinite(x) and np.isfinite(y):
                half_axes = (max(1, int(round(min(ax, limit)))), max(1, int(round(min(ay, limit)))))
                cv2.ellipse(canvas, (int(round(x)), int(round(y))), half_axes, 0, 0, 360, RADIUS_COLOUR, 1, cv2.LINE_AA)
    for k, (x, y) in enumerate(pts):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (int(round(x)), int(round(y))), 4 if k in _MAIN else 3, colour, -1, cv2.LINE_AA)
    cx, cy = _to_overlay(knee.centre_px, scale)
    if np.isfinite(cx) and np.isfinite(cy):
        cv2.drawMarker(canvas, (int(round(cx)), int(round(cy))), _CENTRE_COLOUR, cv2.MARKER_CROSS, 12, 1)
        label = knee.side.value + ("" if knee.quality == "ok" else " uncertain")
        label += "" if _has_radius(knee) else " (no radius)"
        cv2.putText(canvas, label, (int(cx) + 8, int(cy) - 8), _FONT, 0.6, colour, 2, cv2.LINE_AA)


def _legend_lines(prediction: RadiographPrediction) -> list[tuple[str, tuple[int, int, int], str]]:
    """(marker, colour, text) per legend line: ``dot`` or ``ring``."""
    knees = list(prediction)
    flag = next((k.flag_radius_mm for k in knees if k.flag_radius_mm is not None), None)
    joint = next((k for k in knees if k.far_probability is not None and k.flag_probability is not None), None)
    if joint is not None:
        rule = f"P(a landmark >= {flag:g} mm off) > {joint.flag_probability:.0%}"
        if joint.review_radius_mm is not None:
            rule += f" or a radius > {joint.review_radius_mm:.1f} mm"
    elif flag is not None:
        rule = f"a radius > {flag:g} mm or none"
    else:
        rule = "fold spread too large (not calibrated)"
    lines = [("dot", OK_COLOUR, "ok knee"), ("dot", UNCERTAIN_COLOUR, f"uncertain knee: {rule}")]
    circled = [k for k in knees if _circled(k)]
    if circled:
        coverage = circled[0].uncertainty_coverage
        lines.append(("ring", RADIUS_COLOUR, f"circle: calibrated radius, holds the true landmark {coverage:.0%}"))
        lines.append(("", RADIUS_COLOUR, "of the time on films like the calibration films"))
    return lines


def _draw_legend(canvas: np.ndarray, prediction: RadiographPrediction) -> None:
    import cv2

    lines = _legend_lines(prediction)
    rows, columns = canvas.shape[:2]
    font = float(np.clip(columns / 2000.0, 0.3, 0.5))
    step = max(8, round(30 * font / 0.5))
    width = max(cv2.getTextSize(text, _FONT, font, 1)[0][0] for _, _, text in lines) + 3 * step // 2 + 12
    height = step * len(lines) + 8
    box = canvas[: min(rows, height), : min(columns, width)]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)  # darken: legible on any film
    for i, (marker, colour, text) in enumerate(lines):
        y = 4 + step * i + step // 2
        centre = (6 + step // 2, y)
        if marker == "dot":
            cv2.circle(canvas, centre, max(2, step // 5), colour, -1, cv2.LINE_AA)
        elif marker == "ring":
            cv2.circle(canvas, centre, max(3, step // 3), colour, 1, cv2.LINE_AA)
        cv2.putText(canvas, text, (8 + step, y + step // 4), _FONT, font, (235, 235, 235), 1, cv2.LINE_AA)


def draw_overlay(prediction: RadiographPrediction, image_u8: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """The BGR overlay of one radiograph: the normalised image shrunk to at most ``max_side`` pixels, each knee's
    landmarks, ROI centre and label in its quality's colour, radius circles on uncertain knees, and the legend."""
    import cv2

    if image_u8.size == 0:  # refused before its pixels were read: a small black card
        image_u8 = np.zeros((128, 256), np.uint8)
    rows, columns = image_u8.shape[:2]
    scale = min(1.0, max_side / max(rows, columns))
    if scale < 1:  # at least one pixel each way, however elongated the image
        size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
        small = cv2.resize(image_u8, size, interpolation=cv2.INTER_AREA)
    else:
        small = image_u8
    canvas = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))
    for knee in prediction:
        _draw_knee(canvas, knee, scale)
    if prediction.knees:
        _draw_legend(canvas, prediction)
    if prediction.status != "ok":
        cv2.putText(canvas, "no knee", (8, 24), _FONT, 0.7, (0, 0, 255), 2, cv2.LINE_AA)
    return canvas
