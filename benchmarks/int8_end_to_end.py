"""int8 against float32 end to end: how far ``--precision int8`` moves each landmark (mm) on held-out radiographs.

Runs the whole pipeline (``Predictor``, default settings, refine on) in float32 and in int8 on the same films and
compares every landmark of every knee both find, in mm via each film's spacing. The issue's bound is 0.1 mm maximum.
The int8 networks are built without the cache (``int8_cache=False``) so that the build time is printed too.

Usage: ``python benchmarks/int8_end_to_end.py --model MODEL --films FOLDER [--calib FILES]``; without a trained model
(default: the demo's ``demo_output/model``) or films it says so and exits 0.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def landmarks_mm(predictor, paths: list[Path]) -> dict[tuple[str, str], np.ndarray]:  # noqa: ANN001
    """``{(file, side): (16, 2) mm}`` of every knee the predictor finds."""
    out = {}
    for path in paths:
        result = predictor.predict(path)
        for side, knee in result.knees.items():
            out[(path.name, str(side))] = np.asarray(knee.landmarks_px) * [knee.spacing[1], knee.spacing[0]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "demo_output" / "model")
    parser.add_argument("--films", type=Path, default=None, help="held-out radiographs (a folder)")
    parser.add_argument("--calib", nargs="+", default=None, help="int8 calibration radiographs (default: synthetic)")
    args = parser.parse_args()
    if not (args.model / "hc").is_dir() or args.films is None:
        print(f"skipped: needs a trained model (--model; {args.model} has no hc/) and held-out films (--films)")
        return 0
    from kneel.inference import Predictor
    from kneel.inference.discovery import find_inputs

    found, _ = find_inputs([args.films])
    paths = [Path(f.path) for f in found]
    warnings.simplefilter("ignore")  # missing-knee notes of the synthetic cohort
    t0 = time.perf_counter()
    fp32 = landmarks_mm(Predictor(args.model), paths)
    t_fp32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    int8_predictor = Predictor(args.model, precision="int8", int8_calibration=args.calib, int8_cache=False)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    int8 = landmarks_mm(int8_predictor, paths)
    t_int8 = time.perf_counter() - t0
    common = sorted(set(fp32) & set(int8))
    dev = np.concatenate([np.linalg.norm(int8[k] - fp32[k], axis=1) for k in common])
    print(f"{len(paths)} films, {len(common)} knees in both ({len(set(fp32) ^ set(int8))} in one only), "
          f"{dev.size} landmarks; float32 {t_fp32:.0f} s, int8 build {build:.0f} s + {t_int8:.0f} s")  # fmt: skip
    print("| max (mm) | mean (mm) | 99th percentile (mm) | landmarks > 0.1 mm |")
    print("|---|---|---|---|")
    print(f"| {dev.max():.4f} | {dev.mean():.4f} | {np.percentile(dev, 99):.4f} | {int((dev > 0.1).sum())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
