"""The page in a real browser: headless Chromium (Debian's) driven by Playwright for Python.

Drags landmarks by known screen distances at several zooms on both knees, reloads, and checks the saved points in
original-image pixels to 0.5 px; keyboard navigation and accept. Skips with what to install when either is missing:
``apt-get install chromium`` and ``pip install playwright`` (no browser download: the system's Chromium is used).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from review_helpers import request, start_review, stop

from kneel.review.render import knee_view

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (uses the system Chromium)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium")


def spread_predictions(pred_dir: Path, cohort: Path) -> None:
    """Put each predicted knee on its film's true landmarks (random-weight models clump their 16 points into one
    spot, where a pointer could not pick one), written by kneel predict's own writer."""
    import pandas as pd

    from kneel.inference.outputs import OutputFolder

    truth = pd.read_csv(cohort / "ground_truth.csv", dtype={"file": str})
    outputs = OutputFolder(pred_dir)
    for prediction in list(outputs.iter_results()):
        for knee in prediction:
            rows = truth[(truth["file"] == prediction.file) & (truth["side"] == knee.side.value)]
            knee.landmarks_px = rows.sort_values("landmark")[["x_px", "y_px"]].to_numpy(dtype=np.float64)
            knee.centre_px = knee.landmarks_px[4].copy()  # the knee view opens centred on T4
        outputs.write_result(prediction)


@pytest.fixture
def page(pred_dir, cohort, tmp_path):
    spread_predictions(pred_dir, cohort)
    proc, url = start_review(pred_dir, tmp_path / "review.log")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url + "/")
        page.wait_for_selector("#knee-svg circle.landmark")
        page.kneel_url = url
        yield page
        browser.close()
    stop(proc)


def saved(url, film_id, side):
    return request(f"{url}/api/films/{quote(film_id)}")[1]["knee"][side]


def current_film(page) -> str:
    return page.eval_on_selector("#films li.current", "li => li.dataset.id")


def drag(page, k: int, dx: float, dy: float) -> tuple[float, float]:
    """Drag landmark ``k`` by (dx, dy) screen pixels; returns the motion in view pixels (SVG user units)."""
    dot = page.locator(f'#knee-svg circle.landmark[data-landmark="{k}"]')
    box = dot.bounding_box()
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    scale = page.eval_on_selector("#knee-svg", "svg => [svg.getScreenCTM().a, svg.getScreenCTM().d]")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + dx / 2, y0 + dy / 2, steps=3)
    page.mouse.move(x0 + dx, y0 + dy, steps=3)
    page.mouse.up()
    return dx / scale[0], dy / scale[1]


@pytest.mark.parametrize("zoom_key, mm", [("1", 0.1), ("3", 0.3), ("4", 0.5)])
def test_dragging_moves_the_landmark_by_the_distance_on_screen(page, zoom_key, mm):
    url = page.kneel_url
    page.keyboard.press(zoom_key)
    for side_index in range(2):  # the right knee, then (J) the left knee
        film_id = current_film(page)
        side = page.inner_text("#knee-title").split()[1]
        before = saved(url, film_id, side)
        spacing = request(f"{url}/api/films/{quote(film_id)}")[1]["spacing_mm"]
        start = np.array((before["review"] or {}).get("landmarks_px") or before["predicted_px"])
        # where the page draws the landmark: the picture's box on screen spans view pixels -0.5 .. size - 0.5
        view = knee_view(tuple(before["centre_px"]), tuple(spacing), mm, 560)
        picture = page.locator("#knee-svg image").bounding_box()
        u, v = view.to_view(start[3 + side_index])
        dot = page.locator(f'#knee-svg circle.landmark[data-landmark="{3 + side_index}"]').bounding_box()
        on_screen = (dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
        expected_screen = (picture["x"] + (u + 0.5) * picture["width"] / 560,
                           picture["y"] + (v + 0.5) * picture["height"] / 560)  # fmt: skip
        np.testing.assert_allclose(on_screen, expected_screen, atol=0.5)
        du, dv = drag(page, 3 + side_index, 37.0, -21.0)
        page.wait_for_function(
            f"document.getElementById('message').textContent.includes('version {before['version'] + 1}')"
        )
        page.reload()
        page.wait_for_selector("#knee-svg circle.landmark")
        after = saved(url, film_id, side)
        got = np.array(after["review"]["landmarks_px"])
        expected = start.copy()
        expected[3 + side_index] += (du * mm / spacing[1], dv * mm / spacing[0])  # view px -> mm -> image px
        np.testing.assert_allclose(got, expected, atol=0.5)
        assert after["review"]["status"] == "corrected" and after["review"]["moved"][3 + side_index]
        page.keyboard.press(zoom_key)
        if side_index == 0:
            page.keyboard.press("j")
            page.wait_for_function("document.getElementById('knee-title').textContent.startsWith('knee L')")


def test_keyboard_accept_flag_undo_and_screenshot(page, tmp_path):
    url = page.kneel_url
    film_id = current_film(page)
    page.keyboard.press("a")  # accept R, go to L
    page.wait_for_function("document.getElementById('knee-title').textContent.startsWith('knee L')")
    assert saved(url, film_id, "R")["review"]["status"] == "accepted"
    page.keyboard.press("f")
    page.wait_for_function("document.getElementById('knee-status').textContent.startsWith('flagged')")
    page.keyboard.press("u")
    page.wait_for_function("document.getElementById('knee-status').textContent.startsWith('unreviewed')")
    assert saved(url, film_id, "L")["review"]["status"] == "unreviewed"
    assert page.inner_text("#progress-text") == "1 / 4 knees reviewed"
    page.keyboard.press("x")  # the left knee is absent
    page.wait_for_function("document.getElementById('knee-status').textContent.startsWith('absent')")
    assert saved(url, film_id, "L")["review"]["landmarks_px"] is None
    assert page.inner_text("#progress-text") == "2 / 4 knees reviewed"
    page.select_option("#filter", "failed")
    assert page.eval_on_selector_all("#films li .name", "names => names.map(n => n.textContent)") == ["9999999.dcm"]
    page.select_option("#filter", "no_knee")  # absent knees count as no knee
    assert page.eval_on_selector_all("#films li", "items => items.map(i => i.dataset.id)") == [film_id]
    page.select_option("#filter", "all")
    page.keyboard.press("j")  # next film
    page.wait_for_function(f"document.querySelector('#films li.current').dataset.id !== {film_id!r}")
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('#films li.current').dataset.id === {film_id!r}")
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "review.png"))
    assert (tmp_path / "review.png").stat().st_size > 10_000


