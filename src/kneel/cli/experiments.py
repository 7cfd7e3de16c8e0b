"""``kneel experiments run CFG.yaml ... --data DATA --out DIR [--gpus 0,1]``: train a grid of experiments."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, help="run: train a grid of configs")
    run_p = sub.add_parser(
        "run",
        help="train every config (one per GPU at a time, or in turn on the CPU)",
        formatter_class=parser.formatter_class,
    )
    run_p.add_argument("configs", nargs="+", metavar="CFG.yaml", help="experiment configs (e.g. configs/paper/*.yaml)")
    run_p.add_argument("--data", required=True, metavar="DATA", help="prepared-data folder (kneel prepare)")
    run_p.add_argument("--out", required=True, metavar="DIR", help="each experiment trains into DIR/<config stem>/")
    run_p.add_argument("--gpus", metavar="0,1", help="GPU ids; one experiment per GPU (default: in turn on CPU)")
    run_p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="key=value",
        help="override applied to every experiment (repeatable), e.g. --set epochs=2",
    )


def run(args: argparse.Namespace) -> int:
    from kneel.errors import ConfigError
    from kneel.training.experiments import run_experiments

    gpus = None
    if args.gpus:
        try:
            gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
        except ValueError:
            raise ConfigError(f"--gpus: expected comma-separated integers, got {args.gpus!r}") from None
    outcomes = run_experiments(args.configs, args.data, args.out, gpus=gpus, overrides=args.overrides)
    failed = [o for o in outcomes if o.returncode != 0]
    for o in outcomes:
        print(f"{o.name:60s} {'ok' if o.returncode == 0 else 'FAILED'} {o.seconds:8.0f} s  {o.out}")
    return 1 if failed else 0
