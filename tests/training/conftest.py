"""Fixtures of the training tests: one small synthetic cohort, prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kneel synth`` (8 OAI-layout films) then ``kneel prepare`` (4 folds): ``DATA/{lc,hc}`` + ``folds.csv``."""
    from kneel.data.prepare import prepare_datasets
    from kneel.synth.cohort import generate_cohort

    root = tmp_path_factory.mktemp("cohort")
    generate_cohort(root / "films", 8, seed=5, layout="oai", workers=1, progress=False)
    prepare_datasets(root / "films" / "annotations.csv", root / "data", oai=root / "films", folds=4, progress=False)
    return root / "data"


@pytest.fixture(scope="session")
def tiny_lc() -> Path:
    return CONFIGS / "tiny_lc.yaml"


@pytest.fixture(scope="session")
def tiny_hc() -> Path:
    return CONFIGS / "tiny_hc.yaml"


@pytest.fixture(scope="session")
def fast() -> list[str]:
    """Overrides that keep a test run to a few seconds on two cores."""
    return ["epochs=1", "folds=2", "batch_size=4", "tensorboard=false"]
