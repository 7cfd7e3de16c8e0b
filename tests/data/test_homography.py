"""kneel.geometry.Homography and warp_perspective (added for augmentation): exact algebra, image and points agree."""

from __future__ import annotations

import numpy as np
import pytest
from landmark_dots import dot_image, find_dot

from kneel.geometry import Affine, Homography, warp, warp_perspective


def test_inverse_composition_and_centre():
    h = Homography.perspective(1e-3, -5e-4, (40, 30)).then(Affine.rotation(20, (40, 30)))
    pts = np.random.default_rng(0).uniform(0, 80, (50, 2))
    np.testing.assert_allclose(h.inverse().apply(h.apply(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(Homography.perspective(1e-3, 2e-3, (40, 30)).apply(np.array([40.0, 30.0])), [40, 30])
    a = Affine.rotation(33, (5, 7)).then(Affine.scaling(0.5))
    assert Homography.from_affine(a).is_affine
    np.testing.assert_allclose(Homography.from_affine(a).to_affine().matrix, a.matrix)
    with pytest.raises(ValueError):
        h.to_affine()


def test_warp_perspective_moves_dot_like_points():
    h = Homography.perspective(2e-3, 1e-3, (50, 50)).then(Affine.rotation(15, (50, 50)))
    for p in ([30.0, 40.0], [65.0, 55.0], [50.0, 70.0]):
        p = np.array(p)
        out = warp_perspective(dot_image(100, 100, p[None], sigma=2.0), h, (110, 110))
        np.testing.assert_allclose(find_dot(out, near=h.apply(p)), h.apply(p), atol=0.05)


def test_affine_case_equals_warp():
    img = dot_image(60, 80, np.array([[20.0, 30.0], [50.0, 10.0]]), sigma=3.0)
    a = Affine.rotation(10, (40, 30)).then(Affine.scaling(0.6))
    np.testing.assert_allclose(warp_perspective(img, a, (40, 50)), warp(img, a, (40, 50)), atol=1e-4)
    sx, sy = Homography.from_affine(a).local_scale((0, 0))
    assert sx == pytest.approx(0.6) and sy == pytest.approx(0.6)
