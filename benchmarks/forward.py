"""Forward-pass speed of the KNEEL network on CPU: ms/image and GFLOP/s per inference variant, interleaved.

Variants: eager float32 (the reference's way), channels-last, BatchNorm folded, BatchNorm folded + channels-last,
"fused" (``optimize_for_inference``: folded + channels-last + oneDNN convolutions with fused ReLU/residual sum, kneel's
default) and the same in forward calls of 1 image ("-chunk1", what ``FoldEnsemble`` does on CPU in float32), bfloat16
autocast on the default (with its error against float32; "-chunk2": calls of 2 images, ``FoldEnsemble``'s bfloat16
default on CPU), and ONNX Runtime. Each repeat times every
variant once, in turn, so that a noisy machine affects all alike; the table reports the median and the best repeat,
and the CPU time (robust to other load). The network costs 35.0 GFLOP per 450x450 image (multiply-add = 2 FLOP).

Weights: the parity fixtures (reference network, random weights, randomised BatchNorm) when found, so that the
bfloat16 error is measured on realistic heatmaps; otherwise PyTorch's default initialisation.

Usage: ``python benchmarks/forward.py [--quick] [--repeats N] [--batches 1 8] [--stages lc hc] [--threads T]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kneel.models import create_model, optimize_for_inference
from kneel.models.inference import autocast

GFLOP_PER_IMAGE_450 = 35.0
ROOT = Path(__file__).resolve().parents[1]
VARIANTS = (
    "eager-fp32",
    "channels-last",
    "bn-folded",
    "bn-folded+cl",
    "fused",
    "fused-chunk1",
    "bf16-autocast",
    "bf16-chunk2",
    "onnxruntime",
)


def _parity_dir() -> Path | None:
    for cand in (ROOT.parent / "shared" / "reference" / "parity", ROOT / "shared" / "reference" / "parity"):
        if (cand / "input.npy").is_file():
            return cand
    return None


def _model(stage: str) -> torch.nn.Module:
    model = create_model(f"kneel_{stage}")
    parity = _parity_dir()
    if parity is not None:
        with np.load(parity / f"{stage}_state_dict.npz", allow_pickle=False) as npz:
            model.load_state_dict({k: torch.from_numpy(npz[k].copy()) for k in npz.files}, strict=True)
    return model.eval()


def _input(batch: int, size: int) -> torch.Tensor:
    parity = _parity_dir()
    if parity is not None and size == 450:
        base = torch.from_numpy(np.load(parity / "input.npy"))
        return base[torch.arange(batch) % base.shape[0]].contiguous()
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _variants(model: torch.nn.Module, size: int, names: list[str], threads: int) -> dict[str, Callable]:
    eager = model
    cl = optimize_for_inference(model, fold_bn=False, channels_last=True)
    folded = optimize_for_inference(model, fold_bn=True, channels_last=False, fuse=False)
    folded_cl = optimize_for_inference(model, fold_bn=True, channels_last=True, fuse=False)
    best = optimize_for_inference(model)  # kneel's default: folded + channels-last + fused oneDNN convolutions
    fns: dict[str, Callable] = {
        "eager-fp32": eager,
        "channels-last": cl,
        "bn-folded": folded,
        "bn-folded+cl": folded_cl,
        "fused": best,
    }

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with autocast("bf16"):
            return best(x)

    def chunked(fn: Callable, size: int) -> Callable:
        # What FoldEnsemble does on CPU: batches split into forward calls of 1 image (float32) or 2 (bfloat16).
        return lambda x: torch.cat([fn(x[i : i + size]) for i in range(0, x.shape[0], size)])

    fns["bf16-autocast"] = bf16
    fns["fused-chunk1"] = chunked(best, 1)
    fns["bf16-chunk2"] = chunked(bf16, 2)
    if "onnxruntime" in names:
        try:
            from kneel.models.export import export_model_onnx, onnx_session

            with tempfile.TemporaryDirectory() as tmp:
                path = export_model_onnx(model, Path(tmp) / "m.onnx", input_size=size, exporter="torchscript")
                session = onnx_session(path, threads=threads)

            def ort(x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

            fns["onnxruntime"] = ort
        except Exception as exc:  # noqa: BLE001 - benchmark goes on without this variant
            print(f"onnxruntime variant skipped: {exc}", file=sys.stderr)
    return {n: fns[n] for n in names if n in fns}


def run(stages: list[str], batches: list[int], repeats: int, size: int, names: list[str], threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    gflop = GFLOP_PER_IMAGE_450 * (size / 450) ** 2
    rows = []
    for stage in stages:
        model = _model(stage)
        fns = _variants(model, size, names, threads)
        for batch in batches:
            x = _input(batch, size)
            with torch.inference_mode():
                ref = model(x)
                outputs = {name: fn(x).float() for name, fn in fns.items()}  # warm-up + accuracy
                times: dict[str, list[float]] = {name: [] for name in fns}
                cpu: dict[str, list[float]] = {name: [] for name in fns}
                for _ in range(repeats):
                    for name, fn in fns.items():
                        c0, t0 = time.process_time(), time.perf_counter()
                        fn(x)
                        times[name].append((time.perf_counter() - t0) / batch)
                        cpu[name].append((time.process_time() - c0) / batch)
            for name in fns:
                med, best = statistics.median(times[name]), min(times[name])
                err = float((outputs[name] - ref).abs().max())
                rows.append(
                    {
                        "stage": stage,
                        "batch": batch,
                        "variant": name,
                        "ms": med * 1e3,
                        "best_ms": best * 1e3,
                        "cpu_ms": statistics.median(cpu[name]) * 1e3,
                        "gflops": gflop / med,
                        "err": err,
                        "err_px": err * size,
                    }
                )
            print(_table([r for r in rows if r["stage"] == stage and r["batch"] == batch]), flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    head = (
        f"{'stage':5} {'batch':>5} {'variant':14} {'ms/img':>8} {'best':>8} {'cpu ms':>8} {'GFLOP/s':>8} "
        f"{'max err':>9} {'px':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['stage']:5} {r['batch']:>5} {r['variant']:14} {r['ms']:8.1f} {r['best_ms']:8.1f} {r['cpu_ms']:8.1f} "
            f"{r['gflops']:8.1f} "
            f"{r['err']:9.2e} {r['err_px']:7.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1, 3 repeats (a minute or so)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant (interleaved)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--stages", nargs="+", choices=["lc", "hc"], default=["lc", "hc"])
    parser.add_argument("--size", type=int, default=450, help="input side in pixels")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches = 3, [1]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), input {args.size}x{args.size}, "
        f"{GFLOP_PER_IMAGE_450 * (args.size / 450) ** 2:.1f} GFLOP/image, repeats {args.repeats}, "
        f"weights: {'parity fixtures' if _parity_dir() else 'default init'}",
        flush=True,
    )
    rows = run(args.stages, args.batches, args.repeats, args.size, args.variants, args.threads)
    print(
        "\nsummary: ms/img = median wall time per image, best = fastest repeat, cpu ms = CPU time of all threads per "
        "image (robust to a busy machine), GFLOP/s from the median; error = max |output - eager fp32| in normalised "
        "units and in pixels of the input"
    )
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
