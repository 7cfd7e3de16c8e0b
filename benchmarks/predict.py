"""End-to-end inference speed: radiographs/s, share of time outside the network, memory, bf16 vs fp32, start-up.

Runs each film through the real batch engine (``kneel.inference.predict_files``: reading, whole-image
normalisation, one warp per network input, writing; one radiograph = 2 inputs per forward pass) with the paper
presets (``kneel_lc``/``kneel_hc`` at 450 px, 5 folds per stage; weights from the parity fixtures, perturbed per fold,
or random) on synthetic films (``kneel.synth``, ~0.15 mm, ~2500 x 2800 px). Each configuration runs all films in one
batch call, in rounds that alternate the configurations, so that a noisy machine slows all of them alike.
Reports, per configuration (fp32/bf16, with/without refine):

* seconds per bilateral radiograph end to end and radiographs/s;
* the network's share (time inside ``FoldEnsemble.predict``) and the rest (reading, normalising, warping, writing);
* the network-only floor: passes per radiograph x the isolated forward time of the same ensemble (the fastest exact
  variant of ``benchmarks/forward.py``, BatchNorm folded + channels-last, is what ``load_stage`` uses);
* bf16 vs fp32: speed ratio and landmark deviation in mm, with these untrained weights and with trained models
  (``--trained-model``, default the demo's ``demo_output/model``; see :func:`trained_bf16_deviation` for why);
* peak memory (RSS) and its growth with the number of files (tiny models, 4 vs 24 files, in subprocesses);
* start-up: a fresh process importing kneel and loading the 10 fold models.

For the original KNEEL code beside kneel (same films, same weights, alternating runs), see
``benchmarks/vs_reference.py``: figures against the original are quoted only from it.

Usage: ``python benchmarks/predict.py [--quick] [--films N] [--folds F] [--threads T] [--trained-model DIR]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 2
"""Timed rounds per configuration (each over all films), alternating the configurations."""


def _parity_dir() -> Path | None:
    for cand in (ROOT.parent / "shared" / "reference" / "parity", ROOT / "shared" / "reference" / "parity"):
        if (cand / "input.npy").is_file():
            return cand
    return None


def make_models(root: Path, folds: int, presets: tuple[str, str] = ("kneel_lc", "kneel_hc")) -> Path:
    """``root/{lc,hc}/fold_<k>`` from the parity weights (x (1 + 1% noise) per fold) or random weights."""
    from kneel.models import ModelConfig, create_model, save_fold

    parity = _parity_dir()
    for preset in presets:
        stage = "lc" if preset.endswith("lc") else "hc"
        base = None
        if parity is not None and preset in ("kneel_lc", "kneel_hc"):
            with np.load(parity / f"{stage}_state_dict.npz", allow_pickle=False) as npz:
                base = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
        for k in range(folds):
            torch.manual_seed(k)
            model = create_model(preset)
            if base is not None:
                g = torch.Generator().manual_seed(1000 + k)
                state = {
                    n: (v * (1 + 0.01 * torch.randn(v.shape, generator=g)) if v.is_floating_point() and k else v)
                    for n, v in base.items()
                }
                model.load_state_dict(state, strict=True)
            save_fold(model, ModelConfig.from_preset(preset, fold=k), root / stage / f"fold_{k}")
    return root


def make_films(root: Path, n: int) -> list[Path]:
    """Synthetic bilateral films (kneel.synth) or, if it is missing, plain test films of the same size."""
    try:
        from kneel.synth import generate_cohort

        generate_cohort(root, n=n, seed=7, layout="flat", single_knee_fraction=0.0, workers=1, progress=False)
        files = sorted(p for p in root.rglob("*.dcm"))
        if files:
            return files
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    from inference_helpers import knee_film, write_dicom

    from kneel.landmarks import KneeSide

    knees = ((KneeSide.R, (620.0, 1400.0)), (KneeSide.L, (1880.0, 1380.0)))
    return [
        write_dicom(root / f"film_{i}.dcm", knee_film((2800, 2500), (0.15, 0.15), knees), (0.15, 0.15))
        for i in range(n)
    ]


class TimedEnsemble:
    """Wraps a FoldEnsemble and adds up the time spent in ``predict`` (the network)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.images = 0

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        out = self.inner.predict(images)
        self.seconds += time.perf_counter() - start
        self.images += int(images.shape[0])
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def _predictor(model_dir: Path, precision: str, refine: bool) -> tuple[Any, TimedEnsemble, TimedEnsemble]:
    from kneel.inference import Predictor
    from kneel.models import load_stage

    lc = TimedEnsemble(load_stage(model_dir / "lc", precision=precision))
    hc = TimedEnsemble(load_stage(model_dir / "hc", precision=precision))
    return Predictor.from_ensembles(lc, hc, refine=refine, knees="both", batch_size=2), lc, hc


