"""``--resume``: a run killed mid-epoch continues from its last checkpoint and ends exactly as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from kneel.errors import ConfigError
from kneel.training import train
from kneel.training.run_log import read_metrics

RUN = ["epochs=3", "folds=2", "batch_size=4", "tensorboard=false", "mixup=two_pass"]


def _env() -> dict[str, str]:
    # One thread, as the in-process reference run (tests/conftest.py), so the arithmetic is identical.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    paths = ["--config", str(config), "--data", str(data), "--out", str(out)]
    options = ["--folds", "0", "--device", "cpu", "--no-progress"]
    return [sys.executable, "-m", "kneel", "train", *paths, *options, *RUN, *extra]


def test_killed_run_resumes_exactly(prepared_data: Path, tmp_path: Path, tiny_lc: Path) -> None:
    reference = train(tiny_lc, prepared_data, tmp_path / "ref", overrides=RUN, folds=[0], progress=False)
    assert [r["epoch"] for r in reference.folds[0].history] == [1, 2, 3]

    out = tmp_path / "killed"
    metrics = out / "lc" / "fold_0" / "metrics.csv"
    proc = subprocess.Popen(
        _cmd(tiny_lc, prepared_data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(read_metrics(metrics)) >= 1:
                break  # epoch 1 is checkpointed; the process is now inside epoch 2
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = len(read_metrics(metrics))
    assert done_before < 3

    resumed = subprocess.run(
        _cmd(tiny_lc, prepared_data, out, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics(metrics)
    ref_rows = read_metrics(tmp_path / "ref" / "lc" / "fold_0" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    strip = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in ref_rows]
    a = safetensors.torch.load_file(str(out / "lc" / "fold_0" / "model.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "ref" / "lc" / "fold_0" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "lc" / "oof_predictions.csv").is_file()


def test_resume_of_a_finished_run_only_repredicts(
    prepared_data: Path, tmp_path: Path, tiny_lc: Path, fast: list[str]
) -> None:
    first = train(tiny_lc, prepared_data, tmp_path, overrides=fast, folds=[0], progress=False)
    resolved = (tmp_path / "lc" / "config.resolved.yaml").read_text()
    # a different recipe is refused, naming every key that differs (and only those), before anything is written
    changed = [*fast, "lr=0.002", "augment.cutout_p=0.3", "num_workers=1"]
    with pytest.raises(ConfigError) as refused:
        train(tiny_lc, prepared_data, tmp_path, overrides=changed, folds=[0], resume=True, progress=False)
    message = str(refused.value)
    assert "2 key(s)" in message and "lr: 0.003 -> 0.002" in message and "augment.cutout_p:" in message
    assert (tmp_path / "lc" / "config.resolved.yaml").read_text() == resolved
    # keys that do not change what is computed may differ
    harmless = [*fast, "num_workers=1", "tensorboard=true", "description=again"]
    again = train(tiny_lc, prepared_data, tmp_path, overrides=harmless, folds=[0], resume=True, progress=False)
    assert again.folds[0].history == first.folds[0].history
    assert len(read_metrics(tmp_path / "lc" / "fold_0" / "metrics.csv")) == 1
