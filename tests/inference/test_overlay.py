"""Overlays of ``kneel predict --overlays``: uncertain knees carry their calibrated radius circles, ok knees none.

The overlays are written by :meth:`kneel.inference.outputs.OutputFolder.write_overlay` (what the engine calls) and read
back from the PNG. Pixels are anisotropic (0.15 mm rows, 0.1 mm columns) and the film is shrunk to 1024 pixels, so
the circle of a landmark is an ellipse whose half-axes are worked out here by hand from the millimetres.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kneel.inference.outputs import OutputFolder
from kneel.inference.results import KneePrediction, RadiographPrediction
from kneel.landmarks import KneeSide

ROWS, COLUMNS = 1500, 3000
ROW_MM, COL_MM = 0.15, 0.1
SCALE = 1024 / COLUMNS
BIG_MM = 8.0  # the uncertain knee's landmark 4: over the 5 mm flag radius


def _landmarks(x0: float) -> np.ndarray:
    """16 landmarks 400 px apart in x (136 overlay pixels: circles of neighbours do not meet), in two rows."""
    xs = x0 + 400.0 * (np.arange(16) % 4)
    ys = 700.0 + 250.0 * (np.arange(16) // 4)
    return np.stack([xs, ys], axis=1)


def _knee(side: KneeSide, x0: float, radii: np.ndarray, coverage: float | None, flag: float | None) -> KneePrediction:
    pts = _landmarks(x0)
    return KneePrediction(
        side=side,
        landmarks_px=pts,
        spacing=(ROW_MM, COL_MM),
        uncertainty_mm=radii,
        centre_px=pts[4] + np.array([0.0, -120.0]),
        lc_centre_px=pts[4],
        uncertainty_coverage=coverage,
        flag_radius_mm=flag,
    )


def _film(knees: dict[KneeSide, KneePrediction], key: str) -> RadiographPrediction:
    return RadiographPrediction(key, key, (ROWS, COLUMNS), (ROW_MM, COL_MM), "test", None, "bilateral", knees=knees)


def _write(tmp_path: Path, prediction: RadiographPrediction) -> np.ndarray:
    image = np.full((ROWS, COLUMNS), 90, np.uint8)  # a flat grey film: any magenta pixel was drawn
    path = OutputFolder(tmp_path).write_overlay(prediction, image)
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == (round(ROWS * SCALE), 1024)
    return picture


def _magenta(picture: np.ndarray) -> np.ndarray:
    b, g, r = (picture[..., i].astype(int) for i in range(3))
    return (b - g > 60) & (r - g > 60) & (np.abs(b - r) < 40)


def _window(mask: np.ndarray, centre: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) of the mask's pixels within ``half`` overlay pixels of ``centre`` (original pixels)."""
    cx, cy = (centre + 0.5) * SCALE - 0.5
    ys, xs = np.nonzero(mask)
    near = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    return xs[near] - cx, ys[near] - cy


def _r_ok_l_uncertain() -> RadiographPrediction:
    ok = _knee(KneeSide.R, 300.0, np.full(16, 1.5), 0.9, 5.0)  # calibrated, all radii under the flag: ok
    radii = np.full(16, 1.5)
    radii[4] = BIG_MM
    uncertain = _knee(KneeSide.L, 1700.0, radii, 0.9, 5.0)
    assert ok.quality == "ok" and uncertain.quality == "uncertain"
    return _film({KneeSide.R: ok, KneeSide.L: uncertain}, "a.dcm")


