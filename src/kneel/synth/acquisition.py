"""From attenuation to stored pixel values: exposure, heel effect, quantum noise, detector response, collimation,
burnt-in markers, grid lines, bit depth and photometric interpretation.

The input is the film's log-attenuation ``L`` (0 in air, ~2 through soft tissue, ~3 through bone). A detector sees
``I = E * heel * exp(-L)`` photons; quantum noise has sd ``sqrt(I)``, i.e. ``exp(L / 2) / sqrt(E)`` in the log
domain, so it grows where the signal is low (behind bone). The stored value is a monotone response of the noisy
``L``: log-linear (digital detectors) or the sigmoid characteristic curve of film (digitised films).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kneel.synth.placement import FilmLayout

__all__ = ["Acquisition", "Marker", "sample_acquisition", "expose"]

_BITS = (12, 14, 15, 16)
_BITS_P = (0.45, 0.2, 0.1, 0.25)
_TEXTS = ("PA FLEX", "STANDING", "WB PA", "BILAT", "FIXED FLEX", "20 DEG")


@dataclass(frozen=True)
class Marker:
    """Burnt-in text at ``(x_mm, y_mm)`` (bottom-left of the text), ``height_mm`` tall, optionally on a dark box."""

    text: str
    x_mm: float
    y_mm: float
    height_mm: float
    boxed: bool


@dataclass(frozen=True)
class Acquisition:
    """How one film was exposed, read out and stored."""

    modality: str
    photometric: str
    bits_stored: int
    spacing_tags: tuple[str, ...]
    response: str  # "log" or "film"
    black: float  # fraction of the full scale where air lies (log response)
    gain: float  # fraction of the full scale per unit of L (log response)
    film_mid: float  # L at the middle of the film curve
    film_width: float
    heel: float  # log-intensity change across the film along heel_axis
    heel_axis: int  # 0 rows, 1 columns
    noise: float  # quantum noise sd in air, log units, per pixel
    blur_mm: float  # detector/focal-spot blur (Gaussian sd)
    collimation_mm: tuple[float, float, float, float]  # left, top, right, bottom unexposed margins
    collimated_level: float  # stored fraction of full scale in the unexposed margins (MONOCHROME2)
    grid_period_px: float  # 0: no grid lines
    grid_amp: float
    markers: tuple[Marker, ...]


def sample_acquisition(rng: np.random.Generator, layout: FilmLayout) -> Acquisition:
    """Draw exposure, detector and storage settings for a film; markers and collimation avoid the knee ROIs."""
    u = rng.uniform
    width, height = layout.size_mm
    spacing = min(layout.spacing)
    tags_choice = rng.random()
    if tags_choice < 0.6:
        tags: tuple[str, ...] = ("ImagerPixelSpacing",)
    elif tags_choice < 0.8:
        tags = ("PixelSpacing",)
    else:
        tags = ("ImagerPixelSpacing", "PixelSpacing")
    xs = [layout.centres[s][0] for s in layout.sides]
    ys = [layout.centres[s][1] for s in layout.sides]
    margin_room = (min(xs) - 75.0, min(ys) - 85.0, width - max(xs) - 75.0, height - max(ys) - 85.0)
    collimation = tuple(
        float(np.clip(u(5.0, 45.0), 0.0, max(room, 0.0))) if rng.random() < 0.45 else 0.0 for room in margin_room
    )
    markers = _sample_markers(rng, layout, collimation)
    grid = rng.random() < 0.15
    return Acquisition(
        modality="DX" if rng.random() < 0.6 else "CR",
        photometric="MONOCHROME1" if rng.random() < 0.2 else "MONOCHROME2",
        bits_stored=int(rng.choice(_BITS, p=_BITS_P)),
        spacing_tags=tags,
        response="film" if rng.random() < 0.4 else "log",
        black=u(0.02, 0.15),
        gain=u(0.17, 0.24),
        film_mid=u(1.6, 2.2),
        film_width=u(0.6, 0.9),
        heel=float(rng.choice([-1.0, 1.0]) * u(0.02, 0.12)),
        heel_axis=int(rng.integers(2)),
        noise=u(0.008, 0.02) * float(np.sqrt(0.15 / spacing)),
        blur_mm=u(0.08, 0.25),
        collimation_mm=collimation,  # type: ignore[arg-type]
        collimated_level=u(0.85, 1.0),
        grid_period_px=u(2.2, 4.5) if grid else 0.0,
        grid_amp=u(0.004, 0.015) if grid else 0.0,
        markers=markers,
    )


def _sample_markers(rng: np.random.Generator, layout: FilmLayout, collimation: tuple[float, ...]) -> tuple[Marker, ...]:
    """Side letters above the outer side of each knee, and sometimes a line of positioning text near a corner."""
    width, height = layout.size_mm
    left, top, right, bottom = collimation
    markers = []
    for side in ("R", "L"):
        if rng.random() < 0.12:
            continue
        cx, cy = layout.centres[side]
        h = rng.uniform(10.0, 20.0)
        outward = -1.0 if side == "R" else 1.0
        x = cx + outward * rng.uniform(25.0, 70.0) - (0.0 if outward > 0 else 0.7 * h)
        y = cy - rng.uniform(90.0, 140.0)
        x = float(np.clip(x, left + 5.0, width - right - 5.0 - 0.8 * h))
        y = float(np.clip(y, top + h + 5.0, height - bottom - 5.0))
        if abs(y - cy) < 80.0:  # no room above the knee: put it below instead
            y = float(min(cy + rng.uniform(95.0, 130.0), height - bottom - 5.0))
        letter = Marker(side, x, y, float(h), bool(rng.random() < 0.3))
        if _clear_of_knees(letter, layout):
            markers.append(letter)
    if rng.random() < 0.5:
        text = str(rng.choice(_TEXTS))
        h = rng.uniform(5.0, 9.0)
        x = left + 8.0 if rng.random() < 0.5 else width - right - 8.0 - 0.75 * h * len(text)
        y = top + 8.0 + h if rng.random() < 0.5 else height - bottom - 8.0
        label = Marker(text, float(max(x, 2.0)), float(y), float(h), bool(rng.random() < 0.5))
        if _clear_of_knees(label, layout) and not any(_overlap(label, m) for m in markers):
            markers.append(label)
    return tuple(markers)


def _box(m: Marker) -> tuple[float, float, float, float]:
    """Approximate extent (x0, y0, x1, y1) of a marker's text in mm."""
    return m.x_mm, m.y_mm - m.height_mm, m.x_mm + 0.8 * m.height_mm * len(m.text), m.y_mm


