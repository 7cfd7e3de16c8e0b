"""The pictures' transform: a bright pixel at a known original point shows where the transform says, at every zoom,
on anisotropic pixels, for views of both knees and of the whole film; the page's geometry.js agrees exactly."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from kneel.review.app import static_dir
from kneel.review.render import film_view, knee_view, render_view

SHAPE = (900, 1300)


def dot_image(x: float, y: float, sigma: float = 4.0) -> np.ndarray:
    """A round Gaussian spot centred on original point (x, y): wide enough that every zoom samples it finely."""
    ys, xs = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    spot = 1000.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.where(spot > 1.0, spot, 0.0).astype(np.float32)


def brightest(picture: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre of the picture's bright spot, in view pixels (pixel centres at integers)."""
    v, u = np.nonzero(picture > 0)
    w = picture[v, u].astype(np.float64)
    return np.array([np.sum(u * w) / w.sum(), np.sum(v * w) / w.sum()])


@pytest.mark.parametrize("mm_per_px", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.15, 0.1)])
@pytest.mark.parametrize("dot, centre", [((296.0, 444.0), (290.0, 440.5)), ((1005.5, 458.25), (1010.25, 460.0))])
def test_a_point_shows_where_the_knee_view_puts_it(mm_per_px, spacing, dot, centre):
    view = knee_view(centre, spacing, mm_per_px, 128)
    picture = render_view(dot_image(*dot), view, low=0.0, high=100.0)
    expected = view.to_view(np.array(dot, dtype=np.float64))
    tolerance = 0.05  # view pixels; the 8-bit picture floors the values
    np.testing.assert_allclose(brightest(picture), expected, atol=tolerance)
    np.testing.assert_allclose(view.to_image(expected), dot, atol=1e-9)


def test_the_view_centre_is_the_centre_point_and_edges_line_up():
    view = knee_view((100.0, 200.0), (0.2, 0.1), 0.3, 512)
    np.testing.assert_allclose(view.to_view(np.array([100.0, 200.0])), [255.5, 255.5])
    film = film_view(SHAPE, 650)  # scale 0.5
    np.testing.assert_allclose(film.to_view(np.array([[-0.5, -0.5], [1299.5, 899.5]])), [[-0.5, -0.5], [649.5, 449.5]])
    assert (film.width, film.height) == (650, 450)
    picture = render_view(dot_image(600, 400), film, 0, 100)
    np.testing.assert_allclose(brightest(picture), film.to_view(np.array([600.0, 400.0])), atol=0.3)


def test_outside_the_image_is_black_and_windowing_uses_the_pixels_shown():
    image = np.tile(np.linspace(0, 100, SHAPE[1], dtype=np.float32), (SHAPE[0], 1))
    view = knee_view((0.0, 0.0), (0.1, 0.1), 0.1, 64)  # centred on the top-left pixel: 3/4 of the view is outside
    picture = render_view(image, view, low=0.0, high=100.0)
    assert picture[:31, :].max() == 0 and picture[:, :31].max() == 0
    assert picture[40:, 40:].max() == 255  # the brightest pixel shown is white, not the image's brightest


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed: the page's geometry.js is untested")
def test_the_page_computes_the_same_transforms():
    cases = [
        ((100.25, 2000.5), (0.1, 0.1), 0.3, 560),
        ((3000.0, 1700.0), (0.15, 0.1), 0.1, 512),
        ((5, 5), (0.2, 0.143), 0.5, 256),
    ]
    script = f"""
    const g = require({json.dumps(str(static_dir() / "geometry.js"))});
    const out = [];
    for (const [c, s, mm, size] of {json.dumps(cases)}) {{
      const v = g.kneeView(c[0], c[1], s, mm, size);
      out.push([v.sx, v.sy, v.tx, v.ty, v.width, v.height, ...g.toView(v, 17.3, 1234.5), ...g.toImage(v, 3.5, 400.25)]);
    }}
    const f = g.filmView([3493, 4210], 1200);
    out.push([f.sx, f.sy, f.tx, f.ty, f.width, f.height, ...g.toView(f, 17.3, 1234.5), ...g.toImage(f, 3.5, 400.25)]);
    console.log(JSON.stringify(out));
    """
    result = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    views = [knee_view(c, s, mm, size) for c, s, mm, size in cases] + [film_view((3493, 4210), 1200)]
    for js, view in zip(result, views, strict=True):
        python = [view.sx, view.sy, view.tx, view.ty, view.width, view.height, *view.to_view(np.array([17.3, 1234.5])),
                  *view.to_image(np.array([3.5, 400.25]))]  # fmt: skip
        np.testing.assert_allclose(js, python, rtol=1e-12, atol=1e-9)
