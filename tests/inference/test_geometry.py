"""Stage geometry without any network: points pushed forward and decoded come back exactly; images follow points."""

import numpy as np
import pytest

from kneel.geometry import warp
from kneel.inference.geometry import (
    StageGeometry,
    decode,
    from_network_px,
    hc_transform,
    lc_transform,
    pad_crop_transform,
    warp_window,
)
from kneel.inference.reference_geometry import (
    reference_hc_decode,
    reference_hc_transform,
    reference_lc_decode,
    reference_lc_transform,
)
from kneel.landmarks import KneeSide

LC = StageGeometry(spacing_mm=1.0, pad=520, crop=450)
HC = StageGeometry(spacing_mm=0.3, pad=520, crop=450, roi_size_mm=140.0)
TINY_HC = StageGeometry(spacing_mm=0.3 * 450 / 128, pad=148, crop=128, roi_size_mm=140.0)

SPACINGS = [(0.15, 0.15), (0.1, 0.2), (0.2, 0.12)]  # square and anisotropic (row_mm, col_mm)


def _blob(shape, xy, sigma):
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (200.0 * np.exp(-((xs - xy[0]) ** 2 + (ys - xy[1]) ** 2) / (2 * sigma**2))).astype(np.float32)


def _peak(img):
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    r = 6
    y0, y1 = max(iy - r, 0), min(iy + r + 1, img.shape[0])
    x0, x1 = max(ix - r, 0), min(ix + r + 1, img.shape[1])
    win = img[y0:y1, x0:x1].astype(np.float64)
    win = np.clip(win - 0.2 * win.max(), 0, None)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(xs * win).sum() / win.sum(), (ys * win).sum() / win.sum()])


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("half", [KneeSide.R, KneeSide.L, None])
def test_lc_points_round_trip(spacing, half):
    shape = (2800, 2300)
    t = lc_transform(shape, spacing, half, LC)
    rng = np.random.default_rng(1)
    pts = rng.uniform([0, 0], [shape[1] - 1, shape[0] - 1], (50, 2))
    predicted = from_network_px(t.apply(pts), LC.crop)  # pretend the network predicted these
    np.testing.assert_allclose(decode(predicted, t, LC.crop), pts, atol=1e-3)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("side", [KneeSide.R, KneeSide.L])
@pytest.mark.parametrize("centre", [(1200.3, 1500.7), (3.0, 2.0), (2290.0, 2790.5), (-40.0, 1000.0)])
@pytest.mark.parametrize("geom", [HC, TINY_HC])
def test_hc_points_round_trip_anywhere(spacing, side, centre, geom):
    """Knees near (and beyond) the border: padding lives in the transform, so nothing is ever truncated."""
    t = hc_transform(centre, spacing, side, geom)
    offsets = np.random.default_rng(2).uniform(-60, 60, (40, 2)) / np.array([spacing[1], spacing[0]])
    pts = np.asarray(centre) + offsets
    predicted = from_network_px(t.apply(pts), geom.crop)
    np.testing.assert_allclose(decode(predicted, t, geom.crop), pts, atol=1e-3)


def test_hc_centre_and_mirror():
    """T4 at the ROI centre lands on ROI pixel 233 (-8 after pad/crop); the left ROI is mirrored."""
    c = np.array([1000.0, 800.0])
    right = hc_transform(c, (0.15, 0.15), KneeSide.R, HC)
    left = hc_transform(c, (0.15, 0.15), KneeSide.L, HC)
    np.testing.assert_allclose(right.apply(c), [233 - 8, 233 - 8])
    np.testing.assert_allclose(left.apply(c), [465 - 233 - 8, 233 - 8])
    lateral = c + [-100.0, 0.0]  # image-left of the centre
    assert right.apply(lateral)[0] < right.apply(c)[0]
    assert left.apply(lateral)[0] > left.apply(c)[0]


@pytest.mark.parametrize("size_hw", [(430, 188), (466, 466), (600, 300), (131, 17)])
def test_pad_crop_is_the_reference_pad_then_centre_crop(size_hw):
    """The translation equals padding to 520 (centred, zeros, floor) then cropping the centre 450 with numpy."""
    h, w = size_hw
    img = np.random.default_rng(3).uniform(1, 255, (h, w)).astype(np.float32)
    ph, pw = max(520, h), max(520, w)
    top, left = max(520 - h, 0) // 2, max(520 - w, 0) // 2
    padded = np.zeros((ph, pw), np.float32)
    padded[top : top + h, left : left + w] = img
    y0, x0 = (ph - 450) // 2, (pw - 450) // 2
    expected = padded[y0 : y0 + 450, x0 : x0 + 450]
    got = warp(img, pad_crop_transform((h, w), 520, 450), (450, 450), antialias=False)
    np.testing.assert_array_equal(got, expected)


