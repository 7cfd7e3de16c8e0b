"""int8 against float32 per network, with trained models: ms per image and landmark deviation in mm.

For each stage of a trained model (``MODEL/lc``, ``MODEL/hc``) the network inputs are the pipeline's own: the float32
pipeline runs on calibration radiographs and on held-out radiographs and the inputs of both stages are recorded
(:func:`kneel.inference.int8.calibration_rois`). Variants, timed in turn at one image per call so that a noisy
machine affects all alike: float32 PyTorch (kneel's default), float32 ONNX Runtime, and ``precision="int8"``
(:mod:`kneel.models.int8`), each the whole fold ensemble. The deviation is the int8 ensemble's normalised
coordinate difference from float32 PyTorch x input size x input spacing (mm, network input only: the end-to-end
figure comes from ``kneel predict`` with both precisions, see docs/models.md).

Usage: ``python benchmarks/int8.py --model MODEL --eval FILMS [--calib FILMS] [--n-eval 12] [--repeats 3]``
(default calibration: the 16 synthetic training films of :mod:`kneel.inference.int8`; default model: the demo's
``demo_output/model`` when present, else the benchmark is skipped).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kneel.inference.int8 import calibration_rois
from kneel.models import load_stage

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, images: torch.Tensor) -> tuple[float, float]:  # noqa: ANN001
    """Wall and CPU ms per image, one image per call."""
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(images.shape[0]):
        fn(images[i : i + 1])
    n = images.shape[0]
    return (time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "demo_output" / "model")
    parser.add_argument("--eval", nargs="+", help="held-out radiographs (files, folders)")
    parser.add_argument("--calib", nargs="+", default=None, help="calibration radiographs (default: synthetic)")
    parser.add_argument("--n-eval", type=int, default=12, help="held-out radiographs used (first N, sorted)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if not (args.model / "hc").is_dir() or not args.eval:
        print(f"skipped: needs a trained model (--model, {args.model} has no hc/) and held-out films (--eval)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    lc32, hc32 = load_stage(args.model / "lc"), load_stage(args.model / "hc")
    cal = calibration_rois(lc32, hc32, args.calib)
    films = sorted(p for e in args.eval for p in (Path(e).rglob("*.dcm") if Path(e).is_dir() else [Path(e)]))
    held = calibration_rois(lc32, hc32, [str(p) for p in films[: args.n_eval]])
    print(f"threads {torch.get_num_threads()}; calibration ROIs lc {len(cal[0])} hc {len(cal[1])}; held-out lc "
          f"{len(held[0])} hc {len(held[1])} from {min(len(films), args.n_eval)} films")  # fmt: skip
    print("| stage | variant | ms/image median (best) | CPU ms/image | max dev (mm) | mean dev (mm) |")
    print("|---|---|---|---|---|---|")
    for k, stage in enumerate(("lc", "hc")):
        t0 = time.perf_counter()
        variants = {
            "fp32 torch": load_stage(args.model / stage),
            "fp32 onnxruntime": load_stage(args.model / stage, backend="onnxruntime"),
            "int8": load_stage(args.model / stage, precision="int8", calibration=cal[k]),
        }
        build = time.perf_counter() - t0
        images = torch.from_numpy(held[k])
        ref = variants["fp32 torch"].predict(images)[0]
        mm = variants["int8"].config.crop * variants["int8"].config.spacing_mm
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, ens in variants.items():
                times[name].append(_time(ens.predict, images[:12]))
        for name, ens in variants.items():
            dev = (ens.predict(images)[0] - ref).norm(dim=-1) * mm
            wall = [t[0] for t in times[name]]
            cpu = statistics.median(t[1] for t in times[name])
            print(f"| {stage} | {name} | {statistics.median(wall):.1f} ({min(wall):.1f}) | {cpu:.1f} | "
                  f"{float(dev.max()):.4f} | {float(dev.mean()):.4f} |")  # fmt: skip
        print(f"({stage}: building the three ensembles took {build:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
