"""The accuracy-versus-training-time script runs a point end to end on a tiny budget, records it, and plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_frontier_point_on_a_tiny_budget(tmp_path: Path):
    table = tmp_path / "frontier.csv"
    budget = ["--train-images", "16", "--test-images", "2", "--calibration-images", "0", "--lc-epochs", "1",
              "--hc-epochs", "1", "--workers", "1", "--fold-processes", "1"]  # fmt: skip
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "frontier.py"),
            "--name",
            "toy",
            "--table",
            str(table),
            "--out",
            str(tmp_path / "run"),
            *budget,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=580,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = pd.read_csv(table)
    assert list(rows["name"]) == ["toy"]
    row = rows.iloc[0]
    # the row is the run's: its settings, the demo's own step times, the held-out films' knees
    assert (row["train_images"], row["lc_epochs"], row["hc_epochs"], row["folds"]) == (16, 1, 1, 2)
    truth = pd.read_csv(tmp_path / "run" / "cohorts" / "test" / "ground_truth.csv", dtype={"file": str})
    assert row["knees"] == len(truth[["file", "side"]].drop_duplicates())
    assert 0 < row["training_s"] < row["total_s"]
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # without --name: the recorded table is printed and the plot redrawn, nothing is trained
    (tmp_path / "frontier.png").unlink()
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "frontier.py"), "--table", str(table)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "toy" in again.stdout
    assert (tmp_path / "frontier.png").is_file()
