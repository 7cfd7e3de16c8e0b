"""``kneel convert-snapshot``: reference KNEEL snapshots (2019 .pth or 2024 safetensors) -> MODEL/<stage>/fold_<k>/."""

from __future__ import annotations

import argparse
import json

from kneel.errors import ConfigError


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="snapshot folder: fold_<k>_epoch_<e>.pth files (2019) or fold_<k>/ folders (2024)")
    parser.add_argument("--stage", required=True, choices=["lc", "hc"], help="low-cost (lc) or high-cost (hc) model")
    parser.add_argument(
        "--mean-std", dest="mean_std", default=None, help="the release's mean_std.npy (default: looked up beside SRC)"
    )
    parser.add_argument("--out", required=True, help="model root; folds go to OUT/<stage>/fold_<k>/")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="force a network argument over the inferred one, e.g. --set legacy_nesting=true",
    )


def run(args: argparse.Namespace) -> int:
    from kneel.models.snapshot import convert_snapshot

    overrides = dict(args.overrides)
    known = {"n_outputs", "n_inputs", "base_width", "depth", "block", "se", "se_ratio", "legacy_nesting", "upmode"}
    unknown = sorted(set(overrides) - known - {"dropout", "beta"})
    if unknown:
        raise ConfigError(f"unknown network arguments: {', '.join(unknown)}")
    written = convert_snapshot(
        args.src, args.stage, args.out, mean_std=args.mean_std, overrides=overrides, progress=print
    )
    print(f"converted {len(written)} fold(s) into {args.out}/{args.stage}")
    return 0
