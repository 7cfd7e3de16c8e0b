"""Channel-wise normalisation statistics of a training set, computed exactly (reference bug §8.10 fixed).

The reference averaged per-batch means and per-batch standard deviations of *augmented* images and shared one file
across all experiments. Here the statistics are the true per-pixel mean and standard deviation of the un-augmented
network inputs of one fold's training subjects (float64 sums, so the result does not depend on batching or on the
number of processes), and they are stored in that fold's model config.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from kneel.training.ddp import DistributedContext

__all__ = ["compute_mean_std"]


def compute_mean_std(
    dataset: Dataset,
    *,
    max_images: int = 0,
    batch_size: int = 16,
    num_workers: int = 0,
    ctx: DistributedContext | None = None,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0-255 units) over every pixel of ``dataset``'s images.

    Args:
        dataset: items with ``image`` (C, H, W) float tensors (un-augmented).
        max_images: use an evenly spaced subset of at most this many images (0: all).
        batch_size: images per loader batch.
        num_workers: loader workers.
        ctx: under DDP each rank sums a share and the sums are all-reduced.
    """
    n = len(dataset)
    indices = np.arange(n)
    if max_images and n > max_images:
        indices = np.unique(np.linspace(0, n - 1, max_images).round().astype(int))
    if ctx is not None and ctx.distributed:
        indices = indices[ctx.rank :: ctx.world_size]
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, num_workers=num_workers)
    sums = None
    for batch in loader:
        images = batch["image"].to(torch.float64)
        per_channel = images.transpose(0, 1).reshape(images.shape[1], -1)
        stats = torch.stack([per_channel.sum(1), (per_channel**2).sum(1), torch.full_like(per_channel[:, 0], 0)])
        stats[2] = per_channel.shape[1]
        sums = stats if sums is None else sums + stats
    if sums is None:
        sums = torch.zeros(3, 3, dtype=torch.float64)
    if ctx is not None and ctx.distributed:
        ctx.all_reduce_sum(sums)
    count = sums[2].clamp(min=1.0)
    mean = sums[0] / count
    var = (sums[1] / count - mean**2).clamp(min=0.0)
    std = var.sqrt().clamp(min=1e-3)
    return [float(v) for v in mean], [float(v) for v in std]
