"""Real HTTP requests to a real ``kneel serve`` process: both endpoints, health, docs, every kind of bad input."""

import base64
import warnings

import httpx
import numpy as np
import pytest

from kneel.inference import Predictor


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_health_and_docs(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["settings"]["hc_folds"] == 2
    spec = httpx.get(f"{server}/openapi.json").json()
    assert {"/kneel/predict/bilateral", "/v1/predict", "/health"} <= set(spec["paths"])
    assert httpx.get(f"{server}/docs").status_code == 200


def test_bilateral_endpoint_matches_the_library(server, service_model, dicoms):
    response = httpx.post(f"{server}/kneel/predict/bilateral", json={"dicom": _b64(dicoms["bilateral"])}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"R", "L"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = Predictor(service_model, knees="both", force=True).predict(dicoms["bilateral"])
    for side in ("R", "L"):
        points = np.asarray(body[side])
        assert points.shape == (16, 2) and points.dtype.kind == "i"
        np.testing.assert_allclose(points, np.round(local[side].landmarks_px), atol=1)
    assert response.headers["X-Kneel-Status"] == "ok"


def test_a_request_can_turn_the_presence_decision_back_on(server, dicoms):
    """The server runs with --force; "force": false asks for the presence decision, which random weights fail."""
    payload = {"dicom": _b64(dicoms["bilateral"]), "force": False}
    response = httpx.post(f"{server}/kneel/predict/bilateral", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"R": None, "L": None}  # the reference's answer when it finds nothing
    assert response.headers["X-Kneel-Status"] == "no_knee" and "knee" in response.headers["X-Kneel-Reason"]
    body = httpx.post(f"{server}/v1/predict", json=payload, timeout=60).json()
    assert body["status"] == "no_knee" and body["knees"] == {} and body["missing"] == ["R", "L"]
    assert {s: v["status"] for s, v in body["presence"].items()} == {"R": "no_knee", "L": "no_knee"}


def test_v1_reports_mm_uncertainty_quality_and_missing_knees(server, dicoms):
    payload = {"dicom": _b64(dicoms["missing_left"]), "knees": "R"}
    response = httpx.post(f"{server}/v1/predict", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["missing"] == ["L"] and list(body["presence"]) == ["R"]
    knee = body["knees"]["R"]
    px, mm = np.asarray(knee["landmarks_px"]), np.asarray(knee["landmarks_mm"])
    np.testing.assert_allclose(mm, px * 0.5)
    assert len(knee["uncertainty_mm"]) == 16 and knee["quality"] in ("ok", "uncertain")
    assert body["image"]["spacing_mm"] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"dicom": "not base64 !!"}, 400, "base64"),
        ({"dicom": ""}, 400, "empty"),
        ({"dicom": base64.b64encode(b"hello, I am plain text and not an image").decode()}, 415, "DICOM"),
        ({"image": "abc"}, 422, ""),
        ({"dicom": 42}, 422, ""),
        ([1, 2, 3], 422, ""),
    ],
)
def test_bad_requests_get_clear_4xx(server, payload, status, words):
    response = httpx.post(f"{server}/kneel/predict/bilateral", json=payload, timeout=30)
    assert response.status_code == status, response.text
    assert words.lower() in response.text.lower()


def test_unusable_dicoms_get_422(server, dicoms, tmp_path):
    response = httpx.post(f"{server}/v1/predict", json={"dicom": _b64(dicoms["no_spacing"])}, timeout=30)
    assert response.status_code == 422 and "spacing" in response.json()["detail"].lower()
    # the service takes no spacing override: the message must not tell an HTTP client to pass a flag or argument
    assert "pass" not in response.json()["detail"] and "--spacing" not in response.json()["detail"]
    truncated = dicoms["bilateral"].read_bytes()[:5000]
    response = httpx.post(f"{server}/v1/predict", json={"dicom": base64.b64encode(truncated).decode()}, timeout=30)
    assert response.status_code == 422, response.text


def test_size_limit_and_garbage_never_kill_the_server(server):
    limit = httpx.get(f"{server}/health").json()["max_request_bytes"]
    assert limit == 2 * 1024 * 1024  # --max-request-mb 2
    big = "A" * (limit + 10)
    response = httpx.post(f"{server}/kneel/predict/bilateral", json={"dicom": big}, timeout=30)
    assert response.status_code == 413
    garbage = httpx.post(f"{server}/v1/predict", content=b"\x00\xff{{{", headers={"content-type": "application/json"})
    assert 400 <= garbage.status_code < 500
    chunked = httpx.post(f"{server}/v1/predict", content=iter([b"x" * 1024 * 1024] * 3), timeout=30)
    assert chunked.status_code == 413
    assert httpx.get(f"{server}/health").status_code == 200


def test_v1_measurements_when_asked(server, dicoms):
    """``"measurements": true`` adds each knee's measurements; their values are those of the returned landmarks."""
    from kneel.measure.definitions import measure_knees

    payload = {"dicom": _b64(dicoms["missing_left"]), "knees": "R"}
    plain = httpx.post(f"{server}/v1/predict", json=payload, timeout=60).json()
    assert "measurements" not in plain
    body = httpx.post(f"{server}/v1/predict", json={**payload, "measurements": True}, timeout=60).json()
    assert set(body["measurements"]) == {"R"}
    points = np.asarray(body["knees"]["R"]["landmarks_px"])[None]
    expected = measure_knees(points, np.asarray([body["image"]["spacing_mm"]]), ["R"])
    got = body["measurements"]["R"]
    for name, values in expected.items():
        value = got[name]["value"]
        if np.isfinite(values[0]):
            assert value == pytest.approx(float(values[0]), rel=1e-6, abs=1e-9), name
