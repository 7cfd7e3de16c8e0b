"""kneel beside the original KNEEL code: speed, start-up, peak memory and landmark agreement, same films, same weights.

Needs a set-up original (not part of kneel; its code and models are for non-commercial research only): a folder named
by the environment variable ``KNEEL_REFERENCE_DIR`` holding ``KNEEL/`` (a checkout of MIPT-Oulu/KNEEL, commit
``4e20c3a``) and ``venv/`` (a Python environment that runs it: torch, numpy, opencv-python-headless, pandas, pyyaml,
tqdm, sas7bdat, termcolor, matplotlib, ``pydicom<3``, and ``solt==0.1.8`` + ``deep-pipeline==0.2.5`` installed with
``--no-deps``). torchvision is replaced by a one-class stand-in written here (the original only uses
``transforms.Compose``). Without it the benchmark says so and exits 0.

What it does:

1. **Same weights.** The kneel model (``--model``, default the demo's ``demo_output/model``) is written in the
   original's snapshot layout (``session.pkl`` + ``fold_<k>_epoch_0.pth`` per stage, one ``mean_std.npy``): the
   original normalises every fold of both stages with one mean/std, kneel per fold, so each fold's own mean/std is
   folded into its first convolution (exact except in the 3-pixel zero border of that 7x7 convolution). That snapshot
   is converted back with ``kneel convert-snapshot``, and kneel runs on the result: both programs run identical
   weights with identical normalisation (the landmark differences come from the pipelines alone).
2. **Same films.** ``--films N`` synthetic bilateral films (``kneel.synth``, uncompressed 16-bit DICOM, which is all
   the original reads), or the DICOM files of ``--films-dir``.
3. **Alternating runs.** Each round runs every program on the first ``--counts`` films (two counts, e.g. 2 and 8)
   in turn, in whole fresh processes: the original's ``scripts/inference_new_data.py --refine True`` and
   ``kneel predict --knees both --force`` (exact geometry) and ``... --reference-geometry`` (both halves, as the
   original always predicts both). Per film = (wall time at the larger count - at the smaller) / (difference in
   films), so start-up drops out; start-up = wall time at the smaller count - that many films. Medians over rounds.
   Peak memory: the largest resident set of the process tree (``wait4`` rusage).
4. **Agreement.** Landmark by landmark, the original's ``preds_unpadded_refined.npz`` against each kneel run, in
   pixels and millimetres (each film's spacing): mean and max.

The table is printed with the date and the machine's load (``uptime`` before and after) and saved as
``OUT/vs_reference.{json,md}``. Docs quote only figures measured this way.

Usage: ``KNEEL_REFERENCE_DIR=/path/to/ref python benchmarks/vs_reference.py [--model DIR] [--films 8]
[--counts 2 8] [--rounds 2] [--out bench_output/vs_reference]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = "KNEEL_REFERENCE_DIR"
SCRIPT = Path("scripts") / "inference_new_data.py"
PROGRAMS = ("original", "kneel", "kneel-ref", "kneel-bf16", "kneel-int8")
"""The original; ``kneel predict`` (exact geometry); ``kneel predict --reference-geometry``; the exact geometry in
bfloat16 and in int8 (``--precision``)."""
PRECISION = {"kneel": "fp32", "kneel-ref": "fp32", "kneel-bf16": "bf16", "kneel-int8": "int8"}

_COMPOSE_SHIM = '''class Compose:
    """Stand-in for torchvision.transforms.Compose: apply the callables in order."""

    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x
'''


# ------------------------------------------------------------------------------------------------------------------
# the original, found and run


def find_reference(path: str | None = None) -> tuple[Path | None, str]:
    """``(folder, "")`` for a usable original at ``path`` or ``$KNEEL_REFERENCE_DIR``, else ``(None, why)``."""
    value = path if path is not None else os.environ.get(ENV)
    if not value:
        return None, f"{ENV} is not set (a folder with KNEEL/ and venv/, see benchmarks/vs_reference.py)"
    ref = Path(value)
    if not (ref / "KNEEL" / SCRIPT).is_file():
        return None, f"{ref / 'KNEEL' / SCRIPT} not found ({ENV}={value})"
    if not (ref / "venv" / "bin" / "python").is_file():
        return None, f"{ref / 'venv' / 'bin' / 'python'} not found ({ENV}={value})"
    return ref, ""


def write_shims(work: Path) -> Path:
    """A folder with the one-class torchvision stand-in, for the original's PYTHONPATH."""
    shims = work / "shims"
    (shims / "torchvision").mkdir(parents=True, exist_ok=True)
    (shims / "torchvision" / "__init__.py").write_text("# stand-in: the original only uses transforms.Compose\n")
    (shims / "torchvision" / "transforms.py").write_text(_COMPOSE_SHIM)
    return shims


