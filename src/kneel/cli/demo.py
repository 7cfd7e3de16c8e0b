"""``kneel demo``: synthetic cohort -> prepare -> train -> predict -> evaluate -> report.html (resumable)."""

from __future__ import annotations

import argparse

from kneel.demo.pipeline import DemoSettings

_DEFAULTS = DemoSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (default %(default)s); re-runs resume")
    parser.add_argument("--train-images", type=int, default=_DEFAULTS.train_images, help="training films")
    parser.add_argument("--test-images", type=int, default=_DEFAULTS.test_images, help="held-out test films")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=_DEFAULTS.calibration_images,
        help="films that calibrate the uncertainty radius",
    )
    parser.add_argument("--folds", type=int, default=_DEFAULTS.folds, help="cross-validation folds")
    parser.add_argument("--lc-epochs", type=int, default=_DEFAULTS.lc_epochs, help="low-cost training epochs")
    parser.add_argument("--hc-epochs", type=int, default=_DEFAULTS.hc_epochs, help="high-cost training epochs")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="cohort and fold seed")
    parser.add_argument("--workers", type=int, default=_DEFAULTS.workers, help="processes for synth and prepare")
    parser.add_argument("--threads", type=int, default=_DEFAULTS.threads, help="torch threads (0: all cores)")
    parser.add_argument(
        "--fold-processes",
        type=int,
        default=_DEFAULTS.fold_processes,
        help="folds trained side by side, one process each",
    )
    parser.add_argument(
        "--keep-films",
        action="store_true",
        help="keep the training and calibration films after their last use (~6 GiB at the defaults)",
    )
    parser.add_argument("--lc-config", default=_DEFAULTS.lc_config, help="low-cost training config")
    parser.add_argument("--hc-config", default=_DEFAULTS.hc_config, help="high-cost training config")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (step lines are still printed)")


def run(args: argparse.Namespace) -> int:
    from kneel.demo import run_demo

    settings = DemoSettings(
        train_images=args.train_images,
        test_images=args.test_images,
        calibration_images=args.calibration_images,
        seed=args.seed,
        folds=args.folds,
        lc_epochs=args.lc_epochs,
        hc_epochs=args.hc_epochs,
        lc_config=args.lc_config,
        hc_config=args.hc_config,
        workers=args.workers,
        threads=args.threads,
        fold_processes=args.fold_processes,
        keep_films=args.keep_films,
    )
    result = run_demo(args.out, settings, progress=not args.quiet)
    print()
    print(result.summary_md.read_text(encoding="utf-8"))
    print(f"kneel demo finished in {result.seconds:.0f} s")
    print(f"report: {result.report_html.resolve()}")
    print(f"summary: {result.summary_md.resolve()}")
    return 0
