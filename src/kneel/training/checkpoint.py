"""The resumable ``last.pt`` checkpoint: tensors, numbers and strings only, loaded with ``weights_only=True``.

It holds everything needed to continue a fold exactly where it stopped: model, optimizer, loss parameters, EMA
weights, AMP scaler, the epoch count, best-so-far bookkeeping, the metrics history, the normalisation statistics
and the random-number generator states. Written atomically, so a run killed while saving keeps the previous one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneel.errors import ModelError
from kneel.io.atomic import atomic_write_bytes

__all__ = ["LAST_CHECKPOINT", "save_checkpoint", "load_checkpoint", "rng_state", "restore_rng_state"]

LAST_CHECKPOINT = "last.pt"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch generator states as plain values and tensors (no pickled objects)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_rest": [str(np_state[0]), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (no code execution)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError("no checkpoint to resume from", path) from None
    except Exception as exc:  # corrupt or foreign file: report it, do not execute anything
        raise ModelError(f"unreadable checkpoint: {exc}", path) from exc
