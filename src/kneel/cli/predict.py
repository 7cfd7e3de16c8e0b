"""``kneel predict INPUT... --model DIR --out DIR``: landmarks for radiographs (see ``docs/inference.md``)."""

from __future__ import annotations

import argparse
import sys

from kneel.inference.engine import default_workers


def _spacing(text: str) -> float | tuple[float, float]:
    parts = [float(v) for v in text.replace(",", " ").split()]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError("--spacing takes MM or ROW_MM,COL_MM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="DICOM files, folders (recursive), globs, .txt lists"
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model directory MODEL/{lc,hc}/fold_<k>/, or a fetched published model's name (kneel-2019: kneel models "
        "fetch kneel-2019)",
    )
    parser.add_argument(
        "--lc-model",
        metavar="DIR",
        help="the low-cost stage, when --model holds only the high-cost one (a run of an experiment grid): a model "
        "folder with lc/ (e.g. GRID/<low-cost run>) or that lc/ folder; default: --model's lc/",
    )
    parser.add_argument("--out", required=True, help="output folder (re-running with the same folder resumes)")
    parser.add_argument(
        "--knees",
        default="auto",
        choices=["auto", "both", "R", "L"],
        help="which knees to look for: auto = by film type (both halves of a bilateral film; the knee of a "
        "single-knee film, its side from the DICOM laterality), both = always both halves, R or L = that knee only; "
        "each knee looked for is kept only if the presence decision finds it (see --force)",
    )
    parser.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-centre each ROI on the predicted tibial landmark 4 and predict again (default on)",
    )
    parser.add_argument(
        "--refine-tolerance",
        type=float,
        default=0.0,
        metavar="MM",
        help="adaptive refine (opt-in, not exact): skip the second pass for knees whose first-pass tibial landmark 4 "
        "lies within MM of the ROI centre (default 0: always refine; see docs/inference.md)",
    )
    parser.add_argument(
        "--flip-tta",
        action="store_true",
        help="also predict each ROI mirrored and average (mirror test-time augmentation; only for high-cost "
        "models trained on mirrored ROIs, refused otherwise); on by itself when the model's calibration.json "
        "was fitted with it",
    )
    parser.add_argument("--device", default="cpu", help="where the networks run: cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="network inputs per forward pass (two per bilateral radiograph); larger is faster on GPUs, uses more "
        "memory",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes reading and preparing the next radiographs while the networks run (0: in the main "
        "process); the default is one fewer than the CPUs, at most 4",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="fp32: exact (default); bf16/fp16: autocast, faster on AVX512-BF16/AMX CPUs and GPUs, not exact "
        "(see docs/inference.md for speed and deviation); int8: CPU only, ONNX Runtime, calibrated on 16 synthetic "
        "training films at the first start with a model (minutes on 2 cores), then loaded from the cache "
        "($KNEEL_CACHE or ~/.cache/kneel/int8; see docs/models.md)",
    )
    parser.add_argument("--overlays", action="store_true", help="write a PNG per image with the landmarks")
    parser.add_argument("--npz", action="store_true", help="write the reference-compatible preds.npz")
    parser.add_argument("--shard", metavar="K/N", help="process only shard K (0-based) of N (hash of the file key)")
    parser.add_argument(
        "--reference-geometry",
        action="store_true",
        help="reproduce the original KNEEL pipeline (its inputs and its inexact output mapping; to compare with its "
        "results)",
    )
    parser.add_argument(
        "--spacing",
        type=_spacing,
        metavar="MM",
        help="pixel spacing in mm (MM or ROW,COL): wins over the files' tags; needed for PNG/TIFF/JPEG",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="skip the knee presence decision: landmarks for every knee looked for, whatever the DICOM Modality, "
        "BodyPartExamined and the image show (see docs/inference.md)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any file holds no knee (default: 0 once every file was read; files without a "
        "knee are listed in OUT/status.csv)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from kneel.hub import resolve_model, terms_notice
    from kneel.inference.engine import predict_files

    model = resolve_model(args.model)
    notice = terms_notice(model)  # a fetched published model: its terms and citation, once per run
    if notice:
        print(notice, file=sys.stderr)
    summary = predict_files(
        args.inputs,
        str(model),
        args.out,
        knees=args.knees,
        refine=args.refine,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        overlays=args.overlays,
        npz=args.npz,
        shard=args.shard,
        reference_geometry=args.reference_geometry,
        spacing=args.spacing,
        progress=not args.quiet,
        force=args.force,
        lc_model=args.lc_model,
        flip_tta=args.flip_tta,
        refine_tolerance_mm=args.refine_tolerance,
    )
    ignored = f", {summary.ignored} other files skipped" if summary.ignored else ""
    print(
        f"kneel predict: {summary.done} predicted, {summary.skipped} already done, {summary.failed} failed "
        f"of {summary.found}{ignored} in {summary.seconds:.1f} s; {summary.no_knee} without a knee -> {summary.out}"
    )
    if not summary.ok:
        return 1
    if args.strict and summary.no_knee:
        print(f"kneel predict: --strict: {summary.no_knee} files hold no knee (see {summary.out}/status.csv)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
