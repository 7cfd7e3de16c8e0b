"""DDP on CPU (gloo, 2 processes through torchrun) and the experiment runner (in turn on the CPU).

No GPU here: the NCCL path (CUDA tensors only) is checked by ``benchmarks/gpu_check.py`` on a GPU machine. What CPU
can check is that every collective goes through :meth:`DistributedContext.collective`, which hands the backend
tensors on the group's device (the trace), and that two ranks train exactly as one process on the global batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kneel.data.datasets import LandmarkDataset
from kneel.models import load_fold
from kneel.training import load_config
from kneel.training.cv import load_fold_table, split_subjects
from kneel.training.ddp import TRACE_ENV, DistributedContext
from kneel.training.experiments import plan_experiments, run_experiments
from kneel.training.loop import resolve_geometry
from kneel.training.run_log import read_metrics

LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _read_trace(folder: Path) -> list[dict[str, str]]:
    lines = [ln for f in sorted(folder.glob("rank*.jsonl")) for ln in f.read_text().splitlines()]
    return [json.loads(ln) for ln in lines]


def _worker_module():  # noqa: ANN202 - the helper module, imported by path (tests/ is not a package)
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collective_moves_to_the_group_device_and_back() -> None:
    ctx = DistributedContext(device=torch.device("cpu"))
    seen: list[torch.device] = []

    def double(t: torch.Tensor) -> None:
        seen.append(t.device)
        t.mul_(2)

    x = torch.arange(3, dtype=torch.float64)
    assert ctx.collective("double", x, double) is x
    assert seen == [torch.device("cpu")] and x.tolist() == [0.0, 2.0, 4.0]


def test_two_ranks_train_as_one_process_on_the_global_batch(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    env = {**os.environ, "OMP_NUM_THREADS": "1", TRACE_ENV: str(trace)}
    proc = subprocess.run([*LAUNCH, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    worker = _worker_module()
    torch.set_num_threads(1)
    single = worker.run_steps(DistributedContext())

    for got in ranks:
        for part in ("model", "criterion"):
            assert got[part].keys() == single[part].keys()
            for key, value in single[part].items():
                assert (got[part][key] - value).abs().max() <= 1e-6, (part, key)
        assert got["mean"] == pytest.approx(single["mean"], abs=1e-9)
        assert got["std"] == pytest.approx(single["std"], abs=1e-9)
        assert got["loss"] == pytest.approx(single["loss"], rel=1e-6)  # float32 losses, summed in float64
        assert got["broadcast"] == 7.0  # rank 0's value
    # the steps did move the weights (a run that trained nothing would pass the comparison above)
    torch.manual_seed(0)
    initial = torch.nn.Conv2d(3, 4, 3, padding=1).weight.detach()  # the first layer as run_steps creates it
    assert (single["model"]["0.weight"] - initial).abs().max() > 1e-3

    # every collective went through the wrapper and reached the backend on the group's device
    records = _read_trace(trace)
    ops = [r["op"] for r in records if r["rank"] == 0]
    # mean/std sums, 2 robust-loss gradients x 3 steps, the epoch's loss total, the broadcast
    assert ops == ["all_reduce_sum"] * 8 + ["broadcast"], ops
    assert len(records) == 2 * len(ops)
    assert all(r["sent"] == r["group"] == "cpu" for r in records), records


def test_torchrun_two_processes_on_cpu(prepared_data: Path, tmp_path: Path, tiny_lc: Path, fast: list[str]) -> None:
    out = tmp_path / "model"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = ["-m", "kneel", "train", "--config", str(tiny_lc), "--data", str(prepared_data), "--out", str(out)]
    options = ["--folds", "0", "--device", "cpu", "--no-progress", *fast, "batch_size=2"]
    # two-pass mixup (two backward passes, the first without gradient sync) and the robust loss (its parameters'
    # gradients are all-reduced by hand) exercise the DDP-specific paths of the loop.
    cmd = [*launcher, *args, *options, "sync_batchnorm=true", "mixup=two_pass", "loss=robust"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", TRACE_ENV: str(tmp_path / "trace")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("lc fold 0: best epoch") == 1  # rank 0 alone reports
    assert "sync_batchnorm needs CUDA" in proc.stderr
    rows = read_metrics(out / "lc" / "fold_0" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1"]
    assert all(np.isfinite(float(rows[0][k])) for k in ("train_loss", "val_loss", "val_mean_mm"))
    model, cfg = load_fold(out / "lc" / "fold_0")
    assert cfg.fold == 0
    # the statistics each rank summed over its half of the images, all-reduced: those of every training pixel
    geometry = resolve_geometry(load_config(tiny_lc))
    train_subjects, val_subjects = split_subjects(load_fold_table(prepared_data, 2), 0)
    ds = LandmarkDataset(
        prepared_data, "lc", train_subjects, None, geometry.input_size, geometry.pad, scale=geometry.scale
    )
    pixels = np.concatenate([ds[i]["image"][0].numpy().ravel() for i in range(len(ds))]).astype(np.float64)
    assert cfg.mean == pytest.approx([pixels.mean()] * 3, rel=1e-9)
    assert cfg.std == pytest.approx([pixels.std()] * 3, rel=1e-9)
    oof = pd.read_csv(out / "lc" / "oof_predictions.csv")
    assert len(oof) == len(pd.read_csv(out / "lc" / "oof_ground_truth.csv")) > 0
    assert sorted(set(oof["subject_id"])) == val_subjects
    # every collective of the run (statistics, losses, robust-loss gradients, validation loss) went through the
    # wrapper and reached the backend on the group's device
    records = _read_trace(tmp_path / "trace")
    assert {r["rank"] for r in records} == {0, 1}
    assert {r["op"] for r in records} == {"all_reduce_sum", "broadcast"}
    assert all(r["sent"] == r["group"] == "cpu" for r in records)


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
