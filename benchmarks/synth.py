"""Synthetic cohort generation speed: images per second for ``kneel synth --n N`` (target: >= 2 on 2 cores).

Usage: ``python benchmarks/synth.py [--n 100] [--workers W] [--compression none|rle|jpeg2000|mixed] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from kneel.synth import generate_cohort


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="films (default 100)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--compression", default="none", choices=("none", "rle", "jpeg2000", "mixed"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", default=None, help="write the cohort here and keep it")
    args = parser.parse_args()

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kneel_bench_synth_"))
    try:
        summary = generate_cohort(
            out, args.n, seed=args.seed, compression=args.compression, workers=args.workers, progress=False
        )
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    workers = args.workers or os.cpu_count()
    rows = [
        ("films", f"{summary.n_images}"),
        ("knees", f"{summary.n_knees}"),
        ("workers", f"{workers} (of {os.cpu_count()} CPUs)"),
        ("compression", args.compression),
        ("seconds", f"{summary.seconds:.1f}"),
        ("images/s", f"{summary.images_per_second:.2f}"),
        ("MB written", f"{size / 1e6:.0f} ({size / 1e6 / max(summary.n_images, 1):.1f} per film)"),
    ]
    width = max(len(k) for k, _ in rows)
    print("| metric | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
