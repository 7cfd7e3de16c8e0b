"""``kneel serve --model DIR [--host 127.0.0.1] [--port 5000]``: the HTTP service (see ``docs/inference.md``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory MODEL/{lc,hc}/fold_<k>/")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--reference-geometry", action="store_true", help="the reference's inexact output mapping")
    parser.add_argument(
        "--force",
        action="store_true",
        help='skip the knee presence decision for every request (a request can also ask for it: "force": true)',
    )
    parser.add_argument("--max-request-mb", type=float, default=64.0, help="largest request body accepted (MiB)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    from kneel.service import serve

    serve(
        args.model,
        args.host,
        args.port,
        device=args.device,
        precision=args.precision,
        refine=args.refine,
        reference_geometry=args.reference_geometry,
        force=args.force,
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        log_level=args.log_level,
    )
    return 0