def _clear_of_knees(m: Marker, layout: FilmLayout, half: float = 75.0) -> bool:
    """Whether a marker stays outside every knee's 140 mm ROI (plus a margin): labels never cover the joint."""
    x0, y0, x1, y1 = _box(m)
    for cx, cy in layout.centres.values():
        if x0 < cx + half and cx - half < x1 and y0 < cy + half and cy - half < y1:
            return False
    return True


def _overlap(a: Marker, b: Marker, margin: float = 5.0) -> bool:
    """Whether two markers' boxes (approximate text extents, mm) come closer than ``margin``."""

    ax0, ay0, ax1, ay1 = _box(a)
    bx0, by0, bx1, by1 = _box(b)
    return ax0 < bx1 + margin and bx0 < ax1 + margin and ay0 < by1 + margin and by0 < ay1 + margin


def expose(att: np.ndarray, acq: Acquisition, layout: FilmLayout, noise_seed: int) -> np.ndarray:
    """Stored pixel values (uint16, within ``bits_stored``) of a film whose log-attenuation is ``att`` (modified)."""
    rows, cols = att.shape
    full = float(2**acq.bits_stored - 1)
    # Heel effect: the tube output falls off smoothly towards the anode side.
    axis_len = rows if acq.heel_axis == 0 else cols
    ramp = np.linspace(-0.5, 0.5, axis_len, dtype=np.float32) * np.float32(acq.heel)
    if acq.heel_axis == 0:
        att += ramp[:, None]
    else:
        att += ramp[None, :]
    # Quantum noise, larger where fewer photons arrive.
    # (capped where the film saturates anyway, e.g. metal, so that the noise cannot pull it back into range)
    sd = np.minimum(att, np.float32(4.5))
    sd *= np.float32(0.5)
    cv2.exp(sd, sd)
    sd *= np.float32(acq.noise)
    noise = np.empty_like(att)
    cv2.setRNGSeed(int(noise_seed) & 0x7FFFFFFF)
    cv2.randn(noise, 0.0, 1.0)
    noise *= sd
    att += noise
    del sd, noise
    if acq.grid_period_px > 0:
        x = np.arange(cols, dtype=np.float32)
        att += (np.float32(acq.grid_amp) * np.sin(np.float32(2 * np.pi / acq.grid_period_px) * x))[None, :]
    # Detector response -> fraction of full scale.
    if acq.response == "film":
        att -= np.float32(acq.film_mid)
        att *= np.float32(1.0 / acq.film_width)
        np.tanh(att, out=att)
        att *= np.float32(0.46)
        att += np.float32(0.5)
    else:
        att *= np.float32(acq.gain)
        att += np.float32(acq.black)
    _collimate(att, acq, layout)
    np.clip(att, 0.0, 1.0, out=att)
    att *= np.float32(full)
    pixels = att.astype(np.uint16)
    _draw_markers(pixels, acq, layout, int(full))
    if acq.photometric == "MONOCHROME1":
        np.subtract(np.uint16(full), pixels, out=pixels)
    return pixels


