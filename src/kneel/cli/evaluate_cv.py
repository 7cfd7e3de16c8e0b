"""``kneel evaluate-cv RUN_DIR``: the evaluation report of a training run's out-of-fold predictions."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="model folder of a training run (holding lc/, hc/ with oof_predictions.csv)"
    )
    parser.add_argument("--thresholds", default="1,1.5,2,2.5", help="recall thresholds in mm (default %(default)s)")
    parser.add_argument("--images", metavar="DIR", help="folder of the (prepared) images for example ROIs")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/evaluation)")


def run(args: argparse.Namespace) -> int:
    from kneel.evaluation import evaluate_cv

    reports = evaluate_cv(args.run_dir, out=args.out, thresholds=args.thresholds, images=args.images)
    for stage, report in reports.items():
        print(f"== {stage} ==")
        print(report.markdown.read_text(encoding="utf-8"))
        print(f"report: {report.html}")
    return 0
