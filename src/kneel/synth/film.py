"""One synthetic bilateral film: plan it (layout, shapes, anatomy, acquisition), then render its pixels.

Planning draws everything from one random generator, so a film is a pure function of ``(seed, index)`` and the
cohort options. Rendering draws each knee on its own knee-frame canvas (at ~0.2-0.3 mm, cheaper than the film's
0.1-0.2 mm pixels and finer than any feature that matters), maps it into the film with its pose
(``kneel.geometry``), and exposes the sum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from kneel.geometry import Affine, warp
from kneel.synth.acquisition import Acquisition, expose, sample_acquisition
from kneel.synth.anatomy import KneeAnatomy, KneeCanvas, render_knee, sample_anatomy
from kneel.synth.placement import FilmLayout, PlacedKnee, sample_layout, snap_knee
from kneel.synth.shapes import SourceKnee, Split, sample_shape, source_pool

__all__ = ["FilmPlan", "plan_film", "render_film", "canvas_resolution"]

_CANVAS_U = (-115.0, 115.0)
_CANVAS_V = (-360.0, 360.0)


@dataclass(frozen=True)
class FilmPlan:
    """Everything needed to render one film, and its ground truth."""

    layout: FilmLayout
    knees: tuple[PlacedKnee, ...]
    anatomies: tuple[KneeAnatomy, ...]
    sources: tuple[SourceKnee, ...]
    acquisition: Acquisition
    noise_seed: int

    @property
    def annotated(self) -> tuple[tuple[PlacedKnee, SourceKnee], ...]:
        """The knees with ground truth (a knee replaced by an implant has no anatomical landmarks)."""
        return tuple((k, s) for k, a, s in zip(self.knees, self.anatomies, self.sources, strict=True) if not a.implant)

    @property
    def implants(self) -> tuple[str, ...]:
        """Sides whose knee is a total knee replacement."""
        return tuple(k.side for k, a in zip(self.knees, self.anatomies, strict=True) if a.implant)


def plan_film(
    rng: np.random.Generator,
    split: Split = "all",
    single_knee: bool = False,
    anisotropic_probability: float = 0.03,
    implant_probability: float = 0.0,
) -> FilmPlan:
    """Draw a film: layout, a real source shape per knee (from ``split``'s subjects), its anatomy and acquisition.

    With ``implant_probability`` one knee of a bilateral film may be a total knee replacement (rendered, but without
    ground truth).
    """
    layout = sample_layout(rng, single_knee=single_knee, anisotropic_probability=anisotropic_probability)
    pool = source_pool(split)
    knees, anatomies, sources = [], [], []
    for side in layout.sides:
        source = pool[int(rng.integers(len(pool)))]
        shape = sample_shape(source, rng, split)
        placed = snap_knee(shape, side, source.kl, layout.centres[side], layout.angles[side], layout.spacing)
        knees.append(placed)
        anatomies.append(sample_anatomy(placed.shape_mm, source.kl, rng))
        sources.append(source)
    if implant_probability > 0 and len(anatomies) == 2 and rng.random() < implant_probability:
        which = int(rng.integers(2))
        anatomies[which] = dataclasses.replace(anatomies[which], implant=True)
    acquisition = sample_acquisition(rng, layout)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return FilmPlan(layout, tuple(knees), tuple(anatomies), tuple(sources), acquisition, noise_seed)


def canvas_resolution(spacing: tuple[float, float]) -> float:
    """Knee-canvas pixel size (mm) for a film: fine enough to stay sharp after mapping to ``spacing``."""
    return float(np.clip(1.7 * min(spacing), 0.2, 0.3))


def render_film(plan: FilmPlan) -> np.ndarray:
    """The film's stored pixel values (uint16 within ``bits_stored``; bone bright unless MONOCHROME1)."""
    layout = plan.layout
    att = np.zeros((layout.rows, layout.cols), dtype=np.float32)
    res = canvas_resolution(layout.spacing)
    for knee, anatomy in zip(plan.knees, plan.anatomies, strict=True):
        _add_knee(att, knee, anatomy, plan, res)
    return expose(att, plan.acquisition, layout, plan.noise_seed)


def _add_knee(att: np.ndarray, knee: PlacedKnee, anatomy: KneeAnatomy, plan: FilmPlan, res: float) -> None:
    layout = plan.layout
    row_mm, col_mm = layout.spacing
    to_knee = knee.pose.inverse()
    # The part of the knee frame the film shows (plus a margin), within the canvas limits.
    corners = np.array([[-1, -1], [layout.cols, -1], [-1, layout.rows], [layout.cols, layout.rows]], float)
    corners_knee = to_knee.apply(corners * np.array([col_mm, row_mm]))
    u_lo, v_lo = np.maximum(corners_knee.min(axis=0) - 2.0, (_CANVAS_U[0], _CANVAS_V[0]))
    u_hi, v_hi = np.minimum(corners_knee.max(axis=0) + 2.0, (_CANVAS_U[1], _CANVAS_V[1]))
    if u_hi <= u_lo or v_hi <= v_lo:
        return
    canvas = KneeCanvas(
        float(u_lo), float(v_lo), res, int(np.ceil((v_hi - v_lo) / res)) + 1, int(np.ceil((u_hi - u_lo) / res)) + 1
    )
    medial_limit = np.inf
    others = [k for k in plan.knees if k is not knee]
    if others:
        other_centre = others[0].pose.apply(np.zeros((1, 2)))
        medial_limit = float(abs(to_knee.apply(other_centre)[0, 0])) / 2.0
    image = render_knee(anatomy, canvas, medial_limit)
    sigma = plan.acquisition.blur_mm / res
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    canvas_to_film = (
        Affine.scaling(res)
        .then(Affine.translation(canvas.u0, canvas.v0))
        .then(knee.pose)
        .then(Affine.scaling(1.0 / col_mm, 1.0 / row_mm))
    )
    box = canvas_to_film.apply(
        np.array(
            [[-0.5, -0.5], [canvas.cols - 0.5, -0.5], [-0.5, canvas.rows - 0.5], [canvas.cols - 0.5, canvas.rows - 0.5]]
        )
    )
    x0, y0 = np.maximum(np.floor(box.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(box.max(axis=0)).astype(int) + 1, (layout.cols, layout.rows))
    if x1 <= x0 or y1 <= y0:
        return
    patch = warp(image, canvas_to_film.then(Affine.translation(-x0, -y0)), (y1 - y0, x1 - x0), antialias=True)
    att[y0:y1, x0:x1] += patch
