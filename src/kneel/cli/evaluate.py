"""``kneel evaluate``: compare predicted landmarks with ground truth; tables, curves, examples and report.html."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        action="append",
        required=True,
        metavar="CSV",
        help="prediction table (long format); repeat to compare several sets",
    )
    parser.add_argument(
        "--gt",
        required=True,
        metavar="CSV",
        help="ground truth: long table (file,side,landmark,x_px,y_px[,kl]), VIA export or bf CSV",
    )
    parser.add_argument("--kl", metavar="CSV", help="KL grades per knee (file,side,kl)")
    parser.add_argument("--thresholds", default="1,1.5,2,2.5", help="recall thresholds in mm (default %(default)s)")
    parser.add_argument("--images", metavar="DIR", help="folder of the radiographs (spacing; example ROIs)")
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="LABEL",
        help="label of each --pred set, in order (default: file stems)",
    )
    parser.add_argument(
        "--spacing", type=float, metavar="MM", help="fallback pixel spacing when nothing else gives one"
    )
    parser.add_argument(
        "--grouping",
        choices=("test", "cv"),
        default="test",
        help="bone grouping of the recall columns: test (tibia 0,4,8 / femur 9,12,15) or cv (0,8 / 9,15); "
        "default %(default)s",
    )
    parser.add_argument(
        "--coverage",
        type=float,
        metavar="P",
        help="stated coverage (0-1) of uncertainty_mm in every --pred table (default: what the kneel predict folder "
        "of each table records in results/*.json)",
    )
    parser.add_argument(
        "--calibration",
        metavar="PATH",
        help="model folder or its calibration.json: draws the whole stated-vs-observed coverage curve (multipliers "
        "at other coverages); the stated coverage of tables that record none",
    )
    parser.add_argument("--title", default="Landmark evaluation", help="report title")
    parser.add_argument("--no-examples", action="store_true", help="skip the example ROI pictures")
    parser.add_argument(
        "--no-measurements",
        action="store_true",
        help="skip the measurements (joint-space widths, angles) from predicted vs true landmarks",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")


def run(args: argparse.Namespace) -> int:
    from kneel.evaluation import evaluate

    report = evaluate(
        args.pred,
        args.gt,
        out=args.out,
        kl=args.kl,
        thresholds=args.thresholds,
        images=args.images,
        names=args.names,
        spacing=args.spacing,
        title=args.title,
        examples=not args.no_examples,
        measurements=not args.no_measurements,
        grouping=args.grouping,
        coverage=args.coverage,
        calibration=args.calibration,
    )
    print(report.markdown.read_text(encoding="utf-8"))
    print(f"report: {report.html}")
    return 0