def drop_knees(pred_dir: Path, keep: dict[str, set[str]]) -> None:
    """Remove predicted knees (as if kneel had not found them): ``keep`` maps a film key to the sides it keeps."""
    from kneel.inference.outputs import OutputFolder

    outputs = OutputFolder(pred_dir)
    for prediction in list(outputs.iter_results()):
        if prediction.file in keep:
            prediction.knees = {s: k for s, k in prediction.knees.items() if s.value in keep[prediction.file]}
            outputs.write_result(prediction)


def test_adding_a_missing_knee_in_the_browser(pred_dir, cohort, tmp_path):
    """Knees kneel did not find, added by hand: on a film with only the right knee, the left one is the right knee
    mirrored about the film's centre line; on a film with no knee, the right knee is the published mean shape at the
    film's spacing, centred in its half. Saved in original-image pixels, kept over a reload."""
    spread_predictions(pred_dir, cohort)
    films = sorted(p.name for p in cohort.glob("*.dcm") if p.name != "9999999.dcm")
    one, none = films
    drop_knees(pred_dir, {one: {"R"}, none: set()})
    proc, url = start_review(pred_dir, tmp_path / "review.log")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url + "/")
            page.wait_for_selector("#films li")

            ids = {f["file"]: f["id"] for f in request(f"{url}/api/films")[1]["films"]}

            def open_film(file: str) -> dict:
                key = ids[file]
                page.click(f"#films li[data-id='{key}']")
                page.wait_for_function(f"document.querySelector('#films li.current').dataset.id === {key!r}")
                page.wait_for_function("!document.getElementById('add-knee').disabled")
                return request(f"{url}/api/films/{quote(key)}")[1]

            detail = open_film(one)
            rows, cols = detail["shape"]
            right = np.array(saved(url, ids[one], "R")["predicted_px"])
            page.click("#add-knee")
            page.wait_for_function("document.getElementById('knee-title').textContent.startsWith('knee L')")
            page.wait_for_function("document.getElementById('message').textContent.includes('version 1')")
            mirrored = np.column_stack([cols - 1 - right[:, 0], right[:, 1]])
            review = saved(url, ids[one], "L")["review"]
            assert review["status"] == "corrected"
            np.testing.assert_allclose(np.array(review["landmarks_px"]), mirrored, atol=0.5)
            page.reload()
            page.wait_for_selector("#films li")
            assert page.is_disabled("#add-knee") or open_film(one) is None  # both knees have landmarks now

            detail = open_film(none)
            rows, cols = detail["shape"]
            page.click("#add-knee")
            page.wait_for_function("document.getElementById('message').textContent.includes('version 1')")
            got = np.array(saved(url, ids[none], "R")["review"]["landmarks_px"])
            template = np.array(detail["template_mm"])
            row_mm, col_mm = detail["spacing_mm"]
            expected = np.column_stack(
                [(cols - 1) / 4 + template[:, 0] / col_mm, (rows - 1) / 2 + template[:, 1] / row_mm]
            )
            np.testing.assert_allclose(got, np.clip(expected, 0, [cols - 1, rows - 1]), atol=0.5)
            assert got[:, 0].max() < cols / 2  # in the right knee's half (the image's left)
            browser.close()
    finally:
        stop(proc)
