"""Does precision hold across the cohort? A model's end-to-end error broken down by film and knee attributes.

Writes (or reuses) a held-out synthetic cohort that mixes what real collections mix: KL grades 0-4, pixel spacings
0.1-0.2 mm, MONOCHROME1/2, lossless compressions (none, RLE, JPEG 2000), single-knee films and films whose other
knee is an implant (``kneel synth --split test --compression mixed --single-knee-fraction F --implant-fraction F``);
runs ``kneel predict`` (:func:`kneel.inference.predict_files`, default settings) on it; pairs the predictions with
the exact ground truth (:func:`kneel.evaluation.matching.match_predictions`) and prints, per attribute and level,
the knees, their mean landmark error, its 95 % bootstrap interval and its ratio to the overall mean (issue bar: no
level above 2x). Knees missed by the pipeline are counted per level and excluded from the means.

Usage: ``python benchmarks/breakdown.py --model MODEL [--films 120] [--seed 11] [--work DIR] [--markdown FILE]``;
the model defaults to ``$KNEEL_TINY_MODEL``. Without a model it says so and exits (``make bench`` runs it that way).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import match_predictions, read_ground_truth, read_table
from kneel.evaluation.metrics import bootstrap_ci
from kneel.inference import predict_files
from kneel.synth import generate_cohort

RATIO_BAR = 2.0
"""Issue 11 item 3: no level's mean error above twice the overall mean."""
SPACING_BINS = ((0.0, 0.125, "0.10-0.12 mm"), (0.125, 0.165, "0.15-0.16 mm"), (0.165, 1.0, "0.17-0.20 mm"))


def spacing_bin(mm: float) -> str:
    """The spacing level of a film (the generator draws 0.1-0.2 mm, clustered as in real collections)."""
    for low, high, name in SPACING_BINS:
        if low <= mm < high:
            return name
    return f"{mm:.3f} mm"


def knee_attributes(films: pd.DataFrame) -> pd.DataFrame:
    """One row per knee with ground truth (``file,side``) and the attributes the breakdown groups by."""
    rows = []
    for film in films.itertuples(index=False):
        sides = str(film.sides)
        implant = isinstance(film.implants, str) and film.implants.strip() != ""
        for side in sides:
            rows.append(
                {
                    "file": film.file,
                    "side": side,
                    "spacing": spacing_bin(float(film.spacing_row_mm)),
                    "photometry": film.photometric,
                    "compression": film.compression,
                    "film": "single knee"
                    if len(sides) == 1 and not implant
                    else ("implant on the other knee" if implant else "bilateral"),
                    "modality": film.modality,
                    "response": film.response,
                }
            )
    return pd.DataFrame(rows)


def breakdown(knees: pd.DataFrame, errors_mm: np.ndarray, factors: list[str]) -> pd.DataFrame:
    """Per factor and level: knees, missed knees, mean landmark error with its 95 % bootstrap interval (knees
    resampled), ratio to the overall mean. ``knees`` has one row per row of ``errors_mm`` (knees x 16, NaN = missed)."""
    overall = float(np.nanmean(errors_mm))
    out = [{"factor": "all", "level": "all", **_cell(errors_mm, overall)}]
    for factor in factors:
        for level, group in knees.groupby(factor, sort=True):
            out.append({"factor": factor, "level": str(level), **_cell(errors_mm[group.index.to_numpy()], overall)})
    return pd.DataFrame(out)


def _cell(errors_mm: np.ndarray, overall: float) -> dict[str, object]:
    found = ~np.all(np.isnan(errors_mm), axis=1)
    if not found.any():
        return {"knees": len(errors_mm), "missed": len(errors_mm), "mean_mm": np.nan, "ci": "", "ratio": np.nan}
    low, high = bootstrap_ci(errors_mm[found], {"all": list(range(errors_mm.shape[1]))}, (2.5,))["mean_mm"]
    mean = float(np.nanmean(errors_mm[found]))
    return {
        "knees": len(errors_mm),
        "missed": int((~found).sum()),
        "mean_mm": mean,
        "ci": f"{low:.2f}-{high:.2f}",
        "ratio": mean / overall,
    }


def markdown(table: pd.DataFrame, title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| Attribute | Level | Knees | Missed | Mean (mm) | 95 % CI | x overall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        flag = " **over 2x**" if np.isfinite(r.ratio) and r.ratio > RATIO_BAR else ""
        lines.append(
            f"| {r.factor} | {r.level} | {r.knees} | {r.missed} | {r.mean_mm:.2f} | {r.ci} | {r.ratio:.2f}{flag} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("KNEEL_TINY_MODEL"), help="model folder (lc/ and hc/)")
    parser.add_argument("--films", type=int, default=120, help="held-out synthetic films")
    parser.add_argument("--seed", type=int, default=11, help="cohort seed")
    parser.add_argument("--single-knee-fraction", type=float, default=0.2)
    parser.add_argument("--implant-fraction", type=float, default=0.15)
    parser.add_argument("--work", type=Path, help="cohort and predictions folder (default: a temporary one)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--name", default="", help="model label in the table's title")
    args = parser.parse_args(argv)
    if not args.model:
        print("breakdown: no model (--model or $KNEEL_TINY_MODEL); skipped")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="kneel_breakdown_"))
    cohort = work / f"cohort_{args.films}_{args.seed}"
    if not (cohort / "films.csv").is_file():
        generate_cohort(
            cohort,
            args.films,
            seed=args.seed,
            layout="flat",
            split="test",
            compression="mixed",
            single_knee_fraction=args.single_knee_fraction,
            implant_fraction=args.implant_fraction,
            progress=True,
        )
    pred_dir = work / f"pred_{Path(args.model).resolve().name}"
    started = time.perf_counter()
    predict_files([cohort], args.model, pred_dir, progress=True)
    seconds = time.perf_counter() - started
    knees = match_predictions(
        read_table(pred_dir / "landmarks.csv"), read_ground_truth(cohort / "ground_truth.csv"), name="model"
    )
    per_knee = pd.DataFrame(
        {
            "file": [Path(f).name for f in knees.files],
            "side": knees.sides,
            "kl": [f"KL{int(k)}" if np.isfinite(k) else "KL?" for k in knees.kl],
        }
    )
    attrs = knee_attributes(pd.read_csv(cohort / "films.csv"))
    per_knee = per_knee.merge(attrs, on=["file", "side"], how="left", validate="one_to_one")
    factors = ["kl", "spacing", "photometry", "compression", "film", "modality", "response"]
    table = breakdown(per_knee, knees.errors, factors)
    title = f"Error breakdown: {args.name or args.model}, {args.films} held-out films (seed {args.seed})"
    text = markdown(table, title)
    print(text)
    worst = table[table["factor"] != "all"]["ratio"].max()
    print(f"worst level: {worst:.2f}x the overall mean (bar {RATIO_BAR}x); prediction {seconds:.0f} s; work {work}")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
