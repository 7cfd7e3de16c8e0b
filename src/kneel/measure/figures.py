"""The figures of docs/measurements.md: each measurement family drawn on a synthetic knee with its ground truth.

``write_figures(out)`` renders one synthetic film (``kneel.synth``), cuts a 100 mm ROI around its right knee at
0.2 mm (``kneel.measure.crop``, not levelled: the film's horizontal stays horizontal) and writes
``measurements_widths.png``, ``measurements_jsw.png`` and ``measurements_angles.png``. Everything drawn is computed
by :mod:`kneel.measure.definitions` from the knee's true landmarks, the same code ``kneel measure`` runs.
Regenerate with ``python -c "from kneel.measure.figures import write_figures; write_figures('docs')"``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from kneel.io.atomic import atomic_write_bytes
from kneel.measure.crop import CropSettings, crop_knee, crop_transform
from kneel.measure.definitions import (
    FEMORAL_LINE,
    FIXED_POSITIONS,
    TIBIAL_LINE,
    jsw_positions,
    knee_frame,
    measure_canonical,
)

__all__ = ["write_figures", "figure_knee"]

_SETTINGS = CropSettings(size_mm=100.0, spacing_mm=0.2)
_TIBIA, _FEMUR, _GAP, _MIN, _AXIS = "#e8433a", "#3cc453", "#ffd23f", "#35d0ff", "#ffffff"


def figure_knee(seed: int = 4, min_obliquity: float = 2.0) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A right knee of a synthetic film, as a 0.2 mm ROI: (image uint16, landmarks in ROI pixels, film spacing).

    Films of ``seed`` are drawn until a right knee without osteoarthritis (KL 0-1) has its plateau tilted by at least
    ``min_obliquity`` degrees, so the angle figure shows an angle.
    """
    from kneel.synth.cohort import film_rng
    from kneel.synth.film import plan_film, render_film

    for index in range(50):
        plan = plan_film(film_rng(seed, index, "all"))
        for placed, _ in plan.annotated:
            if placed.side != "R" or placed.kl > 1:
                continue
            obliquity = measure_canonical(
                placed.original_px[None] * np.array([plan.layout.spacing[1], plan.layout.spacing[0]])
            )["plateau_obliquity_deg"][0]
            if abs(obliquity) < min_obliquity:
                continue
            pixels = render_film(plan).astype(np.float32)
            if plan.acquisition.photometric == "MONOCHROME1":
                pixels = float(2**plan.acquisition.bits_stored - 1) - pixels
            transform, _, _ = crop_transform(placed.original_px, plan.layout.spacing, "R", _SETTINGS)
            return crop_knee(pixels, transform, _SETTINGS), transform.apply(placed.original_px), plan.layout.spacing
    raise RuntimeError(f"no right knee tilted by {min_obliquity} degrees in 50 films of seed {seed}")


def _axes(image: np.ndarray, points_mm: np.ndarray, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = _SETTINGS.spacing_mm
    n = image.shape[0]
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    ax.imshow(image, cmap="gray", extent=(-0.5 * s, (n - 0.5) * s, (n - 0.5) * s, -0.5 * s))
    centre = points_mm[4]
    ax.set_xlim(centre[0] - 48, centre[0] + 48)
    ax.set_ylim(centre[1] + 24, centre[1] - 36)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.plot(points_mm[:9, 0], points_mm[:9, 1], "-o", color=_TIBIA, ms=3.5, lw=1.2)
    ax.plot(points_mm[9:, 0], points_mm[9:, 1], "-o", color=_FEMUR, ms=3.5, lw=1.2)
    ax.text(centre[0] - 47, centre[1] + 22, "lateral", color="w", fontsize=8)
    ax.text(centre[0] + 47, centre[1] + 22, "medial", color="w", fontsize=8, ha="right")
    return fig, ax


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _label_points(ax, points_mm: np.ndarray, which: tuple[int, ...]) -> None:
    for k in which:
        x, y = points_mm[k]
        name = f"T{k}" if k < 9 else f"F{k}"
        ax.annotate(name, (x, y), xytext=(0, -13 if k < 9 else 7), textcoords="offset points", color="w",
                    fontsize=7, ha="center")  # fmt: skip


def write_figures(out: str | os.PathLike[str], seed: int = 4) -> list[Path]:
    """Write the three figures into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image, points_px, _ = figure_knee(seed)
    pts = points_px * _SETTINGS.spacing_mm  # canonical mm of a right knee in a 0.2 mm ROI (no mirroring)
    values = {k: float(v[0]) for k, v in measure_canonical(pts[None]).items()}
    paths = []

    fig, ax = _axes(image, pts, "Widths: tibial plateau |T8 - T0| and femoral condyles |F15 - F9|")
    for (a, b), colour, name, dy in (
        ((0, 8), _TIBIA, "tibial_plateau_width_mm", 9.0),
        ((9, 15), _FEMUR, "femoral_condyle_width_mm", -9.0),
    ):
        p, q = pts[a], pts[b]
        ax.annotate("", q, p, arrowprops={"arrowstyle": "<->", "color": colour, "lw": 1.6})
        mid = (p + q) / 2
        ax.text(mid[0], mid[1] + dy, f"{name} = {values[name]:.1f} mm", color=colour, ha="center", fontsize=9,
                bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    ax.text(pts[4, 0], pts[4, 1] - 30, f"condyle_plateau_width_ratio = {values['condyle_plateau_width_ratio']:.3f}",
            color="w", ha="center", fontsize=9, bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    _label_points(ax, pts, (0, 8, 9, 15))
    paths.append(out / "measurements_widths.png")
    _save(fig, paths[-1])

    fig, ax = _axes(image, pts, "Joint-space widths: gaps along v at fixed fractions of the plateau, and minima")
    origin, e_u, e_v = (v[0] for v in knee_frame(pts[None]))
    far = origin + e_u * values["tibial_plateau_width_mm"]
    ax.plot([origin[0], far[0]], [origin[1], far[1]], "--", color=_AXIS, lw=0.8)
    ax.annotate("u", far + 3 * e_u, color=_AXIS, fontsize=9)
    ax.annotate("", origin + 12 * e_v, origin, arrowprops={"arrowstyle": "->", "color": _AXIS, "lw": 1.0})
    ax.annotate("v", origin + 13 * e_v, color=_AXIS, fontsize=9)
    ends = {k: v[0] for k, v in jsw_positions(pts[None]).items()}
    labels = {"jsw_lateral_15_mm": "15 %", "jsw_lateral_25_mm": "25 %", "jsw_medial_25_mm": "75 %",
              "jsw_medial_15_mm": "85 %"}  # fmt: skip
    for name in FIXED_POSITIONS:
        (tx, ty), (fx, fy) = ends[name]
        ax.plot([tx, fx], [ty, fy], color=_GAP, lw=2.0)
        ax.text(tx, ty + 6, f"{labels[name]}\n{values[name]:.2f}", color=_GAP, fontsize=7.5, ha="center", va="top",
                bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    for name in ("min_jsw_lateral_mm", "min_jsw_medial_mm"):
        (tx, ty), (fx, fy) = ends[name]
        ax.plot([tx, fx], [ty, fy], color=_MIN, lw=2.4)
        ax.text(fx, fy - 4, f"min {values[name]:.2f}", color=_MIN, fontsize=8, ha="center",
                bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    for k in (2, 6):
        ax.plot(*pts[k], "s", color=_MIN, ms=5)
    _label_points(ax, pts, (0, 2, 6, 8))
    ax.text(pts[4, 0], pts[4, 1] - 30, f"jsw_ratio_medial_lateral = {values['jsw_ratio_medial_lateral']:.3f}",
            color="w", ha="center", fontsize=9, bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    paths.append(out / "measurements_jsw.png")
    _save(fig, paths[-1])

    fig, ax = _axes(image, pts, "Angles: plateau line T1-T7 to the film's horizontal; condyle line F10-F14 to it")
    for (a, b), colour in ((TIBIAL_LINE, _TIBIA), (FEMORAL_LINE, _FEMUR)):
        p, q = pts[a], pts[b]
        d = (q - p) / np.linalg.norm(q - p)
        ax.plot(*np.stack([p - 18 * d, q + 18 * d]).T, color=colour, lw=1.6)
    p = pts[TIBIAL_LINE[0]]
    ax.plot([p[0] - 18, p[0] + 90], [p[1], p[1]], ":", color=_AXIS, lw=1.2)
    ax.text(p[0] - 16, p[1] + 5, "film horizontal", color=_AXIS, fontsize=8)
    ax.text(pts[4, 0], pts[4, 1] - 30,
            f"plateau_obliquity_deg = {values['plateau_obliquity_deg']:+.2f} (medial end higher: +)\n"
            f"condyle_plateau_angle_deg = {values['condyle_plateau_angle_deg']:+.2f} (converging medially: +)",
            color="w", ha="center", fontsize=9, bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})  # fmt: skip
    _label_points(ax, pts, (1, 7, 10, 14))
    paths.append(out / "measurements_angles.png")
    _save(fig, paths[-1])
    return paths
