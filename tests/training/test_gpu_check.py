"""``benchmarks/gpu_check.py`` in CPU mode: the parts a machine without CUDA can run, and the parts it names as skipped.

The torchrun part (gloo on CPU) is left out here to keep the test short: ``test_train_distributed.py`` runs it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_its_cpu_parts(
    prepared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    args = ["--cpu", "--data", str(prepared_data), "--predict-films", "1", "--skip", "ddp", "--batch-size", "2"]
    code = module.main([*args, "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    for row in ("train lc 1 epoch", "train hc 1 epoch", "predict fp32", "predict bf16"):
        line = next(ln for ln in out.splitlines() if ln.startswith(row + " "))
        assert line.rstrip().endswith(("ok", "info")), line
    assert re.search(r"^predict fp32 +cpu +[\d.]+ radiographs/s, 2 knees", out, re.M)  # both knees of the film
    assert re.search(r"^predict bf16 +cpu +max [\d.]+ px from fp32", out, re.M)  # a finite deviation
    assert "not run here: ddp, predict fp32 vs cpu" in out  # CUDA parts named, not silently passed
    assert (tmp_path / "model" / "hc" / "fold_0" / "model.safetensors").is_file()
