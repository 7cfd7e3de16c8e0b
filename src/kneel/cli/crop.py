"""``kneel crop``: standard knee ROIs (16-bit PNG or npz) with their exact affine transforms and the landmarks in the
crop frame (``kneel.measure.crop``)."""

from __future__ import annotations

import argparse

from kneel.cli.measure import add_source_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: crops/, crops.csv, landmarks.csv")
    parser.add_argument(
        "--size-mm", type=float, default=140.0, help="side of the square ROI in mm (default %(default)s, DeepKnee)"
    )
    parser.add_argument(
        "--crop-spacing",
        type=float,
        default=0.4,
        metavar="MM",
        help="pixel spacing of the crops in mm (default %(default)s: 350 px for 140 mm, DeepKnee)",
    )
    parser.add_argument(
        "--level", action="store_true", help="rotate each ROI about T4 so the tibial plateau line T1-T7 is horizontal"
    )
    parser.add_argument(
        "--no-mirror", action="store_true", help="keep left knees as they are (default: mirrored to the right view)"
    )
    parser.add_argument(
        "--intensity",
        choices=("window", "raw"),
        default="window",
        help="window: the film's 5th-99th percentile -> 0-65535 (default); raw: the radiograph's values, clipped",
    )
    parser.add_argument("--format", choices=("png", "npz"), default="png", help="16-bit PNG (default) or npz")


def run(args: argparse.Namespace) -> int:
    from kneel.measure.crop import CropSettings, crop

    try:
        settings = CropSettings(
            size_mm=args.size_mm,
            spacing_mm=args.crop_spacing,
            level=args.level,
            mirror_left=not args.no_mirror,
            intensity=args.intensity,
            image_format=args.format,
        )
    except ValueError as exc:
        raise SystemExit(f"kneel crop: error: {exc}") from None
    summary = crop(args.source, args.out, settings, images=args.images, spacing=args.spacing)
    print(
        f"{summary.written} crops of {settings.size_px} x {settings.size_px} px ({settings.size_mm:g} mm at "
        f"{settings.spacing_mm:g} mm) in {summary.out / 'crops'}; {summary.failed} failed; "
        f"table {summary.out / 'crops.csv'}, landmarks {summary.out / 'landmarks.csv'}"
    )
    return 0 if summary.failed == 0 else 1
