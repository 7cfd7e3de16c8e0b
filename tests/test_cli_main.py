"""The ``kneel`` console script: subcommand listing and one-line errors (run as a real subprocess)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kneel.cli import SUBCOMMANDS


def _kneel() -> str:
    beside = Path(sys.executable).with_name("kneel")
    exe = str(beside) if beside.exists() else shutil.which("kneel")
    if exe is None:
        pytest.fail("the kneel console script is not installed (pip install -e .)")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_kneel(), *args], capture_output=True, text=True, timeout=120)


def test_help_lists_subcommands():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "info" in result.stdout
    listed = [name for name in SUBCOMMANDS if f"    {name} " in result.stdout or f"    {name}\n" in result.stdout]
    assert "info" in listed
    import importlib.util

    for name, (module, _) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            assert name in listed, f"{name} has a module but is not listed by --help"


def test_no_arguments_prints_help():
    result = _run()
    assert result.returncode == 2 and "COMMAND" in result.stdout


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("kneel ")


def test_subcommand_help():
    result = _run("info", "--help")
    assert result.returncode == 0 and "--spacing" in result.stdout and "--json" in result.stdout


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 10)
    result = _run("info", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and str(bad) in result.stdout