_LAUNCHER = """
import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=sys.stdout, stderr=subprocess.STDOUT)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
sys.stdout.flush()
print(f"\\n@@measured {os.waitstatus_to_exitcode(status)} {wall:.6f} {usage.ru_maxrss}", flush=True)
"""
"""Runs a command and reports its exit code, wall time and peak RSS. A fresh small process, because a child's peak
RSS as ``wait4`` reports it starts from its parent's size at the fork (Linux keeps the old address space's high-water
mark across ``exec``): measured directly from this process, whose size grows with the work done here, every program
would show at least this process's peak."""


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` to the end: (wall seconds, peak RSS in MB of the largest process of its tree). Raises on failure."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], env=env, cwd=cwd, capture_output=True)
    output = proc.stdout.decode(errors="replace")
    head, _, tail = output.rpartition("@@measured ")
    try:
        code, wall, peak_kb = tail.split()
    except ValueError:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... could not be measured:\n{output[-3000:]}") from None
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited with {code}:\n{head[-3000:]}")
    return float(wall), int(peak_kb) / 1024.0


def run_reference(
    ref: Path, data: Path, dataset: str, snapshot: Path, work: Path, shims: Path
) -> tuple[float, float, Path]:
    """The original's ``inference_new_data.py`` on ``data/dataset/*`` (refine on, CPU): (wall s, peak MB, npz)."""
    env = dict(os.environ, PYTHONPATH=f"{shims}{os.pathsep}{ref / 'KNEEL'}")
    cmd = [str(ref / "venv" / "bin" / "python"), "-u", str(SCRIPT), "--dataset_path", str(data), "--dataset", dataset,
           "--workdir", str(work), "--mean_std_path", str(snapshot / "mean_std.npy"),
           "--lc_snapshot_path", str(snapshot / "lc"), "--hc_snapshot_path", str(snapshot / "hc"),
           "--device", "cpu", "--refine", "True"]  # fmt: skip
    wall, peak = run_measured(cmd, env=env, cwd=ref / "KNEEL")
    return wall, peak, work / f"{dataset}_inference" / "preds_unpadded_refined.npz"


def run_kneel(
    films: Path, model: Path, out: Path, reference_geometry: bool, precision: str = "fp32"
) -> tuple[float, float]:
    """``kneel predict`` on ``films`` (both knees, refine on, default workers) into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    kneel = Path(sys.executable).with_name("kneel")
    cmd = [str(kneel)] if kneel.is_file() else [sys.executable, "-m", "kneel"]
    cmd += ["predict", str(films), "--model", str(model), "--out", str(out), "--knees", "both", "--force", "--quiet"]
    if reference_geometry:
        cmd.append("--reference-geometry")
    if precision != "fp32":
        cmd += ["--precision", precision]
    return run_measured(cmd)


def network_floor(model: Path, precision: str, repeats: int = 5) -> float:
    """Seconds per film of the networks alone, as ``kneel predict`` calls them: one low-cost batch of the two film
    halves and two high-cost batches of the two knees (the first pass and the refined one), each the median of
    ``repeats`` timed calls after a warm-up, in this process with the command's default threads."""
    import torch

    from kneel.models import load_stage

    if precision == "int8":  # calibrated on the same default films as kneel predict --precision int8
        from kneel.inference.int8 import load_int8_stages

        stages = dict(zip(("lc", "hc"), load_int8_stages(model / "lc", model / "hc"), strict=True))
    else:
        stages = {s: load_stage(model / s, "cpu", precision=precision) for s in ("lc", "hc")}  # type: ignore[arg-type]
    total = 0.0
    for stage, images, passes in (("lc", 2, 1), ("hc", 2, 2)):
        ens = stages[stage]
        size = ens.config.crop
        batch = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (images, 1, size, size)).astype(np.float32))
        call = getattr(ens, "predict_with_heatmap_radius", None) or ens.predict
        call(batch)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call(batch)
            times.append(time.perf_counter() - t0)
        total += passes * float(np.median(times))
    return total


# ------------------------------------------------------------------------------------------------------------------
# the same weights for both


def _stage_folds(stage_dir: Path) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    import safetensors.torch

    folds = []
    for fold in sorted(stage_dir.glob("fold_*")):
        config = json.loads((fold / "config.json").read_text())
        folds.append(
            (int(fold.name.split("_")[1]), config, safetensors.torch.load_file(str(fold / "model.safetensors")))
        )
    if not folds:
        raise SystemExit(f"no fold_<k>/ folders in {stage_dir}")
    return folds


def write_reference_snapshot(model: Path, out: Path) -> tuple[Path, float]:
    """``model`` (kneel's ``{lc,hc}/fold_<k>/``) in the original's layout under ``out``; returns (out, largest change
    of mean/std folded into a first convolution, in 0-255 grey levels: 0 means the conversion is exact).

    The original's network arguments (``session.pkl``'s ``args``: annotations, base_width, multiscale_hg, use_se,
    se_ratio, use_drop, crop/pad, spacings) come from each stage's ``config.json``; one ``mean_std.npy`` = the mean
    over every fold of both stages; fold k's ``conv(W, (x - m_k) / s_k) + b`` becomes ``conv(W', (x - m0) / s0) + b'``
    with ``W' = W s0 / s_k`` and ``b' = b + sum W (m0 - m_k) / s_k``.
    """
    import torch

    stages = {stage: _stage_folds(model / stage) for stage in ("lc", "hc")}
    configs = [config for folds in stages.values() for _, config, _ in folds]
    m0 = np.mean([c["mean"] for c in configs], axis=0).astype(np.float32)
    s0 = np.mean([c["std"] for c in configs], axis=0).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "mean_std.npy", np.stack([m0, s0]))
    change = max(float(np.abs(np.asarray(c["mean"]) - m0).max() + np.abs(np.asarray(c["std"]) - s0).max())
                 for c in configs)  # fmt: skip
    for stage, folds in stages.items():
        first = folds[0][1]
        margs = first["model_args"]
        if margs.get("block") != "multiscale" or margs.get("depth") != 4 or margs.get("legacy_nesting"):
            raise SystemExit(f"{model / stage}: the original builds only depth-4 multiscale hourglasses")
        args = argparse.Namespace(
            annotations=stage, base_width=margs["base_width"], multiscale_hg=True, use_se=bool(margs["se"]),
            se_ratio=margs["se_ratio"], use_drop=False, crop_x=first["crop"], crop_y=first["crop"],
            pad_x=first["pad"], pad_y=first["pad"], img_pad=100,
            lc_spacing=first["spacing_mm"] if stage == "lc" else 1.0,
            hc_spacing=first["spacing_mm"] if stage == "hc" else 0.3,
        )  # fmt: skip
        (out / stage).mkdir(exist_ok=True)
        with open(out / stage / "session.pkl", "wb") as f:
            pickle.dump({"args": (args, f"written by kneel benchmarks/vs_reference.py from {model}")}, f)
        m, s = torch.tensor(m0, dtype=torch.float64), torch.tensor(s0, dtype=torch.float64)
        for k, config, state in folds:
            mk = torch.tensor(config["mean"], dtype=torch.float64)
            sk = torch.tensor(config["std"], dtype=torch.float64)
            state = dict(state)
            w = state["layer1.0.weight"].double()
            state["layer1.0.weight"] = (w * (s / sk).reshape(1, -1, 1, 1)).float()
            bias = state["layer1.0.bias"].double() + (w * ((m - mk) / sk).reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            state["layer1.0.bias"] = bias.float()
            torch.save({"model": state}, out / stage / f"fold_{k}_epoch_0.pth")
    return out, change


def kneel_model_from_snapshot(snapshot: Path, out: Path) -> Path:
    """The snapshot back in kneel's format (``kneel convert-snapshot``): exactly the weights the original runs."""
    shutil.rmtree(out, ignore_errors=True)
    for stage in ("lc", "hc"):
        cmd = [sys.executable, "-m", "kneel", "convert-snapshot", str(snapshot / stage), "--stage", stage,
               "--mean-std", str(snapshot / "mean_std.npy"), "--out", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    return out


# ------------------------------------------------------------------------------------------------------------------
# films and landmarks


def make_films(root: Path, n: int, seed: int) -> list[Path]:
    """``n`` synthetic bilateral films, uncompressed (all the original reads)."""
    from kneel.synth import generate_cohort

    generate_cohort(root, n=n, seed=seed, layout="flat", single_knee_fraction=0.0, compression="none",
                    split="test", workers=1, progress=False)  # fmt: skip
    return sorted(root.glob("*.dcm"))


def film_sets(films: list[Path], counts: tuple[int, int], work: Path) -> dict[int, Path]:
    """``work/data/f<n>/``: links to the first ``n`` films, for each count (the original reads a whole folder)."""
    sets = {}
    for n in counts:
        folder = work / "data" / f"f{n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for film in films[:n]:
            (folder / film.name).symlink_to(film.resolve())
        sets[n] = folder
    return sets


def reference_landmarks(npz: Path) -> dict[tuple[str, str], np.ndarray]:
    """``{(film stem, side): (16, 2)}`` from the original's output (``preds`` (N, 2, 16, 2), R then L)."""
    data = np.load(npz)
    return {(str(name), side): data["preds"][i, j].astype(np.float64)
            for i, name in enumerate(data["imgs"]) for j, side in enumerate("RL")}  # fmt: skip


def kneel_landmarks(out: Path) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, tuple[float, float]]]:
    """``{(film stem, side): (16, 2)}`` and ``{film stem: (row, col) spacing}`` from a ``kneel predict`` folder."""
    import pandas as pd

    table = pd.read_csv(out / "landmarks.csv", dtype={"file": str})
    points = {}
    for (file, side), rows in table.groupby(["file", "side"]):
        rows = rows.sort_values("landmark")
        points[(Path(file).stem, str(side))] = rows[["x_px", "y_px"]].to_numpy(np.float64)
    spacing = {}
    for result in (out / "results").glob("*.json"):
        data = json.loads(result.read_text())
        row, col = data["image"]["spacing_mm"]
        spacing[Path(data["file"]).stem] = (float(row), float(col))
    return points, spacing


def agreement(
    ref: dict[tuple[str, str], np.ndarray], ours: dict[tuple[str, str], np.ndarray], spacing: dict[str, Any]
) -> dict[str, float]:
    """Mean and max distance over every landmark of every knee both give, in px and mm; knees missing from either."""
    px, mm = [], []
    for key, points in ref.items():
        if key not in ours:
            continue
        d = ours[key] - points
        row, col = spacing[key[0]]
        px.append(np.hypot(d[:, 0], d[:, 1]))
        mm.append(np.hypot(d[:, 0] * col, d[:, 1] * row))
    missing = len(set(ref) ^ set(ours))
    if not px:
        return {"knees": 0, "missing": missing}
    px_all, mm_all = np.concatenate(px), np.concatenate(mm)
    return {"knees": len(px), "missing": missing, "mean_px": float(px_all.mean()), "max_px": float(px_all.max()),
            "mean_mm": float(mm_all.mean()), "max_mm": float(mm_all.max()),
            "share_over_0.1px": float((px_all > 0.1).mean())}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None, help=f"the set-up original (default: ${ENV})")
    parser.add_argument("--model", type=Path, default=ROOT / "demo_output" / "model",
                        help="kneel model folder MODEL/{lc,hc}/fold_<k>/ (default: the demo's)")  # fmt: skip
    parser.add_argument("--films", type=int, default=8, help="synthetic films to make (default 8)")
    parser.add_argument("--films-dir", type=Path, default=None, help="use these DICOM files instead (uncompressed)")
    parser.add_argument("--seed", type=int, default=77, help="seed of the synthetic films")
    parser.add_argument("--counts", type=int, nargs=2, default=(2, 8), help="the two film counts (default 2 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--programs", nargs="+", choices=PROGRAMS, default=list(PROGRAMS[:4]))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "vs_reference")
    parser.add_argument("--floor", action="store_true",
                        help="also time the networks alone (the floor of kneel predict's time per film)")  # fmt: skip
    args = parser.parse_args(argv)

    ref, why = find_reference(args.reference)
    if ref is None:
        print(f"vs_reference: skipped: {why}")
        return 0
    if not ((args.model / "lc").is_dir() and (args.model / "hc").is_dir()):
        print(f"vs_reference: skipped: no kneel model at {args.model} (pass --model; `make demo` trains one)")
        return 0
    small, large = sorted(args.counts)
    if small >= large:
        raise SystemExit("--counts needs two different film counts")
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    load_before = uptime()
    started = datetime.now(timezone.utc)

    snapshot, change = write_reference_snapshot(args.model, work / "snapshot")
    model = kneel_model_from_snapshot(snapshot, work / "model_same_weights")
    if args.films_dir is not None:
        films = sorted(p for p in args.films_dir.iterdir() if p.is_file())
    else:
        films = make_films(work / "films", large, args.seed)
    if len(films) < large:
        raise SystemExit(f"{len(films)} films, need {large}")
    sets = film_sets(films, (small, large), work)
    shims = write_shims(work)

    int8_build = None
    if "kneel-int8" in args.programs:  # the first int8 start quantises and caches the graphs; later starts load them
        # In a child process: a child's peak RSS (wait4) starts from its parent's size at fork, so this process must
        # stay small while the timed runs are measured.
        code = "import sys; from kneel.inference.int8 import load_int8_stages as f; f(sys.argv[1], sys.argv[2])"
        int8_build, _ = run_measured([sys.executable, "-c", code, str(model / "lc"), str(model / "hc")])
        print(f"int8 graphs built or loaded from the cache in {int8_build:.0f} s (before the timed runs)", flush=True)
    walls: dict[tuple[str, int], list[float]] = {}
    peaks: dict[str, float] = {}
    outputs: dict[str, Path] = {}
    for r in range(args.rounds):
        for n in (small, large):
            for program in args.programs:
                if program == "original":
                    wall, peak, npz = run_reference(ref, work / "data", f"f{n}", snapshot, work / "ref_work", shims)
                    out = npz
                else:
                    out = work / f"{program}_f{n}"
                    wall, peak = run_kneel(sets[n], model, out, program == "kneel-ref", PRECISION[program])
                walls.setdefault((program, n), []).append(wall)
                peaks[program] = max(peaks.get(program, 0.0), peak)
                if n == large:
                    outputs[program] = out
                print(f"round {r + 1}: {program:9s} {n:3d} films {wall:7.1f} s, peak {peak:6.0f} MB", flush=True)

    floors = {}
    if args.floor:
        for program in args.programs:
            if program in ("kneel", "kneel-bf16", "kneel-int8"):
                floors[program] = network_floor(model, PRECISION[program])
                print(f"network floor {program}: {floors[program]:.3f} s per film", flush=True)
    rows = []
    for program in args.programs:
        t_small, t_large = _median(walls[(program, small)]), _median(walls[(program, large)])
        per_film = (t_large - t_small) / (large - small)
        rows.append({"program": program, "s_per_film": per_film, "startup_s": t_small - small * per_film,
                     "peak_mb": peaks[program], f"wall_{small}": t_small, f"wall_{large}": t_large,
                     "floor_s_per_film": floors.get(program)})  # fmt: skip
    original = next((r["s_per_film"] for r in rows if r["program"] == "original"), None)
    agree: dict[str, dict[str, float]] = {}
    if "original" in outputs:
        ref_points = reference_landmarks(outputs["original"])
        for program in ("kneel-ref", "kneel", "kneel-bf16", "kneel-int8"):
            if program in outputs:
                ours, spacing = kneel_landmarks(outputs[program])
                agree[program] = agreement(ref_points, ours, spacing)
    if "kneel" in outputs:  # the faster precisions against kneel's own float32
        fp32_points, spacing = kneel_landmarks(outputs["kneel"])
        for program in ("kneel-bf16", "kneel-int8"):
            if program in outputs:
                agree[f"{program} vs fp32"] = agreement(fp32_points, kneel_landmarks(outputs[program])[0], spacing)
    load_after = uptime()

    date = started.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"vs_reference: {date} on {socket.gethostname()}, {os.cpu_count()} CPUs; {len(films[:large])} films "
        f"({args.films_dir or f'kneel.synth seed {args.seed}'}), model {args.model}, refine on, "
        f"{args.rounds} rounds",
        f"load before: {load_before}",
        f"load after:  {load_after}",
        f"weights: the original's snapshot and kneel's converted copy of it (mean/std folded into the first "
        f"convolution changed by up to {change:.3g} grey levels; 0 = exact)",
        *(
            []
            if int8_build is None
            else [f"int8: graphs built (or loaded from the cache) before the timed runs: {int8_build:.0f} s"]
        ),
        "",
        f"| program | s per film ({small} vs {large} films) | vs the original | network floor s | command / floor "
        "| start-up s | peak memory MB |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "original": "original KNEEL",
        "kneel": "kneel predict",
        "kneel-ref": "kneel predict --reference-geometry",
        "kneel-bf16": "kneel predict --precision bf16",
        "kneel-int8": "kneel predict --precision int8",
    }
    for row in rows:
        speed = f"{original / row['s_per_film']:.2f}x" if original and row["program"] != "original" else ""
        floor = row["floor_s_per_film"]
        floor_text = "" if floor is None else f"{floor:.2f} | {row['s_per_film'] / floor:.2f}"
        lines.append(f"| {names[row['program']]} | {row['s_per_film']:.2f} | {speed} | "
                     f"{floor_text or ' | '} | {row['startup_s']:.1f} | {row['peak_mb']:.0f} |")  # fmt: skip
    if agree:
        header = "| landmarks vs the original (vs fp32: against kneel predict) | knees | mean px | max px | mean mm"
        lines += ["", header + " | max mm | > 0.1 px |", "|---|---|---|---|---|---|---|"]
        for program, a in agree.items():
            if a.get("knees"):
                name = program.replace(program.split(" ")[0], names[program.split(" ")[0]])
                lines.append(f"| {name} | {a['knees']} | {a['mean_px']:.3f} | {a['max_px']:.3f} "
                             f"| {a['mean_mm']:.3f} | {a['max_mm']:.3f} "
                             f"| {100 * a['share_over_0.1px']:.1f} % |")  # fmt: skip
    text = "\n".join(lines)
    print("\n" + text)
    (work / "vs_reference.md").write_text(text + "\n")
    report = {"date": started.isoformat(), "host": socket.gethostname(), "cpus": os.cpu_count(),
              "load_before": load_before, "load_after": load_after, "films": [str(f) for f in films[:large]],
              "model": str(args.model), "counts": [small, large], "rounds": args.rounds, "fold_change": change,
              "int8_build_s": int8_build,
              "timing": rows, "walls": {f"{p}_{n}": v for (p, n), v in walls.items()}, "agreement": agree}  # fmt: skip
    (work / "vs_reference.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
