"""kneel review as a real server on 127.0.0.1, spoken to with real HTTP requests (urllib)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import tomllib
from review_helpers import request, start_review, stop

from kneel.review.app import static_dir
from kneel.review.render import knee_view

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(predicted, tmp_path_factory):
    """One server for the tests that each touch their own knee (starting one costs seconds: torch is imported)."""
    import shutil

    root = tmp_path_factory.mktemp("shared_review")
    pred = Path(shutil.copytree(predicted, root / "pred", ignore=shutil.ignore_patterns("review")))
    proc, url = start_review(pred, root / "review.log")
    yield url
    stop(proc)


def first_knee(url, index=0):
    films = request(url + "/api/films")[1]["films"]
    film = sorted((f for f in films if f["status"] == "ok"), key=lambda f: f["file"])[index]
    return film, request(f"{url}/api/films/{quote(film['id'])}")[1]


def put(url, film, side, body, **kwargs):
    return request(f"{url}/api/films/{quote(film['id'])}/knees/{side}", "PUT", body, **kwargs)


def test_the_page_and_the_film_list(server):
    status, page, _ = request(server + "/")
    assert status == 200 and b'src="/static/review.js"' in page and b'src="/static/geometry.js"' in page
    for name in ("review.js", "geometry.js", "review.css"):
        assert request(f"{server}/static/{name}")[1] == (static_dir() / name).read_bytes()
    listing = request(server + "/api/films")[1]
    films = listing["films"]
    assert [f["status"] for f in films] == ["ok", "ok", "failed"]  # the broken file last, with its reason
    assert films[-1]["file"] == "9999999.dcm" and films[-1]["reason"]
    radii = [max(k["max_uncertainty_mm"] for k in f["knees"]) for f in films[:2]]
    assert all(k["quality"] == "uncertain" for f in films[:2] for k in f["knees"]) and radii == sorted(radii)[::-1]
    assert listing["progress"]["total"] == 4


def test_a_moved_landmark_is_saved_and_survives_a_killed_server(pred_dir, tmp_path):
    proc, url = start_review(pred_dir, tmp_path / "log1")
    try:
        film, detail = first_knee(url)
        xy = np.array(detail["knee"]["L"]["predicted_px"])
        xy[3] += (12.25, -7.5)
        status, saved, _ = put(url, film, "L", {"base_version": 0, "status": "corrected", "landmarks_px": xy.tolist()})
        assert status == 200 and saved["version"] == 1 and saved["review"]["status"] == "corrected"
        assert saved["review"]["moved"] == [k == 3 for k in range(16)] and saved["progress"]["reviewed"] == 1
    finally:
        proc.kill()  # SIGKILL: no clean shutdown
        proc.wait()
    proc, url = start_review(pred_dir, tmp_path / "log2")
    try:
        knee = request(f"{url}/api/films/{quote(film['id'])}")[1]["knee"]["L"]
        assert knee["version"] == 1 and knee["review"]["status"] == "corrected"
        assert np.array_equal(np.array(knee["review"]["landmarks_px"]), xy)  # exact
        assert request(url + "/api/films")[1]["progress"]["reviewed"] == 1
    finally:
        stop(proc)


def test_two_tabs_cannot_overwrite_each_other(server):
    film, detail = first_knee(server, 1)
    pred = detail["knee"]["R"]["predicted_px"]
    assert put(server, film, "R", {"base_version": 0, "status": "accepted", "landmarks_px": pred})[0] == 200
    status, body, _ = put(server, film, "R", {"base_version": 0, "status": "flagged", "landmarks_px": pred})
    assert status == 409
    assert "changed elsewhere (another tab or window)" in body["detail"] and "reload the knee" in body["detail"]
    assert body["current"]["status"] == "accepted" and body["current"]["version"] == 1
    assert put(server, film, "R", {"base_version": 1, "status": "flagged", "landmarks_px": pred})[1]["version"] == 2


def test_malformed_requests_are_refused(server):
    film, detail = first_knee(server)
    rows, cols = detail["shape"]
    pred = detail["knee"]["R"]["predicted_px"]
    off = [p[:] for p in pred]
    off[7] = [cols + 3.0, 10.0]
    cases = [
        ({"base_version": 0, "status": "accepted", "landmarks_px": off}, 422, "landmark 7 at"),
        ({"base_version": 0, "status": "accepted", "landmarks_px": pred[:15]}, 422, "16 [x, y] pairs"),
        ({"base_version": 0, "status": "approved", "landmarks_px": pred}, 422, "status"),
        ({"base_version": -1, "status": "accepted", "landmarks_px": pred}, 422, "base_version"),
        ({"base_version": 0, "status": "accepted", "landmarks_px": pred, "extra": 1}, 422, "extra"),
    ]
    for body, code, text in cases:
        status, answer, _ = put(server, film, "R", body)
        assert status == code and text in json.dumps(answer), (body, answer)
    nan = json.dumps({"base_version": 0, "status": "accepted", "landmarks_px": pred}).replace(str(pred[2][0]), "NaN")
    status, answer, _ = put(server, film, "R", None, raw=nan.encode())
    assert status == 422 and "finite" in json.dumps(answer)
    assert put(server, film, "X", {"base_version": 0, "status": "accepted", "landmarks_px": pred})[0] == 404
    assert put(server, {"id": "nope"}, "R", {"base_version": 0, "status": "accepted", "landmarks_px": pred})[0] == 404
    failed = {"id": request(server + "/api/films")[1]["films"][-1]["id"]}
    assert put(server, failed, "R", {"base_version": 0, "status": "accepted", "landmarks_px": pred})[0] == 422
    assert request(f"{server}/api/films/{quote(film['id'])}")[1]["knee"]["R"]["version"] == 0  # nothing saved


def test_only_the_folders_images_are_served(server):
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/api/films/..%2Fresults/film.png",
                 "/api/films/%2Fetc%2Fpasswd/film.png", "/api/films/..%2F..%2Fetc%2Fpasswd"):  # fmt: skip
        assert request(server + path)[0] == 404, path
    assert request(server + "/api/health", headers={"Host": "attacker.example"})[0] == 400  # DNS rebinding


def test_pictures_carry_their_transform(server):
    film, detail = first_knee(server)
    cx, cy = detail["knee"]["L"]["centre_px"]
    status, png, headers = request(f"{server}/api/films/{quote(film['id'])}/knee.png?cx={cx}&cy={cy}&mm=0.2&size=300")
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert status == 200 and picture.shape == (300, 300) and picture.dtype == np.uint8 and picture.std() > 5
    view = json.loads(headers["x-kneel-view"])
    assert view == knee_view((cx, cy), tuple(detail["spacing_mm"]), 0.2, 300).to_dict()
    status, png, headers = request(f"{server}/api/films/{quote(film['id'])}/film.png?max_side=500")
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    view = json.loads(headers["x-kneel-view"])
    assert max(picture.shape) == 500 and picture.shape == (view["height"], view["width"])
    for query in ("cx=nan&cy=1", f"cx={cx}&cy={cy}&mm=0", f"cx={cx}&cy={cy}&low=60&high=40", "cx=1e9&cy=1"):
        assert request(f"{server}/api/films/{quote(film['id'])}/knee.png?{query}")[0] == 422, query


def test_uncertain_knees_first_and_ground_truth_when_given(pred_dir, cohort, tmp_path):
    import pandas as pd

    from kneel.inference.outputs import OutputFolder

    outputs = OutputFolder(pred_dir)
    calm = next(outputs.iter_results())  # make this film's knees confident: it must go after the other one
    for knee in calm:
        knee.uncertainty_mm = np.full(16, 0.1)
    outputs.write_result(calm)
    proc, url = start_review(pred_dir, tmp_path / "log", "--gt", str(cohort / "ground_truth.csv"))
    try:
        films = request(url + "/api/films")[1]["films"]
        detail = request(f"{url}/api/films/{quote(films[0]['id'])}")[1]
    finally:
        stop(proc)
    assert [f["file"] for f in films][1:] == [calm.file, "9999999.dcm"]
    assert {k["quality"] for k in films[1]["knees"]} == {"ok"}
    truth = pd.read_csv(cohort / "ground_truth.csv", dtype={"file": str})
    rows = truth[(truth["file"] == films[0]["file"]) & (truth["side"] == "R")].sort_values("landmark")
    assert np.array_equal(np.array(detail["knee"]["R"]["truth_px"]), rows[["x_px", "y_px"]].to_numpy())


def test_the_static_files_ship_in_the_wheel():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kneel"]
    package = ROOT / "src" / "kneel"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert {"index.html", "review.js", "geometry.js", "review.css"} <= {p.name for p in shipped}
    assert all(p in shipped for p in static_dir().iterdir() if p.is_file())
