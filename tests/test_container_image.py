"""The CPU container image, built and run here: ``docker/ci_build_and_test.sh`` (also ``make container-test``).

It builds a local Debian base with debootstrap (no registry is reachable in CI), builds ``docker/Dockerfile`` on it
with podman, serves a tiny model from the container and checks both endpoints and ``kneel predict`` in the container
against ``kneel predict`` outside. Minutes of work and root with podman, so it runs only when asked:
``KNEEL_CONTAINER_TEST=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "ci_build_and_test.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("KNEEL_CONTAINER_TEST") != "1",
        reason="container build and run: set KNEEL_CONTAINER_TEST=1 (root, podman; `make container-test`)",
    ),
]


@pytest.mark.timeout(3600)
def test_cpu_image_serves_the_same_landmarks_as_kneel_predict():
    if shutil.which("bash") is None:
        pytest.skip("bash is needed for docker/ci_build_and_test.sh")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3500)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-4000:]
    assert "PASS" in report
    assert report.count("ok   ") == 3, report[-4000:]
