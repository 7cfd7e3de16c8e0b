"""``kneel synth``: generate synthetic bilateral knee radiographs with exact ground truth (``kneel.synth``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of films")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (same seed and options: same files)")
    parser.add_argument(
        "--layout",
        choices=("oai", "flat"),
        default="oai",
        help="oai: contents.csv + <Folder>/001 (default); flat: <subject_id>.dcm",
    )
    parser.add_argument(
        "--single-knee-fraction",
        type=float,
        default=0.05,
        metavar="F",
        help="fraction of films showing one knee only (default 0.05)",
    )
    parser.add_argument(
        "--compression",
        choices=("none", "rle", "jpeg2000", "mixed"),
        default="none",
        help="lossless pixel compression (default none; mixed: each film draws one)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="all",
        help="draw shapes from the training subjects, the held-out subjects, or all (default all)",
    )
    parser.add_argument(
        "--implant-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of bilateral films where one knee is a knee replacement, without ground truth (default 0)",
    )
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: CPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kneel.synth import generate_cohort

    summary = generate_cohort(
        args.out,
        args.n,
        seed=args.seed,
        layout=args.layout,
        single_knee_fraction=args.single_knee_fraction,
        compression=args.compression,
        split=args.split,
        workers=args.workers,
        progress=not args.no_progress,
        implant_fraction=args.implant_fraction,
    )
    print(summary.summary())
    return 0
