"""A real ``kneel serve`` process on a free localhost port, with a tiny random-weight model.

Random weights find no knee, so this server runs with ``--force`` (the presence decision is tested with trained
models in ``test_presence.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))

from inference_helpers import knee_film, make_model_dir, write_dicom  # noqa: E402

from kneel.landmarks import KneeSide  # noqa: E402
from kneel.service.process import start_server, stop_server  # noqa: E402

MAX_REQUEST_MB = 2.0


@pytest.fixture(scope="session")
def service_model(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("service_model"), seed=3)


def _serve(model: Path, log: Path, *extra: str, max_mb: float = MAX_REQUEST_MB):
    """Start ``kneel serve`` on a free port; yield its base URL; stop it afterwards."""
    proc, url = start_server(model, log, "--max-request-mb", str(max_mb), *extra)
    yield url
    stop_server(proc)


@pytest.fixture(scope="session")
def server(service_model, tmp_path_factory):
    """Base URL of a running server with random weights and ``--force``; stopped after the session."""
    yield from _serve(service_model, tmp_path_factory.mktemp("server") / "server.log", "--force")


@pytest.fixture(scope="module")
def busy_server(service_model, tmp_path_factory):
    """A server that takes one request at work and one waiting: the third at once is answered 503."""
    log = tmp_path_factory.mktemp("busy_server") / "server.log"
    yield from _serve(service_model, log, "--force", "--max-active", "1", "--max-queue", "1", max_mb=16.0)


@pytest.fixture(scope="session")
def trained_server(trained_model, tmp_path_factory):
    """Base URL of a running server with trained tiny models and the presence decision on."""
    yield from _serve(trained_model, tmp_path_factory.mktemp("trained_server") / "server.log", max_mb=64.0)


@pytest.fixture(scope="session")
def dicoms(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service_dicoms")
    return {
        "bilateral": write_dicom(root / "bilateral.dcm", knee_film()),
        "missing_left": write_dicom(root / "missing_left.dcm", knee_film(knees=((KneeSide.R, (200, 420)),))),
        "no_spacing": write_dicom(root / "no_spacing.dcm", knee_film(), spacing=None),
        "tiny_spacing": write_dicom(root / "tiny_spacing.dcm", knee_film(), spacing=(1e-6, 1e-6)),
    }
