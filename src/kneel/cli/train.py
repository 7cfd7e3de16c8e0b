"""``kneel train --config CFG.yaml --data DATA --out MODEL [key=value ...]``: train one stage's folds."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        metavar="CFG.yaml",
        help="experiment config: a YAML file, or the name of a shipped one "
        "(tiny_lc.yaml, tiny_hc.yaml, paper/<name>.yaml)",
    )
    parser.add_argument("--data", required=True, metavar="DATA", help="prepared-data folder (kneel prepare)")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model folder; the stage goes to MODEL/lc|hc")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. epochs=2 folds=2")
    parser.add_argument(
        "--init-from",
        metavar="DIR",
        help="low-cost model folder for transfer to the hc stage (refused unless trained on the same folds)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue each fold from its last checkpoint (refused if the config differs, naming the keys)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--folds", metavar="0,1", help="train only these folds (comma-separated)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from kneel.errors import ConfigError
    from kneel.training import train

    folds = None
    if args.folds:
        try:
            folds = [int(f) for f in args.folds.split(",") if f.strip()]
        except ValueError:
            raise ConfigError(f"--folds: expected comma-separated integers, got {args.folds!r}") from None
    result = train(
        args.config,
        args.data,
        args.out,
        overrides=args.overrides,
        folds=folds,
        init_from=args.init_from,
        resume=args.resume,
        device=args.device,
        progress=not args.no_progress,
    )
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        for fold in result.folds:
            best = fold.best
            print(
                f"{result.config.stage} fold {fold.fold}: best epoch {fold.best_epoch}, val loss "
                f"{fold.best_val_loss:.5f}, mean error {best.get('val_mean_mm', float('nan')):.3f} mm"
            )
        print(f"models: {result.stage_dir}")
        if result.oof_predictions is not None:
            print(f"out-of-fold predictions: {result.oof_predictions}")
    return 0
