"""Landmarks lie on visible bone contours: the image gradient is much stronger at them than 3-5 mm away."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from kneel.io import read_radiograph

MIN_RATIO = 1.5
"""Required per-knee ratio (mean gradient at the 16 landmarks / mean gradient 3-5 mm away). Reached: mean 3.64 (min
2.70) on this 7-knee cohort; mean 3.66 (per-knee min 2.25) on a 78-knee cohort (seed 21)."""


def gradient_ratio(image: np.ndarray, spacing: tuple[float, float], points: np.ndarray, rng: np.random.Generator):
    """Mean gradient magnitude at ``points`` over mean at random points 3-5 mm away (20 per landmark)."""
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [1.0, 99.5])
    img = ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)
    row_mm, col_mm = spacing
    smooth = cv2.GaussianBlur(img, (0, 0), sigmaX=0.3 / col_mm, sigmaY=0.3 / row_mm)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / (8 * col_mm)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / (8 * row_mm)
    magnitude = np.hypot(gx, gy)

    def sample(p: np.ndarray) -> np.ndarray:
        x = p[:, 0].astype(np.float32).reshape(1, -1)
        y = p[:, 1].astype(np.float32).reshape(1, -1)
        return cv2.remap(magnitude, x, y, cv2.INTER_LINEAR)[0]

    at = sample(points)
    angle = rng.uniform(0, 2 * np.pi, (len(points), 20))
    radius_mm = rng.uniform(3.0, 5.0, (len(points), 20))
    offsets = np.stack([np.cos(angle) * radius_mm / col_mm, np.sin(angle) * radius_mm / row_mm], axis=-1)
    away = sample((points[:, None, :] + offsets).reshape(-1, 2))
    return float(at.mean() / away.mean()), at, away.reshape(len(points), -1).mean(axis=1)


def test_gradient_is_higher_at_landmarks_on_every_knee(flat_cohort) -> None:
    gt = pd.read_csv(flat_cohort.out / "ground_truth.csv")
    rng = np.random.default_rng(0)
    ratios = []
    for (file, side), knee in gt.groupby(["file", "side"]):
        rg = read_radiograph(flat_cohort.out / file)
        points = knee.sort_values("landmark")[["x_px", "y_px"]].to_numpy()
        ratio, _, _ = gradient_ratio(rg.image, rg.spacing, points, rng)
        ratios.append(ratio)
        assert ratio > MIN_RATIO, f"{file} {side}: gradient ratio {ratio:.2f}"
    assert len(ratios) == flat_cohort.n_knees
    assert np.mean(ratios) > 2.5


def test_anisotropic_spacing_keeps_landmarks_on_contours() -> None:
    """Columns and rows with different spacing: contours still pass through the ground truth (no axis mix-up)."""
    from kneel.synth.cohort import film_rng
    from kneel.synth.film import plan_film, render_film

    rng = np.random.default_rng(1)
    plan = plan_film(film_rng(10, 0, "all"), "all", anisotropic_probability=1.0)
    row_mm, col_mm = plan.layout.spacing
    assert abs(col_mm / row_mm - 1.0) > 0.02  # a mix-up of the axes would move the left knee by ~8 mm
    image = render_film(plan).astype(np.float32)
    for knee in plan.knees:
        ratio, _, _ = gradient_ratio(image, plan.layout.spacing, knee.original_px, rng)
        assert ratio > MIN_RATIO
