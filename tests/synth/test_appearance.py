"""Rendered films look the right way round: bone brighter than soft tissue brighter than air, after reading."""

from __future__ import annotations

import numpy as np
import pytest

from kneel.synth.cohort import film_rng
from kneel.synth.film import plan_film, render_film


def _bone_bright(plan, pixels: np.ndarray) -> np.ndarray:
    img = pixels.astype(np.float32)
    if plan.acquisition.photometric == "MONOCHROME1":
        img = float(2**plan.acquisition.bits_stored - 1) - img
    return img


def _median_at(img: np.ndarray, plan, knee, u: float, v: float) -> float:
    """Median of a 3 mm square around knee-frame point (u, v) mm."""
    row_mm, col_mm = plan.layout.spacing
    x_mm, y_mm = knee.pose.apply(np.array([[u, v]]))[0]
    x, y = int(round(x_mm / col_mm)), int(round(y_mm / row_mm))
    h = max(1, int(1.5 / row_mm))
    return float(np.median(img[y - h : y + h + 1, x - h : x + h + 1]))


@pytest.mark.parametrize("index", range(3))
def test_bone_soft_tissue_air_ordering(index: int) -> None:
    plan = plan_film(film_rng(3, index, "all"), "all")
    img = _bone_bright(plan, render_film(plan))
    row_mm, col_mm = plan.layout.spacing
    for knee, anatomy in zip(plan.knees, plan.anatomies, strict=True):
        tibia = _median_at(img, plan, knee, 0.0, 15.0)  # tibial epiphysis below the spines
        shaft = _median_at(img, plan, knee, 0.0, 45.0)
        soft = _median_at(img, plan, knee, -40.0, -60.0)  # beside the femoral metaphysis, inside the thigh
        assert tibia > soft and shaft > soft, (index, knee.side)
        # Air outside the leg at knee level, where the film was exposed (not collimated) and inside the film.
        outward = -1.0 if knee.side == "R" else 1.0
        x_mm = knee.pose.apply(np.zeros((1, 2)))[0, 0] + outward * (anatomy.soft_half + 25.0)
        left, _, right, _ = plan.acquisition.collimation_mm
        width = plan.layout.cols * col_mm
        if left + 5 < x_mm < width - right - 5:
            air = _median_at(img, plan, knee, -(anatomy.soft_half + 25.0) - anatomy.soft_offset, 0.0)
            assert soft > air, (index, knee.side)
