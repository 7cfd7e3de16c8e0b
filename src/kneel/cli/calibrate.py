"""``kneel calibrate --model MODEL IMAGES... --gt GT.csv``: fit the model's uncertainty radius on annotated films."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="annotated radiographs (files, folders, globs)")
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="model folder (calibration.json goes there), or a fetched published model's name (kneel-2019)",
    )
    parser.add_argument(
        "--gt", required=True, metavar="CSV", help="ground truth of IMAGES: landmark table, VIA or bf_landmarks CSV"
    )
    parser.add_argument(
        "--coverage",
        type=float,
        default=0.9,
        help="probability that the true landmark lies within the radius (default %(default)s)",
    )
    parser.add_argument(
        "--flag-radius",
        type=float,
        default=5.0,
        metavar="MM",
        help="a landmark this far (mm) from the truth is 'far off'; knees likely to have one are flagged "
        "'uncertain' (default %(default)s mm)",
    )
    parser.add_argument(
        "--flag-probability",
        type=float,
        metavar="P",
        help="flag a knee 'uncertain' when its estimated probability of a far-off landmark exceeds P "
        "(default 1 - coverage)",
    )
    parser.add_argument(
        "--review-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="also flag the knees whose largest radius exceeds that of the least certain share F of the calibration "
        "knees: the knees to review first (default %(default)s; 0: off)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the calibration run's predictions (default MODEL/calibration_predictions)",
    )
    parser.add_argument("--spacing", type=float, metavar="MM", help="pixel spacing of images without one (PNG)")
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="predict each ROI mirrored too and use the mirror distance as a signal (then always on in predictions; "
        "only for high-cost models trained on mirrored ROIs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from kneel.inference.calibrate import calibrate_model

    result = calibrate_model(
        args.model,
        args.images,
        args.gt,
        out=args.out,
        coverage=args.coverage,
        flag_radius_mm=args.flag_radius,
        flag_probability=args.flag_probability,
        review_fraction=args.review_fraction,
        spacing=args.spacing,
        progress=not args.no_progress,
        flip_tta=args.flip_tta,
    )
    cal = result.calibration
    diag = cal.diagnostics
    if cal.cross_folds:
        print(f"calibrated on {result.knees} knees (conformal ratios cross-fitted over {cal.cross_folds} folds)")
    else:
        print(f"calibrated on {result.knees} knees (model on {cal.n_fit}, conformal quantile on {cal.n_conformal})")
    print(f"signals used: {', '.join(f'{s} (weight {w:.2f})' for s, w in zip(cal.signals, cal.weights, strict=True))}")
    for name, corr in diag.get("rank_correlation", {}).items():
        print(
            f"  {name}: rank correlation with the error {corr['landmark']:.2f} per landmark, "
            f"{corr['knee']:.2f} per knee"
        )
    print(
        f"radius at {cal.coverage:.0%}: {cal.multiplier:.2f} x the predicted error; "
        f"median {diag['median_radius_mm']:.2f} mm"
        f" (mean error {diag['mean_error_mm']:.2f} mm)"
    )
    print(
        f"knee flag: 'uncertain' when the estimated probability that a landmark lies {cal.flag_radius_mm:g} mm or "
        f"more off exceeds {cal.flag_above:.0%}"
        + (
            f" or the largest radius exceeds {cal.review_radius_mm:.2f} mm (the least certain "
            f"{cal.review_fraction:.0%} of these knees)"
            if cal.review_radius_mm is not None
            else ""
        )
        + f": {diag['knees_flagged']:.0%} of the calibration knees"
    )
    print(f"written: {result.path}")
    return 0
