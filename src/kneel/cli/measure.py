"""``kneel measure``: joint-space widths, plateau and condyle widths and joint-line angles of every knee, with
uncertainties; optionally their agreement with ground truth (``kneel.measure``)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


def spacing_arg(text: str) -> tuple[float, float]:
    """``0.15`` or ``0.15,0.14`` (row,col) in mm."""
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or any(not v > 0 for v in parts):
        raise argparse.ArgumentTypeError("--spacing takes MM or ROW_MM,COL_MM (positive numbers)")
    return (parts[0], parts[-1])


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The landmark source and where spacing comes from (shared with ``kneel crop``)."""
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a landmark table (file,side,landmark,x_px,y_px,...: predictions, ground truth, corrections) "
        "or a 'kneel predict --out' folder",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="folder of the radiographs (spacing when the source has none; pixels)"
    )
    parser.add_argument(
        "--spacing",
        type=spacing_arg,
        metavar="MM",
        help="pixel spacing (MM or ROW,COL) for knees whose spacing nothing else gives (table columns row_mm,col_mm, "
        "prediction JSON, x_mm/x_px, the image)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: measurements.csv, .json")
    parser.add_argument(
        "--coverage",
        type=float,
        metavar="C",
        help="coverage of the landmark uncertainty_mm radii (0-1; default: as the predictions state, else 0.9); "
        "uncertainties are half-widths at the same coverage",
    )
    parser.add_argument("--samples", type=int, default=2000, help="Monte-Carlo samples per knee (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo draws (default %(default)s)")
    parser.add_argument(
        "--truth",
        metavar="SOURCE",
        help="ground truth to compare with (table or folder; same --images/--spacing): writes agreement.csv, .md "
        "and bland_altman.png",
    )


def run(args: argparse.Namespace) -> int:
    from kneel.measure import measure, write_agreement, write_measurements
    from kneel.measure.definitions import MEASUREMENTS

    if args.coverage is not None and not 0.0 < args.coverage < 1.0:
        raise SystemExit("kneel measure: error: --coverage must lie strictly between 0 and 1")
    table = measure(
        args.source, images=args.images, spacing=args.spacing, coverage=args.coverage, samples=args.samples,
        seed=args.seed,
    )  # fmt: skip
    paths = write_measurements(table, args.out, samples=args.samples, seed=args.seed)
    ok = table["status"] == "ok"
    print(f"{int(ok.sum())} of {len(table)} knees measured")
    for file, side, status in table.loc[~ok, ["file", "side", "status"]].itertuples(index=False):
        print(f"  {file} {side}: {status}")
    if ok.any():
        print("| measurement | mean | sd | median uncertainty |")
        print("|---|---|---|---|")
        for m in MEASUREMENTS:
            values = table.loc[ok, m.name]
            unc = table.loc[ok, f"{m.name}_uncertainty"]
            unit = "" if m.unit == "1" else f" {m.unit}"
            median_u = f"{unc.median():.3g}{unit}" if unc.notna().any() else "n/a"
            print(f"| {m.name} | {values.mean():.3g}{unit} | {values.std():.3g} | {median_u} |")
    if args.truth:
        with tempfile.TemporaryDirectory(prefix="kneel-measure-") as tmp:
            truth_source = _truth_with_source_spacing(args.truth, table, Path(tmp), args.images, args.spacing)
            truth = measure(truth_source, images=args.images, spacing=args.spacing, samples=0)
        missing = truth["status"] != "ok"
        if missing.all():
            why = truth["status"].iloc[0] if len(truth) else "no knees"
            raise SystemExit(f"kneel measure: error: no knee of the ground truth {args.truth} could be measured "
                             f"({why}); pass --images or --spacing")  # fmt: skip
        for file, side, status in truth.loc[missing, ["file", "side", "status"]].itertuples(index=False):
            print(f"  ground truth {file} {side}: {status}")
        paths += write_agreement(table, truth, args.out, title=f"{args.source} vs {args.truth}")
        print((paths[-2]).read_text(encoding="utf-8"))
    for path in paths:
        print(f"wrote {path}")
    return 0


def _truth_with_source_spacing(truth: str, measured: Any, tmp: Path, images: Any, spacing: Any) -> str:
    """The ground-truth table with each film's spacing from the measured source when the table has none and neither
    ``--images`` nor ``--spacing`` is given: the truth of a ``kneel predict`` folder is usually a bare landmark table
    of the same films, and those films' spacing is already known from the predictions."""
    import pandas as pd

    from kneel.measure.agreement import pair_tables

    path = Path(truth)
    if images is not None or spacing is not None or not path.is_file():
        return truth
    try:
        table = pd.read_csv(path, dtype={"file": str})
    except (OSError, ValueError):
        return truth  # measure() names the problem
    if not {"file", "side"} <= set(table.columns) or {"row_mm", "col_mm"} <= set(table.columns):
        return truth
    known = measured.loc[measured["row_mm"].notna(), ["file", "side", "row_mm", "col_mm"]]
    if known.empty:
        return truth
    # the films paired by the agreement's own file-name rule, so that spacing and comparison pair the same knees
    knees = table[["file", "side"]].drop_duplicates().astype({"file": str, "side": str})
    paired = pair_tables(knees, known.astype({"file": str, "side": str}))[["file", "side", "row_mm", "col_mm"]]
    merged = table.astype({"side": str}).merge(paired, on=["file", "side"], how="left")
    out = tmp / "truth_with_spacing.csv"
    merged.to_csv(out, index=False)
    return str(out)