def test_uncertain_knee_gets_ellipses_of_its_radius_ok_knee_none(tmp_path: Path) -> None:
    prediction = _r_ok_l_uncertain()
    magenta = _magenta(_write(tmp_path, prediction))
    # the uncertain knee's landmark 4: an ellipse of half-axes 8 mm / 0.1 mm and 8 mm / 0.15 mm, times the scale
    ax, ay = BIG_MM / COL_MM * SCALE, BIG_MM / ROW_MM * SCALE  # 27.3 and 18.2 overlay pixels
    dx, dy = _window(magenta, prediction["L"].landmarks_px[4], 45)
    assert dx.size > 0.8 * 2 * np.pi * ay, dx.size  # a whole ring of pixels, not a few
    distance = np.hypot(dx / ax, dy / ay)
    assert np.all(np.abs(distance - 1) < 0.12), (distance.min(), distance.max())
    assert dx.max() > ax - 2 and dx.min() < -ax + 2 and dy.max() > ay - 2 and dy.min() < -ay + 2
    # its other landmarks (1.5 mm: 5.1 x 3.4 pixels, just outside their dots) are circled too
    dx, dy = _window(magenta, prediction["L"].landmarks_px[1], 12)
    assert dx.size > 0
    # the ok knee: no magenta anywhere near it
    for point in prediction["R"].landmarks_px:
        assert _window(magenta, point, 30)[0].size == 0


def test_legend_names_the_circle_only_when_one_is_drawn(tmp_path: Path) -> None:
    magenta = _magenta(_write(tmp_path, _r_ok_l_uncertain()))
    corner = magenta[:140, :460]  # the legend, top left: its ring swatch is magenta
    assert corner.any()

    ok = _knee(KneeSide.R, 300.0, np.full(16, 1.5), 0.9, 5.0)
    picture = _write(tmp_path / "ok", _film({KneeSide.R: ok}, "b.dcm"))
    assert not _magenta(picture).any()  # no circle, no ring in the legend
    legend = picture[:60, :300]
    assert (legend.min(axis=2) > 200).sum() > 50  # light legend text on the darkened box
    assert (picture[:60, :300] < 60).all(axis=2).mean() > 0.3  # the box is darkened (the film is grey 90)


def test_uncalibrated_uncertain_knee_gets_no_circles(tmp_path: Path) -> None:
    """Without calibration uncertainty_mm is a fold spread: no stated coverage, so no circle claims one."""
    radii = np.full(16, 3.0)  # over the fold-spread rule's 2.5 mm
    knee = _knee(KneeSide.L, 1700.0, radii, None, None)
    assert knee.quality == "uncertain"
    picture = _write(tmp_path, _film({KneeSide.L: knee}, "c.dcm"))
    assert not _magenta(picture).any()
    # the knee is drawn in the uncertain colour (orange: blue low, red high)
    cx, cy = (knee.landmarks_px[5] + 0.5) * SCALE - 0.5
    b, g, r = picture[int(round(cy)), int(round(cx))].astype(int)
    assert r > 200 and b < 60 and 100 < g < 180


def test_tiny_and_elongated_films_keep_their_shape(tmp_path: Path) -> None:
    """Legend and circles are clipped to the picture, however small or thin (a 2 x 5000 strip, a 5000 x 1 line)."""
    radii = np.full(16, BIG_MM)
    for shape in ((2, 5000), (5000, 1), (40, 60)):
        knee = _knee(KneeSide.R, 0.0, radii, 0.9, 5.0)
        knee.landmarks_px, knee.spacing = np.full((16, 2), 1.0), (0.1, 0.1)
        prediction = _film({KneeSide.R: knee}, f"{shape}")
        path = OutputFolder(tmp_path).write_overlay(prediction, np.full(shape, 90, np.uint8))
        picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
        expected = (
            max(1, round(shape[0] * min(1, 1024 / max(shape)))),
            max(1, round(shape[1] * min(1, 1024 / max(shape)))),
        )
        assert picture.shape[:2] == expected


def test_uncertain_knee_without_a_radius_gets_no_circle_and_no_circle_legend(tmp_path: Path) -> None:
    """A calibration whose signals were not recorded leaves uncertainty_mm NaN: flagged, but nothing to circle."""
    knee = _knee(KneeSide.L, 1700.0, np.full(16, np.nan), 0.9, 5.0)
    assert knee.quality == "uncertain"
    assert not _magenta(_write(tmp_path, _film({KneeSide.L: knee}, "d.dcm"))).any()
