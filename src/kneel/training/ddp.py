"""Distributed data parallel set-up: one process per device under ``torchrun``, one process otherwise.

``torchrun --nproc_per_node N -m kneel train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the process
group uses NCCL on CUDA and gloo on CPU. Rank 0 alone logs and writes checkpoints; the others wait at barriers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "resolve_device", "maybe_no_sync"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the number of processes, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes in place (a no-op in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``/``None`` (CUDA when available)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from kneel.errors import ConfigError

        raise ConfigError("--device cuda requested but no CUDA device is available")
    return dev


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment (or stay single-process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world_size <= 1:
        return DistributedContext(device=base)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owns = True
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


@contextlib.contextmanager
def maybe_no_sync(model: torch.nn.Module, skip: bool) -> Iterator[None]:
    """``model.no_sync()`` when ``skip`` and the model is DDP-wrapped (gradients accumulate locally)."""
    if skip and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield
