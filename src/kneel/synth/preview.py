"""A picture of generated films with their ground-truth landmarks (``docs/synth_examples.png``).

Top row: whole films (downsampled), bottom row: 140 mm knee ROIs at KL 0-4. Tibial landmarks red, femoral green.
Images are shown as the pipeline sees them: bone bright, the reference's 5th-99th percentile window.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from kneel.io.atomic import atomic_write_bytes
from kneel.io.radiograph import normalize_intensity
from kneel.synth.cohort import film_rng
from kneel.synth.film import FilmPlan, plan_film, render_film

__all__ = ["write_preview", "display_image"]

_RED, _GREEN, _YELLOW = (40, 40, 230), (60, 200, 60), (0, 220, 255)


def display_image(plan: FilmPlan, pixels: np.ndarray) -> np.ndarray:
    """uint8 BGR image of a film, bone bright, windowed like the pipeline's input."""
    img = pixels.astype(np.float32)
    if plan.acquisition.photometric == "MONOCHROME1":
        img = float(2**plan.acquisition.bits_stored - 1) - img
    return cv2.cvtColor(normalize_intensity(img), cv2.COLOR_GRAY2BGR)


def _draw_points(img: np.ndarray, points: np.ndarray, scale: float, offset: tuple[float, float], radius: int) -> None:
    for i, (x, y) in enumerate(points):
        centre = (int(round((x - offset[0]) * scale)), int(round((y - offset[1]) * scale)))
        cv2.circle(img, centre, radius, _RED if i < 9 else _GREEN, -1, cv2.LINE_AA)


def _label(img: np.ndarray, text: str) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
    cv2.rectangle(img, (0, 0), (tw + 12, th + base + 10), (0, 0, 0), -1)
    cv2.putText(img, text, (6, th + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.6, _YELLOW, 1, cv2.LINE_AA)


def write_preview(path: str | os.PathLike[str], seed: int = 0, n_films: int = 3, tile: int = 600) -> None:
    """Render films of cohort ``seed`` and write the picture (PNG) to ``path``."""
    films, crops, crops_by_kl = [], [], {}
    index = 0
    while (len(films) < n_films or len(crops_by_kl) < 5) and index < 60:
        rng = film_rng(seed, index, "all")
        plan = plan_film(rng, "all", single_knee=False)
        index += 1
        need_film = len(films) < n_films
        new_kl = [k for k in plan.knees if k.kl not in crops_by_kl]
        if not need_film and not new_kl:
            continue
        img = display_image(plan, render_film(plan))
        row_mm, col_mm = plan.layout.spacing
        if need_film:
            scale = tile / img.shape[1]
            small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            for knee in plan.knees:
                _draw_points(small, knee.original_px, scale, (0.0, 0.0), 2)
            acq = plan.acquisition
            _label(small, f"{acq.modality} {acq.photometric} {acq.bits_stored} bit, {col_mm:.3f} mm")
            films.append(small)
        for knee in new_kl:
            cx, cy = knee.original_px[4]
            half_x, half_y = 70.0 / col_mm, 70.0 / row_mm
            x0, y0 = int(round(cx - half_x)), int(round(cy - half_y))
            x1, y1 = int(round(cx + half_x)), int(round(cy + half_y))
            pad = max(0, -x0, -y0, x1 - img.shape[1], y1 - img.shape[0])
            padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
            crop = padded[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
            scale = (tile * 0.6) / crop.shape[1]
            crop = cv2.resize(
                crop,
                (int(round(crop.shape[1] * scale)), int(round(crop.shape[0] * scale))),
                interpolation=cv2.INTER_AREA,
            )
            _draw_points(crop, knee.original_px, scale, (x0, y0), 3)
            _label(crop, f"{knee.side} knee, KL {knee.kl}")
            crops_by_kl[knee.kl] = crop
    crops = [crops_by_kl[k] for k in sorted(crops_by_kl)]
    top = _row(films, tile * n_films)
    bottom = _row(crops, tile * n_films)
    picture = np.vstack([top, np.zeros((6, top.shape[1], 3), np.uint8), bottom])
    ok, data = cv2.imencode(".png", picture)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(path, data.tobytes())


def _row(images: list[np.ndarray], width: int) -> np.ndarray:
    """Images side by side (same height), padded to ``width``."""
    height = min(im.shape[0] for im in images)
    scaled = [cv2.resize(im, (int(round(im.shape[1] * height / im.shape[0])), height)) for im in images]
    gap = np.zeros((height, 6, 3), np.uint8)
    parts = []
    for im in scaled:
        parts += [im, gap]
    row = np.hstack(parts[:-1])
    if row.shape[1] < width:
        row = np.hstack([row, np.zeros((height, width - row.shape[1], 3), np.uint8)])
    return cv2.resize(row, (width, int(round(height * width / row.shape[1])))) if row.shape[1] > width else row
