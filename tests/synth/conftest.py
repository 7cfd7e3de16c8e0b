"""Small synthetic cohorts shared by the generator's tests (generated once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kneel.synth import CohortSummary, generate_cohort


@pytest.fixture(scope="session")
def flat_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    """Four films (the second one single-knee), flat layout, rendered in this process."""
    out: Path = tmp_path_factory.mktemp("synth_flat")
    return generate_cohort(out, 4, seed=1, layout="flat", single_knee_fraction=0.25, workers=1, progress=False)


@pytest.fixture(scope="session")
def oai_cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortSummary:
    out: Path = tmp_path_factory.mktemp("synth_oai")
    return generate_cohort(out, 3, seed=5, layout="oai", workers=1, progress=False)
