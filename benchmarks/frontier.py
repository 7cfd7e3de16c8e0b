"""Accuracy versus training time: train a preset pair through the whole demo pipeline and record one frontier point.

One point = ``kneel demo`` (:func:`kneel.demo.run_demo`: synthetic cohorts -> prepare -> LC -> HC with transfer ->
calibrate -> predict the held-out films from DICOM -> evaluate) with the given configs, sizes and epochs. The row
records the training seconds (LC + HC steps), the whole run's seconds, the machine's load and the held-out result
(mean landmark error, share of knees with a mean error <= 2.5 mm) and is appended to a CSV; the plot (mean error
against training minutes, log scale) is redrawn from every row of that CSV.

Usage::

    python benchmarks/frontier.py --name tiny-demo                       # the default demo's settings
    python benchmarks/frontier.py --name small --preset small            # kneel demo --preset small; resumable
    python benchmarks/frontier.py --name small-1200 --preset small --train-images 1200 --hc-epochs 20 \\
        --out frontier_runs/small-1200                                   # resumable: run it again to continue
    python benchmarks/frontier.py                                        # print the recorded table, redraw the plot

The table and plot default to ``docs/frontier.csv`` and ``docs/frontier.png``. Runs are resumable step by step (the
demo's stamps), so an interrupted point continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd

from kneel.demo import DEMO_PRESETS, DemoSettings, run_demo
from kneel.io.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
TABLE = HERE.parent / "docs" / "frontier.csv"
COLUMNS = [
    "name",
    "date",
    "lc_config",
    "hc_config",
    "train_images",
    "folds",
    "lc_epochs",
    "hc_epochs",
    "training_s",
    "total_s",
    "mean_mm",
    "median_mm",
    "knees",
    "knees_missing",
    "knees_within_2_5mm_pct",
    "cpus",
    "load_before",
    "load_after",
]


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_point(name: str, settings: DemoSettings, out: Path) -> dict[str, object]:
    """Run (or resume) the demo with ``settings`` under ``out`` and return the frontier row."""
    load_before = _load()
    result = run_demo(out, settings, progress=False, stream=sys.stderr)
    steps = {s["step"]: s["seconds"] for s in result.steps}
    exact = result.headline["exact geometry"]
    errors = pd.read_csv(out / "evaluation" / "test" / "errors_exact_geometry.csv", dtype={"file": str})
    knee_mean = errors.groupby(["file", "side"])["error_mm"].mean()
    return {
        "name": name,
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "lc_config": settings.lc_config,
        "hc_config": settings.hc_config,
        "train_images": settings.train_images,
        "folds": settings.folds,
        "lc_epochs": settings.lc_epochs,
        "hc_epochs": settings.hc_epochs,
        "training_s": round(steps.get("train_lc", 0.0) + steps.get("train_hc", 0.0), 1),
        "total_s": round(sum(steps.values()), 1),
        "mean_mm": round(float(exact["mean_mm"]), 4),
        "median_mm": round(float(exact["median_mm"]), 4),
        "knees": int(exact["knees"]),
        "knees_missing": int(exact.get("knees_missing", 0)),
        "knees_within_2_5mm_pct": round(100.0 * float((knee_mean <= 2.5).mean()), 1),
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(_load(), 2),
    }


def append_row(table: Path, row: dict[str, object]) -> pd.DataFrame:
    """Add ``row`` to ``table`` (replacing an earlier row of the same name), written atomically."""
    old = pd.read_csv(table) if table.is_file() else pd.DataFrame(columns=COLUMNS)
    old = old[old["name"] != row["name"]]
    new = pd.concat([old, pd.DataFrame([row])], ignore_index=True)[COLUMNS]
    buffer = io.StringIO()
    new.to_csv(buffer, index=False)
    table.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table, buffer.getvalue())
    return new


def plot(table: pd.DataFrame, path: Path) -> Path | None:
    """Mean held-out error against training minutes (log x), one labelled point per row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for preset, group in table.groupby(table["hc_config"].str.replace(".yaml", "", regex=False)):
        ax.plot(group["training_s"] / 60.0, group["mean_mm"], "o", label=preset)
        for _, r in group.iterrows():
            ax.annotate(str(r["name"]), (r["training_s"] / 60.0, r["mean_mm"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")  # 0.5 mm and 7 mm points on one readable axis
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.0f"))
    ax.set_xlabel("training time, LC + HC (minutes, 2-core CPU)")
    ax.set_ylabel("held-out mean landmark error (mm)")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.text(ax.get_xlim()[0], 0.8, " 0.8 mm (issue 11 small-model bar)", fontsize=7, va="bottom", color="grey")
    ax.set_title("kneel on synthetic films: accuracy vs training time", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="name of the point (its row); without it: print the table, redraw the plot")
    parser.add_argument("--out", type=Path, help="the run's folder (default frontier_runs/NAME); resumable")
    parser.add_argument("--table", type=Path, default=TABLE, help="CSV of points (default %(default)s)")
    parser.add_argument("--plot", type=Path, help="plot file (default: the table's name with .png)")
    parser.add_argument("--preset", choices=sorted(DEMO_PRESETS), default="tiny", help="kneel demo --preset")
    defaults = DemoSettings()
    for f in fields(DemoSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", default=None, help=f"demo setting {f.name}")
        else:
            kind = int if isinstance(getattr(defaults, f.name), int) else str
            parser.add_argument(flag, type=kind, default=None, help=f"demo setting {f.name} (default: the preset's)")
    args = parser.parse_args(argv)
    plot_path = args.plot or args.table.with_suffix(".png")
    if args.name:
        given = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if getattr(args, f.name) is not None}
        settings = dataclasses.replace(DEMO_PRESETS[args.preset], **given)
        out = args.out or Path("frontier_runs") / args.name
        table = append_row(args.table, run_point(args.name, settings, out))
    elif args.table.is_file():
        table = pd.read_csv(args.table)
    else:
        print(f"no frontier table at {args.table}; run a point with --name NAME")
        return 0
    try:
        print(table.to_markdown(index=False))
    except ImportError:  # tabulate is optional
        print(table.to_string(index=False))
    if len(table):
        drawn = plot(table, plot_path)
        if drawn is not None:
            print(f"plot: {drawn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
