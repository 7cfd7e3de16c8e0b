"""The wheel a user installs carries every file kneel reads at run time (annotations, training configs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # Build from a clean copy: setuptools reuses a source tree's build/ folder, which could hide a missing rule.
    source = tmp_path_factory.mktemp("source")
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-2000:]}")
    (wheel,) = out.glob("kneel-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_carries_run_time_files(wheel_names: list[str]) -> None:
    from kneel.resources import annotations_dir, configs_dir

    shipped = {
        f"kneel/assets/{p.relative_to(annotations_dir().parent).as_posix()}"
        for folder in (annotations_dir(), configs_dir())
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".csv", ".md", ".yaml")
    }
    assert len(shipped) >= 2 + 26 + 3
    missing = sorted(shipped - set(wheel_names))
    assert not missing, f"files kneel reads at run time are missing from the wheel: {missing}"
    assert "kneel/py.typed" in wheel_names
    assert any(name.endswith("entry_points.txt") for name in wheel_names)
