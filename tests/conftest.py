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


@pytest.fixture(scope="session")
def full_demo(tmp_path_factory):
    """The default ``kneel demo`` (as ``make demo`` runs it), once per test session: about 20 minutes on 2 cores (tests
    that may run it first carry a 3600 s timeout).

    Its trained tiny fold models are the project's evidence that training works, and they serve the end-to-end
    inference test. ``KNEEL_DEMO_DIR`` points at an existing demo folder to reuse it (finished steps are reused).
    """
    import io
    import os

    from kneel.demo import DemoSettings, run_demo

    out = Path(os.environ.get("KNEEL_DEMO_DIR") or tmp_path_factory.mktemp("full_demo"))
    threads = torch.get_num_threads()
    try:
        return run_demo(out, DemoSettings(), progress=False, stream=io.StringIO())
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_model(request) -> Path:
    """A model directory with trained tiny models: ``KNEEL_TINY_MODEL`` when it points at one (trained with
    ``configs/tiny_lc.yaml`` and ``configs/tiny_hc.yaml`` or better), else the default demo's (``full_demo``)."""
    import os

    model = os.environ.get("KNEEL_TINY_MODEL")
    if model and (Path(model) / "hc").is_dir() and (Path(model) / "lc").is_dir():
        return Path(model)
    return Path(request.getfixturevalue("full_demo").report_html.parent / "model")
