"""Start-up of ``kneel predict``, measured directly: fresh processes, launch to a Predictor ready for the first film.

Each row runs its Python snippet in a new interpreter ``--repeats`` times, alternating the rows, and reports the
whole process's wall time (launch to exit; median, min and max): a bare ``import torch`` (the floor no PyTorch program
here can go below), ``import kneel.inference``, and ``Predictor(MODEL)`` for each precision asked for (imports, reading
and checking every fold, BatchNorm folding, fused convolutions; int8: the cached quantised graphs). Also where the
Predictor's time goes, from one in-process run. ``benchmarks/vs_reference.py`` gives start-up only as an intercept
(wall time at the smaller film count minus that many films), which carries the noise of the per-film estimate.

Usage: ``python benchmarks/startup.py [--model MODEL] [--repeats 5] [--precisions fp32 bf16]``; without ``--model``
the paper-size 5-fold random-weight models of ``benchmarks/predict.py`` are made in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent

_BREAKDOWN = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from kneel.inference import Predictor
import kneel.models.ensemble as E, kneel.models.weights as W
t2 = time.perf_counter()
parts = {"build": 0.0, "read": 0.0, "load_fold": 0.0, "optimise": 0.0}
def timed(module, name, key):
    inner = getattr(module, name)
    def wrapper(*a, **k):
        s = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            parts[key] += time.perf_counter() - s
    setattr(module, name, wrapper)
for module, name, key in ((W, "build_model", "build"), (W, "read_weights", "read"), (W, "load_fold", "load_fold"),
                          (E, "optimize_for_inference", "optimise")):
    timed(module, name, key)
Predictor(sys.argv[1], precision=sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import kneel.inference": t2 - t1, "Predictor": t3 - t2, **parts}))
"""


def _wall(code: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: paper-size random models)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "int8"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            sys.path.insert(0, str(HERE.parent))
            from benchmarks.predict import make_models

            model = Path(tmp) / "model"
            make_models(model, 5)
        folds = sum(1 for stage in ("lc", "hc") for _ in (model / stage).glob("fold_*"))
        ready = "import sys; from kneel.inference import Predictor; Predictor(sys.argv[1], precision=sys.argv[2])"
        rows: dict[str, tuple[str, tuple[str, ...]]] = {
            "python -c 'import torch'": ("import torch", ()),
            "import kneel.inference": ("import kneel.inference", ()),
            **{f"Predictor, {p} ({folds} folds)": (ready, (str(model), p)) for p in args.precisions},
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeats):
            for name, (code, extra) in rows.items():
                times[name].append(_wall(code, *extra))
        command = [sys.executable, "-c", _BREAKDOWN, str(model), args.precisions[0]]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    load = os.getloadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"start-up, fresh processes, {args.repeats} each, alternating; {stamp}; load {load[0]:.2f} {load[1]:.2f}")
    print(f"model {args.model or 'paper-size random models (5 folds per stage)'}")
    print("| process | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    parts = {k: float(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    print(f"\nin one process ({args.precisions[0]}): " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
    print("(load_fold includes build and read; Predictor includes load_fold and optimise)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