def _floor_ms_per_input(ensemble: Any, repeats: int = 3) -> float:
    """Isolated forward time of the whole ensemble per 450x450 input: the median of ``repeats`` calls on a batch of 2
    (one radiograph's 2 knees), split into forward calls as ``FoldEnsemble`` does (1 image per call on CPU)."""
    x = torch.rand(2, 1, 450, 450, generator=torch.Generator().manual_seed(0)) * 255
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ensemble.predict(x)
        times.append((time.perf_counter() - start) / 2 * 1000)
    return statistics.median(times)


def _landmarks(out: Path) -> dict[tuple[str, str], np.ndarray]:
    result = {}
    for path in sorted((out / "results").glob("*.json")):
        data = json.loads(path.read_text())
        spacing = data["image"]["spacing_mm"]
        for side, knee in data["knees"].items():
            result[(data["file"], side)] = np.asarray(knee["landmarks_px"]) * [spacing[1], spacing[0]]
    return result


def run_interleaved(
    model_dir: Path, films: list[Path], configs: list[tuple[str, bool]], work: Path
) -> list[dict[str, Any]]:
    """Time every configuration on all films, in rounds that alternate the configurations, so that a noisy machine
    slows all of them alike; the network floor is re-measured in every round too."""
    from kneel.inference import predict_files

    runs = []
    for precision, refine in configs:
        predictor, lc, hc = _predictor(model_dir, precision, refine)
        predict_files(films[:1], predictor, work / f"warm_{precision}_{refine}", workers=0, progress=False)
        lc.seconds = hc.seconds = 0.0
        runs.append({"precision": precision, "refine": refine, "predictor": predictor, "lc": lc, "hc": hc,
                     "total": 0.0, "floor": 0.0, "out": work / f"run_{precision}_{refine}"})  # fmt: skip
    # Each configuration runs the whole batch of films in one call (as a user's batch run does, so the per-run set-up
    # and the final table are shared by all films), in rounds that alternate the configurations.
    for round_index in range(ROUNDS):
        per_input: dict[str, tuple[float, float]] = {}
        for r in runs:
            out = work / f"run_{r['precision']}_{r['refine']}_{round_index}"
            start = time.perf_counter()
            summary = predict_files(films, r["predictor"], out, workers=0, progress=False)
            r["total"] += time.perf_counter() - start
            r["out"] = out
            assert summary.failed == 0, summary
            if r["precision"] not in per_input:  # network floor of this precision, measured in the same round
                per_input[r["precision"]] = (_floor_ms_per_input(r["lc"].inner), _floor_ms_per_input(r["hc"].inner))
            lc_ms, hc_ms = per_input[r["precision"]]
            passes = 2 + 2 * (2 if r["refine"] else 1)  # network inputs per bilateral radiograph (all folds each)
            r["floor"] += len(films) * (lc_ms * 2 + hc_ms * (passes - 2)) / 1000
    results = []
    for r in runs:
        n = len(films) * ROUNDS
        net = r["lc"].seconds + r["hc"].seconds
        results.append({
            "precision": r["precision"],
            "refine": r["refine"],
            "s_per_radiograph": r["total"] / n,
            "radiographs_per_s": n / r["total"],
            "network_s_per_radiograph": net / n,
            "outside_network_share": 1 - net / r["total"],
            "floor_s_per_radiograph": r["floor"] / n,
            "landmarks_mm": _landmarks(r["out"]),
        })  # fmt: skip
    return results


def _deviation(a: dict[tuple[str, str], np.ndarray], b: dict[tuple[str, str], np.ndarray]) -> tuple[float, float]:
    """Max per-axis and mean Euclidean landmark deviation (mm) between two runs over the same knees."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return float("nan"), float("nan")
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in keys)
    mean = float(np.mean([np.hypot(*(a[k] - b[k]).T).mean() for k in keys]))
    return worst, mean


def trained_bf16_deviation(model_dir: Path, work: Path, n_films: int) -> list[tuple[bool, int, float, float]]:
    """bf16 vs fp32 landmarks with *trained* models (e.g. the demo's, ``make demo``) on fresh synthetic films.

    The paper-preset weights of the speed runs are untrained: their low-cost heatmaps are almost uniform, so the
    soft-argmax (a mean over the whole 450 mm field) turns bf16 rounding into knee-centre shifts that an untrained
    high-cost model passes on in full. Trained models are the relevant measurement of what bf16 does to landmarks.
    Returns ``(refine, knees, max per-axis mm, mean mm)`` per setting.
    """
    from kneel.inference import Predictor, predict_files
    from kneel.synth import generate_cohort

    films = work / "trained_films"
    generate_cohort(films, n=n_films, seed=11, layout="flat", single_knee_fraction=0.0, workers=1, progress=False)
    rows = []
    for refine in (True, False):
        runs = {}
        for precision in ("fp32", "bf16"):
            predictor = Predictor(model_dir, precision=precision, refine=refine, knees="both")
            out = work / f"trained_{precision}_{refine}"
            predict_files([films], predictor, out, workers=0, progress=False)
            runs[precision] = _landmarks(out)
        worst, mean = _deviation(runs["bf16"], runs["fp32"])
        rows.append((refine, len(runs["fp32"]), worst, mean))
    return rows


def startup_seconds(model_dir: Path) -> float:
    code = (
        "import time; t = time.perf_counter(); from kneel.inference import Predictor; "
        f"Predictor({str(model_dir)!r}); print(time.perf_counter() - t)"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - start


_MEMORY_PROBE = """
import os, sys, threading, time
from kneel.inference import predict_files

def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0

def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(c) for c in handle.read().split()]
        except OSError:
            pass
    return out

