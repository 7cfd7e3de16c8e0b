"""Fixtures for inference tests: a tiny random-weight model directory and a few DICOM films."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from inference_helpers import knee_film, make_model_dir, write_dicom  # noqa: E402

from kneel.landmarks import KneeSide  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def films(tmp_path_factory) -> dict[str, Path]:
    """Bilateral, anisotropic bilateral, one-knee-missing, single-knee (tagged L) films; a broken file."""
    root = tmp_path_factory.mktemp("films")
    aniso = knee_film(shape=(840, 1000), spacing=(0.5, 0.4), knees=((KneeSide.R, (250, 420)), (KneeSide.L, (750, 400))))
    single = knee_film(shape=(500, 400), knees=((KneeSide.L, (200, 250)),))
    out = {
        "bilateral": write_dicom(root / "a" / "bilateral.dcm", knee_film()),
        "aniso": write_dicom(root / "a" / "aniso", aniso, spacing=(0.5, 0.4)),
        "missing_left": write_dicom(root / "b" / "missing_left.dcm", knee_film(knees=((KneeSide.R, (200, 420)),))),
        "single_left": write_dicom(root / "b" / "single.dcm", single, laterality="L"),
    }
    broken = root / "b" / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    out["broken"] = broken
    return out