def test_pad_crop_matches_training_data_geometry():
    """Inference and dataset preparation frame the network input the same way."""
    transforms = pytest.importorskip("kneel.data.transforms")
    for w, h in [(188, 430), (466, 466), (133, 133), (600, 300)]:
        theirs, _ = transforms.pad_crop((w, h), 520, 450)
        np.testing.assert_allclose(pad_crop_transform((h, w), 520, 450).matrix, theirs.matrix)


@pytest.mark.parametrize("spacing", [(0.15, 0.15), (0.1, 0.2)])
@pytest.mark.parametrize("side", [KneeSide.R, KneeSide.L])
def test_image_follows_points_through_hc_warp(spacing, side):
    """A blob drawn at a point appears in the network input where the transform sends the point."""
    shape = (1400, 900)
    point = np.array([120.0, 700.0]) if side is KneeSide.R else np.array([760.0, 690.0])
    img = _blob(shape, point, sigma=3.0 / spacing[1])
    centre = point + np.array([30.0, -20.0])
    t = hc_transform(centre, spacing, side, HC)
    out = warp_window(img, t, (450, 450))
    np.testing.assert_allclose(_peak(out), t.apply(point), atol=0.15)


@pytest.mark.parametrize("half", [KneeSide.R, KneeSide.L])
def test_image_follows_points_through_lc_warp(half):
    spacing = (0.14, 0.16)
    shape = (3000, 2400)
    point = np.array([600.0, 1500.0]) if half is KneeSide.R else np.array([1800.0, 1400.0])
    img = _blob(shape, point, sigma=25.0)
    t = lc_transform(shape, spacing, half, LC)
    out = warp_window(img, t, (450, 450))
    np.testing.assert_allclose(_peak(out), t.apply(point), atol=0.15)


def test_warp_window_equals_full_warp():
    img = np.random.default_rng(4).uniform(0, 255, (900, 700)).astype(np.float32)
    t = hc_transform((350.0, 420.0), (0.15, 0.15), KneeSide.L, HC)
    full = warp(img, t, (450, 450))
    part = warp_window(img, t, (450, 450))
    assert np.abs(full - part).max() < 0.05


# --------------------------------------------------------------------------------------------------------------
# --reference-geometry: the reference's mapping without the fix (reference §8 item 1)


@pytest.mark.parametrize("side", [KneeSide.R, KneeSide.L])
def test_reference_hc_stretches_about_the_roi_centre(side):
    """Decoded with the reference's formula, offsets from the ROI centre grow by 466/450 ~ 1.036 (§8 item 1)."""
    spacing = (0.15, 0.15)
    centre = np.array([1100.0, 900.0])
    t = reference_hc_transform(centre, spacing, side, HC)
    offsets_mm = np.array([[-45.0, 0.0], [45.0, 0.0], [0.0, -20.0], [0.0, 20.0], [30.0, 10.0], [-35.0, 15.0]])
    pts = centre + offsets_mm / 0.15
    ref = reference_hc_decode(from_network_px(t.apply(pts), HC.crop), centre, spacing, side, HC)
    exact = decode(from_network_px(t.apply(pts), HC.crop), t, HC.crop)
    np.testing.assert_allclose(exact, pts, atol=1e-3)  # the same input decoded exactly is right
    # Least-squares stretch of the reference's decoded offsets about the ROI centre.
    d_true = (pts - centre).reshape(-1)
    d_ref = (ref - centre).reshape(-1)
    axis = np.tile([[1.0, 0.0], [0.0, 1.0]], (len(pts), 1))  # one constant shift per axis (rounding of r, n)
    (slope, *_shift), *_ = np.linalg.lstsq(np.column_stack([d_true, axis]), d_ref, rcond=None)
    assert slope == pytest.approx(466 / 450, abs=0.003)
    # ~1.4-1.6 mm at 45 mm from the centre, as §8 item 1 predicts for T0/F9 and T8/F15.
    err_mm = np.abs(ref[:2, 0] - pts[:2, 0]) * 0.15
    assert np.all((err_mm > 1.2) & (err_mm < 2.0))


def test_reference_lc_shrinks_offsets_from_the_half_centre():
    """The reference scales LC offsets from the half-image centre by (half width in mm)/450 in x (§8 item 1)."""
    spacing = (0.15, 0.15)
    shape = (2800, 2500)  # 420 x 375 mm film; each half 187.5 mm wide
    half_w_px = 1250
    t = reference_lc_transform(shape, spacing, KneeSide.R, LC)
    xs = np.array([400.0, 625.0, 850.0])
    pts = np.stack([xs, np.full(3, 1400.0)], axis=1)
    ref = reference_lc_decode(from_network_px(t.apply(pts), LC.crop), shape, KneeSide.R)
    slope = (ref[2, 0] - ref[0, 0]) / (xs[2] - xs[0])
    assert slope == pytest.approx(half_w_px * 0.15 / 450, abs=0.01)  # ~0.42
    exact = decode(from_network_px(lc_transform(shape, spacing, KneeSide.R, LC).apply(pts), LC.crop),
                   lc_transform(shape, spacing, KneeSide.R, LC), LC.crop)  # fmt: skip
    np.testing.assert_allclose(exact, pts, atol=1e-3)
