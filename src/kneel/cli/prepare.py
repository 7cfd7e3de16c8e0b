"""``kneel prepare``: build the low-cost and high-cost training datasets (see ``kneel.data.prepare``)."""

from __future__ import annotations

import argparse

from kneel.resources import bf_landmarks_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--oai", metavar="DIR", help="OAI folder with contents.csv (DICOM at DIR/<Folder>/001)")
    src.add_argument("--images", metavar="DIR", help="plain folder of radiographs named by subject id")
    parser.add_argument(
        "--annotations",
        metavar="CSV",
        default=None,
        help="bf_landmarks_1_0.3.csv or a landmark table file,side,landmark,x_px,y_px[,kl] in original pixels "
        "(default: the published annotations shipped with kneel)",
    )
    parser.add_argument("--out", metavar="DATA", required=True, help="output folder (lc/, hc/, folds.csv)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="parallel processes (default 1)")
    parser.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (0: none)")
    parser.add_argument("--stratify-kl", action="store_true", help="balance KL grades across folds")
    parser.add_argument("--seed", type=int, default=0, help="fold seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from kneel.data.prepare import prepare_datasets

    report = prepare_datasets(
        args.annotations or bf_landmarks_csv(),
        args.out,
        oai=args.oai,
        images=args.images,
        workers=args.workers,
        folds=args.folds,
        stratify_kl=args.stratify_kl,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(report.summary())  # a preparation that yields nothing raises NothingPreparedError (one line, exit 1)
    return 0
