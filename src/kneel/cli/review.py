"""``kneel review PRED_DIR``: check and correct predicted landmarks in the browser (see ``docs/review.md``);
``kneel review export PRED_DIR``: the reviewed knees as ground truth for ``kneel evaluate`` and ``kneel prepare``."""

from __future__ import annotations

import argparse

from kneel.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "kneel review [export] PRED_DIR [options]"
    parser.add_argument(
        "words",
        nargs="+",
        metavar="[export] PRED_DIR",
        help="the --out folder of kneel predict; 'export PRED_DIR' writes the reviewed knees as ground truth",
    )
    web = parser.add_argument_group("review (kneel review PRED_DIR)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface, unsafe)")
    web.add_argument("--port", type=int, default=8765, help="TCP port to listen on")
    web.add_argument("--images", metavar="DIR", help="find the images here (by file key, then name) when they moved")
    web.add_argument("--gt", metavar="CSV", help="ground truth to show (landmark table, VIA or bf_landmarks CSV)")
    web.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level",
    )
    exp = parser.add_argument_group("export (kneel review export PRED_DIR)")
    exp.add_argument("--out", metavar="DIR", help="output folder (default: PRED_DIR/review/export)")
    exp.add_argument("--include-flagged", action="store_true", help="export flagged knees too")


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[0] == "export" and len(words) == 2:
        from kneel.review.export import export_reviews

        print(export_reviews(words[1], args.out, include_flagged=args.include_flagged).summary())
        return 0
    if len(words) != 1:
        raise ConfigError(f"expected PRED_DIR or export PRED_DIR, got {' '.join(words)}")
    from kneel.review.server import serve_review

    serve_review(words[0], args.host, args.port, images=args.images, gt=args.gt, log_level=args.log_level)
    return 0
