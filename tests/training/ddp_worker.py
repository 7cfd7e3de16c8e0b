"""A few training steps of kneel's real training step (:class:`kneel.training.loop._Runner`) on a fixed global batch.

Run under ``torchrun --nproc_per_node 2`` each rank trains on its half of every global batch (gloo, CPU); imported
by the test, the same steps run in one process on the whole batch. The test compares the two: DDP must give the
weights of one process on the global batch. The network has no BatchNorm and no dropout (their per-process
statistics and random masks legitimately differ between the two set-ups); the adaptive robust loss has parameters of
its own, whose gradients kneel all-reduces by hand, and the normalisation statistics are all-reduced too. Plain SGD,
not Adam: Adam's steps do not depend on the gradients' scale, so a gradient summed instead of averaged over the
processes would go unseen.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kneel.models.hourglass import SoftArgmax2D
from kneel.training.config import TrainConfig
from kneel.training.ddp import DistributedContext, init_distributed
from kneel.training.loop import _Runner
from kneel.training.losses import create_loss
from kneel.training.normalization import compute_mean_std

GLOBAL_BATCH = 8
STEPS = 3
SIZE = 16


def _global_batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.rand(GLOBAL_BATCH, 3, SIZE, SIZE, generator=gen) * 255.0,
            "keypoints": torch.rand(GLOBAL_BATCH, 1, 2, generator=gen) * 0.8 + 0.1,
        }
        for _ in range(STEPS)
    ]


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i]}


def run_steps(ctx: DistributedContext) -> dict[str, Any]:
    """``STEPS`` optimiser steps; each rank takes its contiguous share of every global batch."""
    config = TrainConfig(
        stage="lc", model="kneel_tiny_lc", loss="robust", mixup="none", optimizer="sgd", lr=1e-2, amp="none"
    )
    torch.manual_seed(0)
    # No bias before the soft-argmax: the softmax ignores it, so its gradient is rounding noise that Adam would
    # amplify to full-size steps of either sign.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1, bias=False), SoftArgmax2D()
    ).to(ctx.device)
    criterion = create_loss(config, 1).to(ctx.device)
    batches = _global_batches()
    share = GLOBAL_BATCH // ctx.world_size
    mine = [{k: v[ctx.rank * share : (ctx.rank + 1) * share] for k, v in b.items()} for b in batches]
    mean, std = compute_mean_std(_Images(torch.cat([b["image"] for b in batches])), batch_size=5, ctx=ctx)
    runner = _Runner(config, ctx, model, criterion, mean, std)
    loss = runner.train_epoch(mine, np.random.default_rng(0), "ddp", False, config.lr)
    token = ctx.broadcast(torch.tensor([float(ctx.rank + 7)], dtype=torch.float64))
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "criterion": {k: v.detach().cpu().clone() for k, v in criterion.state_dict().items()},
        "mean": mean,
        "std": std,
        "loss": loss,
        "broadcast": float(token[0]),
    }


def main(out: Path) -> None:
    ctx = init_distributed("cpu")
    try:
        result = run_steps(ctx)
        torch.save(result, out / f"rank{ctx.rank}.pt")
    finally:
        ctx.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
