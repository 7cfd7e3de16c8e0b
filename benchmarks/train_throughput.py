"""Training throughput: images per second of the paper's high-cost recipe (450x450, batch 16) and the tiny config.

Each row runs a few training iterations of the real loop (augmented dataset, normalisation, two-pass mixup where the
config has it, wing loss, Adam) after one warm-up iteration, with data loading on the main thread (``num_workers=0``)
so that its share of the time is measured directly: ``data %`` is the time spent waiting for batches. With ``N``
loader workers the data share overlaps compute, so the compute-only rate is the ceiling.

Data: ``--data DATA`` (a prepared folder), else a small synthetic cohort made with ``kneel synth`` + ``kneel prepare``
in a temporary folder.

Usage: ``python benchmarks/train_throughput.py [--data DATA] [--iters 3] [--device cpu|cuda] [--only paper|tiny]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from kneel.training import load_config
from kneel.training.ddp import DistributedContext, resolve_device
from kneel.training.loop import _Runner, resolve_geometry
from kneel.training.losses import create_loss

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "paper": ROOT / "configs" / "paper" / "hc_multiscale_wing_mixup_nowd_cutout10_finetune.yaml",
    "tiny": ROOT / "configs" / "tiny_hc.yaml",
}


class _TimedLoader:
    """Yields ``iters`` batches of ``loader`` and accumulates the time spent waiting for them."""

    def __init__(self, loader: DataLoader, iters: int) -> None:
        self.loader, self.iters, self.data_s = loader, iters, 0.0

    def __len__(self) -> int:
        return self.iters

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        for _ in range(self.iters):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(self.loader)
                batch = next(it)
            self.data_s += time.perf_counter() - t0
            yield batch


def _make_data(root: Path, films: int) -> Path:
    from kneel.data.prepare import prepare_datasets
    from kneel.synth.cohort import generate_cohort

    generate_cohort(root / "cohort", films, seed=0, layout="oai", progress=False)
    prepare_datasets(root / "cohort" / "annotations.csv", root / "data", oai=root / "cohort", folds=2, progress=False)
    return root / "data"


def measure(name: str, data: Path, iters: int, device: torch.device, batch_size: int | None) -> dict[str, float]:
    """Time ``iters`` training iterations of config ``name``; returns the row of the table."""
    from kneel.data.augment import Augmentation, AugmentationConfig
    from kneel.data.datasets import LandmarkDataset
    from kneel.models import create_model

    overrides = ["init_from=null", "num_workers=0"] + ([f"batch_size={batch_size}"] if batch_size else [])
    config = load_config(CONFIGS[name], overrides)
    geo = resolve_geometry(config)
    aug = Augmentation(AugmentationConfig.from_dict(config.augment))
    ds = LandmarkDataset(data, config.stage, None, aug, geo.input_size, geo.pad, config.seed, scale=geo.scale)
    torch.manual_seed(0)
    model = create_model(config.model, **config.model_args).to(device)
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    runner = _Runner(
        config, DistributedContext(device=device), model, create_loss(config, 16).to(device), [100.0] * 3, [60.0] * 3
    )

    def loader() -> DataLoader:
        sampler = RandomSampler(ds, replacement=True, num_samples=10**6, generator=torch.Generator().manual_seed(0))
        return DataLoader(ds, batch_size=config.batch_size, sampler=sampler, drop_last=True)

    rng = np.random.default_rng(0)
    runner.train_epoch(_TimedLoader(loader(), 1), rng, "warm-up", False, config.lr)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    timed = _TimedLoader(loader(), iters)
    start = time.perf_counter()
    runner.train_epoch(timed, rng, name, False, config.lr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    images = iters * config.batch_size
    return {
        "input": geo.input_size,
        "batch": config.batch_size,
        "mixup": config.mixup,
        "images_s": images / total,
        "compute_images_s": images / max(total - timed.data_s, 1e-9),
        "data_share": timed.data_s / total,
        "s_per_iter": total / iters,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="prepared-data folder (default: a small synthetic one)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per config (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--only", choices=sorted(CONFIGS), action="append", help="run only this config")
    parser.add_argument("--batch-size", type=int, help="override the configs' batch size")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = args.only or ["tiny", "paper"]
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or _make_data(Path(tmp), films=12)
        rows = {n: measure(n, data, args.iters, device, args.batch_size) for n in names}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput ({where}; {args.iters} timed iterations after 1 warm-up; loader on main thread)")
    header = f"{'config':8s} {'input':>5s} {'batch':>5s} {'mixup':>8s} {'img/s':>8s} {'compute img/s':>14s} "
    header += f"{'data %':>7s} {'s/iter':>7s}"
    print(header)
    for name, r in rows.items():
        print(
            f"{name:8s} {r['input']:5d} {r['batch']:5d} {r['mixup']:>8s} {r['images_s']:8.2f} "
            f"{r['compute_images_s']:14.2f} {100 * r['data_share']:6.1f}% {r['s_per_iter']:7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
