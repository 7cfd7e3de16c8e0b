"""Fixtures of the training tests: one tiny prepared-data folder per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_data import make_prepared_data  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DATA/{lc,hc}`` + ``folds.csv`` in the layout of ``kneel prepare``: 8 subjects (16 knees), 4 folds."""
    return make_prepared_data(tmp_path_factory.mktemp("data"), n_subjects=8, n_folds=4, seed=1)


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
