"""``kneel serve --model DIR [--host 127.0.0.1] [--port 5000]``: the HTTP service (see ``docs/inference.md``)."""

from __future__ import annotations

import argparse

from kneel.service.defaults import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_BYTES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model directory MODEL/{lc,hc}/fold_<k>/, or a fetched published model's name (kneel-2019: kneel models "
        "fetch kneel-2019)",
    )
    parser.add_argument(
        "--lc-model",
        metavar="DIR",
        help="the low-cost stage, when --model holds only the high-cost one: a model folder with lc/ or that lc/ "
        "folder; default: --model's lc/",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=5000, help="TCP port to listen on")
    parser.add_argument("--device", default="cpu", help="where the networks run: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="fp32: exact; bf16/fp16: autocast, faster on GPUs and AVX512-BF16/AMX CPUs, not exact; int8: CPU only, "
        "calibrated on 16 synthetic training films at the first start with a model, then cached (see docs/models.md)",
    )
    parser.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-centre each ROI on the predicted tibial landmark 4 and predict again",
    )
    parser.add_argument(
        "--reference-geometry", action="store_true", help="reproduce the original KNEEL pipeline (inexact; off)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help='skip the knee presence decision for every request (a request can also ask for it: "force": true)',
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
        help="largest request body accepted, in MiB (larger: 413)",
    )
    parser.add_argument(
        "--max-active",
        type=int,
        default=DEFAULT_MAX_ACTIVE,
        help="prediction requests at work at once (read, prepared, predicted)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="requests waiting, body unread, for a place at work; more are answered 503 with Retry-After",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from kneel.hub import resolve_model, terms_notice
    from kneel.service import serve

    model = resolve_model(args.model)
    notice = terms_notice(model)  # a fetched published model: its terms and citation
    if notice:
        print(notice, file=sys.stderr)
    serve(
        model,
        args.host,
        args.port,
        device=args.device,
        precision=args.precision,
        refine=args.refine,
        reference_geometry=args.reference_geometry,
        force=args.force,
        lc_model=args.lc_model,
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        max_active=args.max_active,
        max_queue=args.max_queue,
        log_level=args.log_level,
    )
    return 0
