"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Two cores are all CI has; tests run with small tensors, so one thread avoids oversubscription.
torch.set_num_threads(1)


def _find_shared() -> Path:
    for candidate in (ROOT.parent / "shared", ROOT / "shared"):
        if (candidate / "reference").is_dir():
            return candidate
    raise FileNotFoundError(f"shared/ folder not found beside {ROOT}; it holds the reference fixtures")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared/ folder (reference spec, parity fixtures, published annotations)."""
    return _find_shared()


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "parity"


@pytest.fixture(scope="session")
def annotations_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "annotations"
