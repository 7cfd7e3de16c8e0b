"""GPU check: training, DDP and prediction on CUDA, compared with the CPU (about 5 minutes on one GPU).

Rows of the table:

* ``train``: one epoch of each stage (tiny configs, fold 0, float32) on the device: seconds, images/s, error.
* ``ddp``: ``torchrun --nproc_per_node N -m kneel train`` with NCCL on N GPUs (one rank per GPU); every collective
  is traced (``KNEEL_DDP_TRACE``) and must have reached the backend on the rank's GPU. Without CUDA, or with one GPU
  (NCCL takes one rank per GPU), the same run uses two CPU ranks with gloo and the table says NCCL was not run.
* ``predict``: the two-stage pipeline (``Predictor``, what ``kneel predict`` runs) on synthetic films with the models
  trained above: landmarks on CUDA in float32 against the CPU (must agree within 1e-3 px with TF32 off; PyTorch's
  default TF32 convolutions are shown too), bf16 and fp16 against float32, and radiographs/s of each.

On a machine without CUDA the CPU parts run (gloo instead of NCCL, CPU float32 and bf16) and the skipped parts are
named. Exit status 1 when a check fails. The models are trained for one epoch only: deviations between precisions
are larger with such flat heatmaps than with trained models (see ``benchmarks/predict.py``).

Usage: ``python benchmarks/gpu_check.py [--data DATA] [--films 12] [--predict-films 4] [--cpu] [--skip ddp]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PX_TOLERANCE = 1e-3
"""Largest landmark difference (px) allowed between CUDA float32 (TF32 off) and CPU float32."""


@dataclass
class Row:
    check: str
    device: str
    result: str
    seconds: float
    status: str  # ok, FAIL, skipped: <why>, info


def _make_data(root: Path, films: int) -> Path:
    from kneel.data.prepare import prepare_datasets
    from kneel.synth.cohort import generate_cohort

    generate_cohort(root / "cohort", films, seed=0, layout="oai", workers=1, progress=False)
    prepare_datasets(root / "cohort" / "annotations.csv", root / "data", oai=root / "cohort", folds=2, progress=False)
    return root / "data"


def check_train(data: Path, model: Path, device: str, batch_size: int) -> list[Row]:
    """One epoch of fold 0 of each stage (lc, then hc initialised from it) on ``device``."""
    from kneel.training import train

    rows = []
    for stage in ("lc", "hc"):
        start = time.perf_counter()
        overrides = ["epochs=1", "folds=2", "tensorboard=false", "amp=none", f"batch_size={batch_size}"]
        result = train(f"tiny_{stage}.yaml", data, model, overrides=overrides, folds=[0], device=device, progress=False)
        seconds = time.perf_counter() - start
        row = result.folds[0].history[0]
        ok = np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
        result_text = f"epoch {row['epoch_time_s']:.1f} s, train loss {row['train_loss']:.3f}, "
        result_text += f"val mean {row['val_mean_mm']:.1f} mm"
        rows.append(Row(f"train {stage} 1 epoch", device, result_text, seconds, "ok" if ok else "FAIL"))
    return rows


def check_ddp(data: Path, work: Path, cuda: bool) -> list[Row]:
    """``torchrun`` with NCCL on every GPU (>= 2), else two CPU ranks with gloo; the collectives' devices traced."""
    gpus = torch.cuda.device_count() if cuda else 0
    rows = []
    if gpus >= 2:
        runs = [("nccl", gpus, "cuda")]
    else:
        why = "no CUDA" if not cuda else "one GPU (NCCL needs one GPU per rank)"
        rows.append(Row("ddp nccl", "cuda", "-", 0.0, f"skipped: {why}"))
        runs = [("gloo", 2, "cpu")]
    for backend, n, device in runs:
        out, trace = work / f"ddp_{backend}", work / f"trace_{backend}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
        args = ["-m", "kneel", "train", "--config", "tiny_lc.yaml", "--data", str(data), "--out", str(out)]
        options = ["--folds", "0", "--device", device, "--no-progress", "epochs=1", "folds=2", "tensorboard=false"]
        # robust loss: its gradients are all-reduced by hand; batch 2 per rank keeps a few steps on tiny data
        options += ["batch_size=2", "loss=robust", "amp=none"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEL_DDP_TRACE": str(trace)}
        start = time.perf_counter()
        proc = subprocess.run([*launcher, *args, *options], env=env, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            rows.append(Row(f"ddp {backend} x{n}", device, f"exit {proc.returncode}: {tail[0][:100]}", seconds, "FAIL"))
            continue
        records = [json.loads(ln) for f in sorted(trace.glob("rank*.jsonl")) for ln in f.read_text().splitlines()]
        wrong = [r for r in records if r["sent"] != r["group"] or not r["group"].startswith(device)]
        ranks = sorted({r["rank"] for r in records})
        result = f"{len(records)} collectives on ranks {ranks}, {len(wrong)} off the group's device"
        ok = not wrong and ranks == list(range(n)) and bool(records)
        rows.append(Row(f"ddp {backend} x{n}", device, result, seconds, "ok" if ok else "FAIL"))
    return rows


def _predict(model: Path, films: list[Path], device: str, precision: str) -> tuple[dict, float]:
    """Landmarks (px) per (film, side) and radiographs/s of the two-stage pipeline (after one warm-up film)."""
    from kneel.inference import Predictor

    # force: landmarks for both knees whatever the knee presence decision says (one-epoch models fail it)
    predictor = Predictor(model, device=device, precision=precision, knees="both", force=True)
    predictor.predict(films[0])  # warm-up (CUDA context, cuDNN autotuning)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = {}
    for film in films:
        for knee in predictor.predict(film):
            out[(film.name, str(knee.side))] = np.asarray(knee.landmarks_px, dtype=np.float64)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, len(films) / (time.perf_counter() - start)


def _max_px(a: dict, b: dict) -> float:
    keys = sorted(set(a) & set(b))
    if not keys or set(a) != set(b):
        return float("inf")
    return max(float(np.abs(a[k] - b[k]).max()) for k in keys)


def check_predict(model: Path, films: list[Path], cuda: bool) -> list[Row]:
    rows = []
    start = time.perf_counter()
    cpu, cpu_rate = _predict(model, films, "cpu", "fp32")
    status = "ok" if len(cpu) == 2 * len(films) else "FAIL"
    rows.append(Row("predict fp32", "cpu", f"{cpu_rate:.2f} radiographs/s, {len(cpu)} knees", 0.0, status))
    rows[-1].seconds = time.perf_counter() - start
    if not cuda:
        rows.append(Row("predict fp32 vs cpu", "cuda", "-", 0.0, "skipped: no CUDA"))
    else:
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            start = time.perf_counter()
            got, rate = _predict(model, films, "cuda", "fp32")
            worst = _max_px(got, cpu)
            name = "predict fp32 (TF32 convs, PyTorch default)" if tf32 else "predict fp32, TF32 off"
            status = "info" if tf32 else ("ok" if worst <= PX_TOLERANCE else "FAIL")
            result = f"max {worst:.2e} px from cpu, {rate:.2f} radiographs/s"
            rows.append(Row(name, "cuda", result, time.perf_counter() - start, status))
        reference = got  # float32 with TF32 off
    device = "cuda" if cuda else "cpu"
    base = reference if cuda else cpu
    for precision in ("bf16", "fp16"):
        start = time.perf_counter()
        try:
            got, rate = _predict(model, films, device, precision)
        except Exception as exc:  # noqa: BLE001 - a report row, e.g. fp16 autocast unsupported on this CPU
            rows.append(Row(f"predict {precision}", device, "-", 0.0, f"skipped: {type(exc).__name__}: {exc}"[:90]))
            continue
        result = f"max {_max_px(got, base):.3f} px from fp32, {rate:.2f} radiographs/s"
        rows.append(Row(f"predict {precision}", device, result, time.perf_counter() - start, "info"))
    return rows


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    widths = [max(len(r.check) for r in rows), 6, max(len(r.result) for r in rows), 7]
    print(f"{'check':{widths[0]}s}  {'device':6s}  {'result':{widths[2]}s}  {'time s':>7s}  status")
    for r in rows:
        print(f"{r.check:{widths[0]}s}  {r.device:6s}  {r.result:{widths[2]}s}  {r.seconds:7.1f}  {r.status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="prepared-data folder (default: a synthetic one, --films films)")
    parser.add_argument("--films", type=int, default=12, help="synthetic training films (default 12)")
    parser.add_argument("--predict-films", type=int, default=4, help="synthetic films to predict (default 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--cpu", action="store_true", help="CPU parts only, even where CUDA is available")
    parser.add_argument("--skip", action="append", default=[], choices=["ddp"], help="leave a check out")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available() and not args.cpu
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = args.data or _make_data(work, args.films)
        rows = check_train(data, work / "model", device, args.batch_size)
        if "ddp" in args.skip:
            rows.append(Row("ddp", device, "-", 0.0, "skipped: --skip ddp"))
        else:
            rows += check_ddp(data, work, cuda)
        from kneel.synth.cohort import generate_cohort

        films_dir = work / "films"
        generate_cohort(films_dir, args.predict_films, seed=11, layout="flat", single_knee_fraction=0.0, progress=False)
        films = sorted(films_dir.rglob("*.dcm"))
        rows += check_predict(work / "model", films, cuda)
    where = torch.cuda.get_device_name(0) if cuda else f"CPU only ({'--cpu' if args.cpu else 'no CUDA'})"
    print_table(rows, f"GPU check on {where}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s in all")
    skipped = [r.check for r in rows if r.status.startswith("skipped")]
    if skipped:
        print(f"not run here: {', '.join(skipped)}")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
