"""``kneel demo``: synthetic cohort -> prepare -> train -> predict -> evaluate -> report.html (resumable)."""

from __future__ import annotations

import argparse
import dataclasses

from kneel.demo.pipeline import DEMO_PRESETS, DemoSettings

_DEFAULTS = DemoSettings()
_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("train_images", int, "training films"),
    ("test_images", int, "held-out test films"),
    ("calibration_images", int, "films that calibrate the uncertainty radius"),
    ("folds", int, "cross-validation folds"),
    ("hc_members", int, "high-cost networks per fold, each from its own seed (their spread ranks the errors)"),
    ("lc_epochs", int, "low-cost training epochs"),
    ("hc_epochs", int, "high-cost training epochs"),
    ("lc_val_from", int, "validate the low-cost folds from this epoch on (and after the first)"),
    ("hc_val_from", int, "validate the high-cost folds from this epoch on (and after the first)"),
    ("seed", int, "cohort and fold seed"),
    ("workers", int, "processes for synth and prepare"),
    ("threads", int, "torch threads (0: all cores)"),
    ("fold_processes", int, "folds trained side by side, one process each"),
    ("lc_config", str, "low-cost training config"),
    ("hc_config", str, "high-cost training config"),
)
"""The settings an option can set: (field of DemoSettings, type, help)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (default %(default)s); re-runs resume")
    parser.add_argument(
        "--preset",
        choices=sorted(DEMO_PRESETS),
        default="tiny",
        help="named settings (default %(default)s: the ~20-minute demo; small: the sub-millimetre width-16 models, "
        "about 41 minutes on 2 cores); the options below override single settings",
    )
    for name, kind, text in _OPTIONS:
        default = getattr(_DEFAULTS, name)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=f"{text} (tiny preset: {default})"
        )
    parser.add_argument(
        "--keep-films",
        action="store_true",
        help="keep the training and calibration films after their last use (~6 GiB at the defaults)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars (step lines are still printed)")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The preset's settings with every option given on the command line put over them."""
    given = {name: getattr(args, name) for name, _, _ in _OPTIONS if getattr(args, name) is not None}
    if args.keep_films:
        given["keep_films"] = True
    return dataclasses.replace(DEMO_PRESETS[args.preset], **given)


def run(args: argparse.Namespace) -> int:
    from kneel.demo import run_demo

    settings = settings_from_args(args)
    result = run_demo(args.out, settings, progress=not args.quiet)
    print()
    print(result.summary_md.read_text(encoding="utf-8"))
    print(f"kneel demo finished in {result.seconds:.0f} s")
    print(f"report: {result.report_html.resolve()}")
    print(f"summary: {result.summary_md.resolve()}")
    return 0
