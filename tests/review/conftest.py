"""Fixtures for the review tests: one real ``kneel predict`` folder of synthetic films, copied for each test."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))

from inference_helpers import make_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def predicted(tmp_path_factory) -> Path:
    """Two synthetic films (flat layout: ``<subject_id>.dcm``) and a broken file, predicted by tiny random-weight
    models (``force``: landmarks on every film; plumbing, not accuracy). Returns the prediction folder; the cohort
    (with ``ground_truth.csv``) is beside it as ``cohort``."""
    from kneel.inference import predict_files
    from kneel.synth import generate_cohort

    root = tmp_path_factory.mktemp("review_base")
    cohort = root / "cohort"
    generate_cohort(cohort, 2, seed=3, layout="flat", split="test", workers=1, progress=False)
    (cohort / "9999999.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"broken" * 10)
    model = make_model_dir(root / "model")
    predict_files([cohort], model, root / "pred", workers=0, progress=False, force=True)
    return root / "pred"


@pytest.fixture
def pred_dir(predicted: Path, tmp_path: Path) -> Path:
    """A fresh copy of the prediction folder (no review yet); the images stay where ``kneel predict`` read them."""
    return Path(shutil.copytree(predicted, tmp_path / "pred", ignore=shutil.ignore_patterns("review")))


@pytest.fixture
def cohort(predicted: Path) -> Path:
    return predicted.parent / "cohort"
