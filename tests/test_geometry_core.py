"""Affine transforms: exact inverses, pixel-centre convention, images and points moving together."""

import cv2
import numpy as np
import pytest

from kneel.geometry import Affine, resample_transform, roi_transform, warp


def _dot_image(h: int, w: int, x: float, y: float, sigma: float = 0.0) -> np.ndarray:
    """A single bright pixel, or a smooth Gaussian blob of ``sigma`` px centred at (x, y)."""
    if sigma == 0.0:
        img = np.zeros((h, w), np.float32)
        img[int(y), int(x)] = 1.0
        return img
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def _peak(img: np.ndarray) -> np.ndarray:
    """Sub-pixel peak position (x, y) by the intensity centroid around the maximum."""
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    r = 8
    y0, y1 = max(iy - r, 0), min(iy + r + 1, img.shape[0])
    x0, x1 = max(ix - r, 0), min(ix + r + 1, img.shape[1])
    win = img[y0:y1, x0:x1].astype(np.float64)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(xs * win).sum() / win.sum(), (ys * win).sum() / win.sum()])


def test_compose_and_inverse_are_exact():
    t = Affine.rotation(17, (30, 40)).then(Affine.scaling(0.3, 0.7)).then(Affine.translation(5, -3))
    pts = np.random.default_rng(0).uniform(-500, 500, (100, 2))
    np.testing.assert_allclose(t.inverse().apply(t.apply(pts)), pts, atol=1e-9)


def test_mirror_matches_cv2_flip():
    import cv2

    img = _dot_image(20, 31, 4, 7)
    flipped = cv2.flip(img, 1)
    np.testing.assert_allclose(Affine.mirror_x(31).apply(np.array([4.0, 7.0])), _peak(flipped))


def test_resample_keeps_pixel_edges():
    t = resample_transform((0.15, 0.1), 0.3)
    np.testing.assert_allclose(t.apply(np.array([-0.5, -0.5])), [-0.5, -0.5])
    # 10 columns at 0.1 mm = 1 mm = 3.33 px at 0.3 mm: the right edge of column 9 (x = 9.5) maps to 10/3 - 0.5.
    np.testing.assert_allclose(t.apply(np.array([9.5, 19.5])), [10 / 3 - 0.5, 20 / 2 - 0.5], atol=1e-9)


@pytest.mark.parametrize("mirror", [False, True])
def test_roi_centre_lands_on_pixel_233(mirror):
    t = roi_transform((1200.4, 900.2), (0.14, 0.16), 466, 0.3, mirror=mirror)
    np.testing.assert_allclose(t.apply(np.array([1200.4, 900.2])), [232.0 if mirror else 233.0, 233.0], atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 12.0, -33.0])
def test_dot_follows_the_transform(angle):
    img = _dot_image(200, 240, 150, 60, sigma=2.0)
    t = Affine.rotation(angle, (120, 100)).then(Affine.translation(7.25, -3.5))
    out = warp(img, t, (200, 240), antialias=False)
    np.testing.assert_allclose(_peak(out), t.apply(np.array([150.0, 60.0])), atol=0.05)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize(("sigma_x", "sigma_y"), [(2.83, 2.83), (0.5, 3.1), (1e-3, 1.7)])
def test_gaussian_blur_float32_equals_opencv_on_a_float_copy(dtype, sigma_x, sigma_y):
    """The anti-aliasing blur filters integer images straight to float32: same values as GaussianBlur of a copy."""
    from kneel.geometry import gaussian_blur_float32

    top = 255 if dtype == np.uint8 else 4095
    image = np.random.default_rng(3).integers(0, top + 1, size=(97, 131)).astype(dtype)
    expected = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    got = gaussian_blur_float32(image, sigma_x, sigma_y)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * top)
