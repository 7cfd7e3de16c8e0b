"""The service under hostile or clumsy clients: any content type, NaN, huge wrong values, many clients at once."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from inference_helpers import knee_film, write_dicom

ENDPOINTS = ("/kneel/predict/bilateral", "/v1/predict")


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_bilateral_reads_json_whatever_the_content_type(server, dicoms, content_type):
    # DeepKnee's Node broker posts the reference endpoint's JSON as a form; Flask's get_json(force=True) took it
    body = json.dumps({"dicom": _b64(dicoms["bilateral"])}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = httpx.post(f"{server}/kneel/predict/bilateral", content=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text[:500]
    reference = httpx.post(f"{server}/kneel/predict/bilateral", json={"dicom": _b64(dicoms["bilateral"])}, timeout=120)
    assert response.json() == reference.json() and response.json()["R"] is not None


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("/kneel/predict/bilateral", '{"dicom": NaN}'),
        ("/v1/predict", '{"dicom": NaN}'),
        ("/v1/predict", '{"dicom": "AAAA", "knees": NaN}'),
        ("/v1/predict", '{"dicom": "AAAA", "knees": -Infinity}'),
        ("/v1/predict", '{"dicom": "AAAA", "knees": Infinity}'),
    ],
)
def test_nan_and_infinity_are_not_json(server, path, text):
    response = httpx.post(f"{server}{path}", content=text, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["detail"] and "is not JSON" in response.json()["detail"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_422_does_not_echo_the_request(server, path):
    payload = {"dicom": ["A" * 1_000_000], "knees": "sideways"}  # wrong types; 1 MB that must not come back
    response = httpx.post(f"{server}{path}", json=payload, timeout=60)
    assert response.status_code == 422
    assert len(response.content) < 2000
    assert {tuple(e["loc"]) for e in response.json()["detail"]} >= {("body", "dicom")}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_implausible_spacing_is_a_422_not_a_500(server, dicoms, path):
    response = httpx.post(f"{server}{path}", json={"dicom": _b64(dicoms["tiny_spacing"])}, timeout=60)
    assert response.status_code == 422, response.text
    assert "1e-06 mm per pixel is implausibly small" in response.json()["detail"]


def test_error_statuses_are_in_the_openapi_schema(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    for path in ENDPOINTS:
        operation = spec["paths"][path]["post"]
        assert {"400", "413", "415", "422", "503"} <= set(operation["responses"]), path
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert "dicom" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]


def test_a_full_queue_answers_503_with_retry_after(busy_server, tmp_path):
    # one request at work, one waiting: of eight sent at once, some must be turned away, and quickly
    film = write_dicom(tmp_path / "big.dcm", knee_film(shape=(1680, 1600), spacing=(0.25, 0.25)), spacing=(0.25, 0.25))
    payload = {"dicom": _b64(film)}

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{busy_server}/v1/predict", json=payload, timeout=300)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1 and "busy" in response.json()["detail"]
    health = httpx.get(f"{busy_server}/health").json()
    assert (health["max_active"], health["max_queue"]) == (1, 1)
    assert post(0).status_code == 200  # once the crowd is gone, the server serves again


def test_serve_without_the_extra_names_it(tmp_path):
    # sys.modules[name] = None is how Python marks a module as not importable: the 'serve' extra is "not installed"
    code = "import sys; sys.modules['fastapi'] = None; from kneel.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "serve", "--model", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "kneel serve: error: kneel serve needs fastapi: pip install 'kneel[serve]'"
