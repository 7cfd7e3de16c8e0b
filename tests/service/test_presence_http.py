"""Both HTTP endpoints of a real ``kneel serve`` (trained tiny models, presence decision on): no landmarks for files
without a knee, the reference's ``{"R": null, "L": null}`` on its endpoint, an explicit status on ``/v1``."""

import base64
from pathlib import Path

import httpx
import pydicom
import pytest


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data, a dev dependency)")
    return Path(path)


@pytest.fixture(scope="module")
def http_cases(tmp_path_factory) -> dict[str, Path]:
    """Files without a knee (a CT slice as it is; generated negatives and the distal-tibia CR film with DX tags and a
    spacing, so only the image can tell) and held-out synthetic films with knees."""
    from kneel.synth import generate_cohort
    from kneel.synth.negatives import write_negatives, write_single_knee_films

    root = tmp_path_factory.mktemp("http_cases")
    write_negatives(root / "neg", n_per_kind=1, seed=1, kinds=("noise", "shin", "natural"))
    tibia = pydicom.dcmread(_pydicom_file("RG3_UNCI.dcm"))
    tibia.Modality, tibia.ImagerPixelSpacing = "DX", [0.2, 0.2]
    del tibia.BodyPartExamined
    tibia.save_as(root / "tibia.dcm")
    generate_cohort(root / "films", n=1, seed=4, layout="flat", split="test", single_knee_fraction=0.0, workers=1,
                    progress=False)  # fmt: skip
    write_single_knee_films(root / "single", n=1, seed=5, laterality_fraction=1.0)
    return {
        "ct": _pydicom_file("CT_small.dcm"),
        "noise": root / "neg" / "noise_0.dcm",
        "shin": root / "neg" / "shin_0.dcm",
        "natural": next((root / "neg").glob("natural_0_*.dcm")),
        "tibia": root / "tibia.dcm",
        "bilateral": next((root / "films").glob("*.dcm")),
        "single": root / "single" / "000.dcm",
    }


@pytest.mark.slow
@pytest.mark.timeout(3600)  # may train the default demo first (trained_server)
@pytest.mark.parametrize("case", ["ct", "noise", "shin", "natural", "tibia"])
def test_no_knee_gives_no_landmarks_on_both_endpoints(trained_server, http_cases, case):
    payload = {"dicom": _b64(http_cases[case])}
    reference = httpx.post(f"{trained_server}/kneel/predict/bilateral", json=payload, timeout=120)
    assert reference.status_code == 200, reference.text
    assert reference.json() == {"R": None, "L": None}
    assert reference.headers["X-Kneel-Status"] == "no_knee" and reference.headers["X-Kneel-Reason"]
    v1 = httpx.post(f"{trained_server}/v1/predict", json={**payload, "knees": "auto"}, timeout=120).json()
    assert v1["status"] == "no_knee" and v1["knees"] == {} and v1["reason"]
    assert all(entry["status"] == "no_knee" for entry in v1["presence"].values())
    if case == "ct":
        assert "Modality CT" in v1["reason"] and v1["refusal"] == v1["reason"]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # may train the default demo first (trained_server)
def test_knees_are_kept_and_force_overrides(trained_server, http_cases):
    payload = {"dicom": _b64(http_cases["bilateral"])}
    reference = httpx.post(f"{trained_server}/kneel/predict/bilateral", json=payload, timeout=120)
    assert reference.headers["X-Kneel-Status"] == "ok"
    assert all(len(reference.json()[side]) == 16 for side in ("R", "L"))
    single = httpx.post(f"{trained_server}/v1/predict", json={"dicom": _b64(http_cases["single"])}, timeout=120).json()
    assert single["status"] == "ok" and len(single["knees"]) == 1 and single["image"]["film"] == "single"
    forced = {"dicom": _b64(http_cases["ct"]), "force": True}
    body = httpx.post(f"{trained_server}/v1/predict", json=forced, timeout=120).json()
    assert body["status"] == "ok" and len(body["knees"]) == 1  # an 85 mm CT slice, forced: a single-knee film
