"""Distributed data parallel set-up: one process per device under ``torchrun``, one process otherwise.

``torchrun --nproc_per_node N -m kneel train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the process
group uses NCCL on CUDA and gloo on CPU. Rank 0 alone logs and writes checkpoints; the others wait at barriers.

Every collective kneel issues goes through one wrapper, :meth:`DistributedContext.collective`: it moves the tensor
to the process group's device (NCCL reduces CUDA tensors only; a CPU tensor there fails at the first
``all_reduce``), checks it arrived there, runs the collective and copies the result back into the caller's tensor.
With ``KNEEL_DDP_TRACE=<folder>`` each rank appends one JSON line per collective (operation, the caller's device, the
device sent to the backend, the group's device) to ``<folder>/rank<r>.jsonl``: a debugging aid, and how the tests
check that every collective reached the backend on the group's device.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed", "resolve_device", "maybe_no_sync", "TRACE_ENV"]

TRACE_ENV = "KNEEL_DDP_TRACE"


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

    def collective(self, op: str, tensor: torch.Tensor, call: Callable[[torch.Tensor], object]) -> torch.Tensor:
        """Run ``call`` (a collective acting in place) on ``tensor`` moved to the group's device; copy the result back.

        NCCL groups hold CUDA tensors only, gloo groups CPU tensors: the tensor the backend receives is on
        :attr:`device` whatever the caller's tensor is on, and the caller's tensor holds the result afterwards.
        """
        sent = tensor if tensor.device == self.device else tensor.to(self.device)
        if sent.device != self.device:  # e.g. "cuda" vs "cuda:1": never hand the backend a tensor it cannot use
            raise RuntimeError(f"{op}: tensor on {sent.device}, but the process group works on {self.device}")
        _trace(self, op, tensor.device, sent.device)
        call(sent)
        if sent is not tensor:
            tensor.copy_(sent)
        return tensor

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes in place, on the group's device (a no-op in a single process)."""
        if self.distributed:
            self.collective("all_reduce_sum", tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM))
        return tensor

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``tensor`` on every rank, in place, on the group's device (a no-op in a single process)."""
        if self.distributed:
            self.collective("broadcast", tensor, lambda t: dist.broadcast(t, src=src))
        return tensor

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (pickled into a byte tensor that travels on the group's device)."""
        if not self.distributed:
            return obj
        box = [obj]
        _trace(self, "broadcast_object", self.device, self.device)
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _trace(ctx: DistributedContext, op: str, source: torch.device, sent: torch.device) -> None:
    """Append one line per collective to ``$KNEEL_DDP_TRACE/rank<r>.jsonl`` when that variable is set."""
    folder = os.environ.get(TRACE_ENV)
    if not folder:
        return
    record = {"rank": ctx.rank, "op": op, "source": str(source), "sent": str(sent), "group": str(ctx.device)}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{ctx.rank}.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``/``None`` (CUDA when available)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from kneel.errors import ConfigError, option

        raise ConfigError(f"{option('device', 'cuda')} requested but no CUDA device is available")
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