def _collimate(frac: np.ndarray, acq: Acquisition, layout: FilmLayout) -> None:
    """Unexposed margins (collimator leaves) at the collimated level, with a ~1 mm penumbra."""
    left, top, right, bottom = acq.collimation_mm
    if not any(m > 0 for m in acq.collimation_mm):
        return
    row_mm, col_mm = layout.spacing
    rows, cols = frac.shape
    x = np.arange(cols) * col_mm
    y = np.arange(rows) * row_mm
    width, height = cols * col_mm, rows * row_mm
    pen = 0.8
    wx = _edge(x - left, pen) if left > 0 else np.ones(cols)
    if right > 0:
        wx = wx * _edge(width - right - x, pen)
    wy = _edge(y - top, pen) if top > 0 else np.ones(rows)
    if bottom > 0:
        wy = wy * _edge(height - bottom - y, pen)
    exposed = np.outer(wy.astype(np.float32), wx.astype(np.float32))
    level = np.float32(acq.collimated_level)
    # frac = frac * w + level * (1 - w)
    frac -= level
    frac *= exposed
    frac += level


def _edge(d: np.ndarray, width: float) -> np.ndarray:
    """0 outside (d < 0), 1 inside, smooth over ``width`` mm."""
    return 0.5 * (1.0 + np.tanh(d / width))


def _draw_markers(pixels: np.ndarray, acq: Acquisition, layout: FilmLayout, full: int) -> None:
    """Saturated text (lead letters or burnt-in labels), drawn anti-aliased in a uint8 patch and blended in."""
    row_mm, col_mm = layout.spacing
    px_mm = min(row_mm, col_mm)
    rows, cols = pixels.shape
    for m in acq.markers:
        font = cv2.FONT_HERSHEY_DUPLEX if len(m.text) == 1 else cv2.FONT_HERSHEY_SIMPLEX
        scale = (m.height_mm / px_mm) / 22.0
        thick = max(1, int(round(scale * (2.5 if len(m.text) == 1 else 1.6))))
        (tw, th), base = cv2.getTextSize(m.text, font, scale, thick)
        pad = int(0.3 * th) + thick
        x, y = int(round(m.x_mm / col_mm)), int(round(m.y_mm / row_mm))
        x0, y0 = max(x - pad, 0), max(y - th - pad, 0)
        x1, y1 = min(x + tw + pad, cols), min(y + base + pad, rows)
        if x1 <= x0 or y1 <= y0:
            continue
        ink = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.putText(ink, m.text, (x - x0, y - y0), font, scale, 255, thick, cv2.LINE_AA)
        region = pixels[y0:y1, x0:x1]
        if m.boxed:
            region[...] = 0
        alpha = ink.astype(np.float32) / 255.0
        region[...] = (region * (1.0 - alpha) + full * alpha).astype(np.uint16)
