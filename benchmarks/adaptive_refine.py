"""Adaptive refine (``--refine-tolerance MM``): second passes saved, time, and landmark deviation from full refine.

The refine pass re-centres each ROI on the first pass's tibial landmark 4 and predicts again. With a tolerance, knees
whose first-pass T4 already lies within that distance of the ROI centre keep their first pass. This benchmark runs
the whole pipeline (``Predictor``) with full refine and with each tolerance on the same films and reports, per
tolerance: the share of knees that skipped the second pass, the wall time, and how far the landmarks moved from full
refine (mm, via each film's spacing): the price of the saved passes.

Usage: ``python benchmarks/adaptive_refine.py --model MODEL --films FOLDER [--tolerances 0.25 0.5 1 2]``; without a
trained model (default: the demo's ``demo_output/model``) or films it says so and exits 0.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(predictor, paths: list[Path]) -> tuple[dict[tuple[str, str], np.ndarray], float]:  # noqa: ANN001
    """``{(file, side): (16, 2) mm}`` of every knee found, and the wall time of the predictions."""
    out, t0 = {}, time.perf_counter()
    for path in paths:
        for side, knee in predictor.predict(path).knees.items():
            out[(path.name, str(side))] = np.asarray(knee.landmarks_px) * [knee.spacing[1], knee.spacing[0]]
    return out, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "demo_output" / "model")
    parser.add_argument("--films", type=Path, default=None, help="radiographs (a folder)")
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    args = parser.parse_args()
    if not (args.model / "hc").is_dir() or args.films is None:
        print(f"skipped: needs a trained model (--model; {args.model} has no hc/) and films (--films)")
        return 0
    from kneel.inference import Predictor
    from kneel.inference.discovery import find_inputs

    warnings.simplefilter("ignore")  # missing-knee notes, the calibration's refine_shift warning
    paths = [Path(f.path) for f in find_inputs([args.films])[0]]
    full, t_full = run(Predictor(args.model), paths)
    first, t_first = run(Predictor(args.model, refine=False), paths)
    print(f"{len(paths)} films, {len(full)} knees; model {args.model}")
    print("| refine | knees without a second pass | s per film | max deviation (mm) | mean (mm) | > 0.1 mm |")
    print("|---|---|---|---|---|---|")
    rows = [("always (default)", full, t_full)]
    for t in args.tolerances:
        rows.append((f"tolerance {t:g} mm", *run(Predictor(args.model, refine_tolerance_mm=t), paths)))
    rows.append(("off", first, t_first))
    for name, got, wall in rows:
        keys = sorted(set(full) & set(got))
        dev = np.concatenate([np.linalg.norm(got[k] - full[k], axis=1) for k in keys])
        same_as_first = sum(k in first and np.allclose(got[k], first[k], atol=1e-9, rtol=0) for k in keys)
        print(f"| {name} | {same_as_first} of {len(keys)} | {wall / len(paths):.3f} | {dev.max():.3f} "
              f"| {dev.mean():.4f} | {int((dev > 0.1).sum())} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