peak, done = 0.0, False
def sample():
    global peak
    while not done:
        me = os.getpid()
        peak = max(peak, rss_mb(me) + sum(rss_mb(c) for c in children(me)))
        time.sleep(0.05)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
predict_files([sys.argv[1]], sys.argv[2], sys.argv[3], workers=1, batch_size=2, progress=False)
done = True
thread.join()
print(peak)
"""


def memory_growth(work: Path, counts: tuple[int, int]) -> dict[int, float]:
    """Peak RSS (MB, main process + reader worker, sampled every 50 ms from /proc) of ``predict_files`` on ``n``
    copies of a film with tiny models (``ru_maxrss`` is useless here: Linux keeps it across fork + exec)."""
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    from inference_helpers import knee_film, make_model_dir, write_dicom

    model = make_model_dir(work / "tiny_model")
    film = write_dicom(work / "mem_film.dcm", knee_film((2800, 2500), (0.15, 0.15),
                       ((_side("R"), (620.0, 1400.0)), (_side("L"), (1880.0, 1380.0)))), (0.15, 0.15))  # fmt: skip
    peaks = {}
    for n in counts:
        src = work / f"mem_{n}"
        src.mkdir()
        for i in range(n):
            (src / f"{i:03d}.dcm").symlink_to(film)
        out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(src), str(model), str(work / f"mem_out_{n}")],
                             capture_output=True, text=True, check=True)  # fmt: skip
        peaks[n] = float(out.stdout.split()[-1])
    return peaks


def _side(value: str) -> Any:
    from kneel.landmarks import KneeSide

    return KneeSide(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 film, fewer configurations, no memory-growth runs")
    parser.add_argument("--films", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--trained-model", type=Path, default=ROOT / "demo_output" / "model",
                        help="trained model directory for the bf16 deviation (default: the demo's)")  # fmt: skip
    parser.add_argument("--trained-films", type=int, default=12, help="synthetic films for the trained-model check")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_films = 1 if args.quick else args.films
    with tempfile.TemporaryDirectory(prefix="kneel-bench-predict-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model_dir = make_models(work / "model", args.folds)
        films = make_films(work / "films", n_films)
        print(f"setup: {args.folds} folds per stage, {len(films)} film(s), {time.perf_counter() - t0:.1f} s; "
              f"torch threads {torch.get_num_threads()}", flush=True)  # fmt: skip
        configs = [("fp32", True), ("bf16", True)] if args.quick else [
            ("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)]  # fmt: skip
        results = run_interleaved(model_dir, films, configs, work)
        fp32 = {r["refine"]: r for r in results if r["precision"] == "fp32"}
        print("\n| precision | refine | s/radiograph | radiographs/s | network s | outside network | floor s "
              "| vs floor |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['precision']} | {r['refine']} | {r['s_per_radiograph']:.2f} | {r['radiographs_per_s']:.3f} "
                f"| {r['network_s_per_radiograph']:.2f} | {100 * r['outside_network_share']:.1f} % "
                f"| {r['floor_s_per_radiograph']:.2f} | {r['s_per_radiograph'] / r['floor_s_per_radiograph']:.2f}x |"
            )
        for r in results:
            if r["precision"] != "bf16" or r["refine"] not in fp32:
                continue
            base = fp32[r["refine"]]
            worst, mean = _deviation(r["landmarks_mm"], base["landmarks_mm"])
            speed = base["s_per_radiograph"] / r["s_per_radiograph"]
            print(f"bf16 vs fp32 (refine={r['refine']}): {speed:.2f}x speed; landmark deviation with these untrained "
                  f"weights max {worst:.3f} mm (per axis), mean {mean:.3f} mm")  # fmt: skip
        trained = args.trained_model
        if trained is not None and (trained / "lc").is_dir() and (trained / "hc").is_dir():
            for refine, knees, worst, mean in trained_bf16_deviation(trained, work, args.trained_films):
                print(f"bf16 vs fp32 with the trained models of {trained} (refine={refine}, {knees} knees): landmark "
                      f"deviation max {worst:.3f} mm (per axis), mean {mean:.3f} mm")  # fmt: skip
        else:
            print(f"bf16 deviation with trained models: skipped (no trained model at {trained}; run `make demo`)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MB (paper models, 5+5 folds, 4 configurations loaded in turn)")
        print(f"start-up (new process: import + load {2 * args.folds} fold models): {startup_seconds(model_dir):.2f} s")
        if not args.quick:
            peaks = memory_growth(work, (8, 48))
            print("memory vs number of files (tiny models, peak RSS of main + reader worker): "
                  + ", ".join(f"{n} files {mb:.0f} MB" for n, mb in peaks.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
