"""DDP on CPU (gloo, 2 processes through torchrun) and the experiment runner (in turn on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kneel.models import load_fold
from kneel.training.experiments import plan_experiments, run_experiments
from kneel.training.run_log import read_metrics


def test_torchrun_two_processes_on_cpu(prepared_data: Path, tmp_path: Path, tiny_lc: Path, fast: list[str]) -> None:
    out = tmp_path / "model"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["-m", "kneel", "train", "--config", str(tiny_lc), "--data", str(prepared_data), "--out", str(out)]
    options = ["--folds", "0", "--device", "cpu", "--no-progress", *fast, "batch_size=2"]
    # two-pass mixup (two backward passes, the first without gradient sync) and the robust loss (its parameters'
    # gradients are all-reduced by hand) exercise the DDP-specific paths of the loop.
    cmd = [*launcher, *args, *options, "sync_batchnorm=true", "mixup=two_pass", "loss=robust"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("lc fold 0: best epoch") == 1  # rank 0 alone reports
    assert "sync_batchnorm needs CUDA" in proc.stderr
    rows = read_metrics(out / "lc" / "fold_0" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    model, cfg = load_fold(out / "lc" / "fold_0")
    assert cfg.fold == 0
    oof = pd.read_csv(out / "lc" / "oof_predictions.csv")
    assert len(oof) == len(pd.read_csv(out / "lc" / "oof_ground_truth.csv")) > 0


def test_experiment_runner_orders_transfer_and_runs_in_turn(
    prepared_data: Path,
    tmp_path: Path,
    tiny_lc: Path,
    tiny_hc: Path,
    fast: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores: one thread per tiny run is faster
    plan = plan_experiments([tiny_hc, tiny_lc], tmp_path)
    assert [e.name for e in plan] == ["tiny_lc", "tiny_hc"]
    assert plan[1].depends_on == "tiny_lc" and plan[1].init_from == tmp_path / "tiny_lc"

    outcomes = run_experiments([tiny_hc, tiny_lc], prepared_data, tmp_path, overrides=fast, poll_s=0.1)
    assert [(o.name, o.returncode) for o in outcomes] == [("tiny_lc", 0), ("tiny_hc", 0)], [
        o.log.read_text()[-2000:] for o in outcomes
    ]
    _, cfg = load_fold(tmp_path / "tiny_hc" / "hc" / "fold_0")
    assert cfg.extra["transferred_from"] == str(tmp_path / "tiny_lc" / "lc" / "fold_0")
