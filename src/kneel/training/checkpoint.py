"""The resumable ``last.pt`` checkpoint: tensors, numbers and strings only, loaded with ``weights_only=True``.

It holds everything needed to continue a fold exactly where it stopped: model, optimizer, loss parameters, EMA
weights, AMP scaler, the epoch count, best-so-far bookkeeping, the metrics history, the normalisation statistics
and the random-number generator states, and the run's resolved config: ``--resume`` refuses to continue a fold under a
different config (:func:`check_resume_config`). Written atomically, so a run killed while saving keeps the previous
one.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneel.errors import ConfigError, ModelError
from kneel.io.atomic import atomic_write_bytes

__all__ = [
    "LAST_CHECKPOINT",
    "RESUME_MAY_DIFFER",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "restore_rng_state",
    "config_differences",
    "check_resume_config",
]

LAST_CHECKPOINT = "last.pt"

RESUME_MAY_DIFFER = ("description", "num_workers", "tensorboard", "cache_images", "fold_processes", "members")
"""Config keys a resumed run may change, because none changes what is computed: the description is text, loader
workers only move data loading to other processes (every random draw is seeded per item and epoch), TensorBoard
files are an extra log, the image cache keeps the same decoded images in memory instead of re-reading them, and
``members`` only says how many networks a fold has (each member's own training does not depend on it: raising it
with ``--resume`` adds members beside the finished ones).
Everything else (``num_threads`` too: the thread count is part of bit-reproducibility on CPU) must match."""

_MISSING = object()


def _flatten(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key in ("model_args", "augment"):
            out.update(_flatten(value, f"{prefix}{key}."))
            out.setdefault(f"{prefix}{key}", "{}")  # present even when empty (vs null)
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(saved: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """Dotted keys (``lr``, ``augment.cutout_p``) whose values differ, except :data:`RESUME_MAY_DIFFER`."""
    a, b = _flatten(saved), _flatten(current)
    return sorted(
        k
        for k in set(a) | set(b)
        if a.get(k, _MISSING) != b.get(k, _MISSING) and k.split(".")[0] not in RESUME_MAY_DIFFER
    )


def check_resume_config(saved: Mapping[str, object] | None, current: Mapping[str, object], source: Path) -> None:
    """Refuse (``ConfigError`` naming the keys and both values) to resume under a config other than ``saved``."""
    if saved is None:
        raise ConfigError(
            "--resume: this checkpoint does not record its config (an older kneel wrote it), so kneel cannot check "
            "that the run continues unchanged; train into a new --out",
            source,
        )
    diff = config_differences(saved, current)
    if diff:
        a, b = _flatten(saved), _flatten(current)

        def show(values: dict[str, object], key: str) -> str:
            return "(absent)" if key not in values else repr(values[key])

        shown = "; ".join(f"{k}: {show(a, k)} -> {show(b, k)}" for k in diff[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise ConfigError(
            f"--resume: the config differs from the one this run was started with in {len(diff)} key(s): "
            f"{shown}{more}; resume with the same config and overrides, or train into a new --out "
            f"(only {', '.join(RESUME_MAY_DIFFER)} may change)",
            source,
        )


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
