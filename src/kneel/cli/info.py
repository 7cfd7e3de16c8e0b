"""``kneel info FILE...``: size, spacing and its source, photometry, bits, transfer syntax (``kneel.io.info``)."""

from __future__ import annotations

import argparse


def _spacing(text: str) -> tuple[float, float]:
    """``0.15`` or ``0.15,0.14`` (row,col) in mm."""
    from kneel.io.errors import InvalidSpacingError
    from kneel.io.radiograph import parse_spacing

    try:
        return parse_spacing(text.replace(",", "\\"), tag="--spacing")
    except InvalidSpacingError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="DICOM files (any name), PNG/TIFF/JPEG, or folders")
    parser.add_argument(
        "--spacing",
        type=_spacing,
        default=None,
        metavar="MM",
        help="pixel spacing override in mm: one value or ROW,COL (wins over the file's tags; needed for PNG/TIFF/JPEG)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per file")


def run(args: argparse.Namespace) -> int:
    from kneel.io.info import info

    return info(args.files, spacing=args.spacing, json_output=args.json)
