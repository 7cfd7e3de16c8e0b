"""``kneel export-onnx``: one fold model -> ONNX (soft-argmax inside, dynamic batch), checked with ONNX Runtime."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a fold folder (MODEL/hc/fold_0) or a stage folder (MODEL/hc)")
    parser.add_argument("--out", required=True, help="destination .onnx file")
    parser.add_argument("--fold", type=int, default=None, help="fold to export from a stage folder (default: lowest)")
    parser.add_argument(
        "--exporter",
        choices=["auto", "dynamo", "torchscript"],
        default="auto",
        help="torch.export-based exporter (needs onnxscript) or the legacy TorchScript one",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the ONNX Runtime vs PyTorch comparison"
    )


def run(args: argparse.Namespace) -> int:
    from kneel.models.export import export_onnx

    path = export_onnx(
        args.model_dir, args.out, fold=args.fold, exporter=args.exporter, opset=args.opset, check=args.check
    )
    print(f"wrote {path}")
    return 0
