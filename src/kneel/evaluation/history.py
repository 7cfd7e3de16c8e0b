"""Training histories of a run: per fold, the loss and validation error per epoch, the kept epoch, and whether it
learned.

Reads the ``fold_<k>/metrics.csv`` logs that ``kneel train`` writes (columns ``epoch, train_loss, val_mean_mm,
best, ...``). The kept epoch is the last one flagged ``best`` (training keeps the weights of the lowest validation
*loss*); without that column it is the epoch of the lowest validation error. A fold **failed to learn** when the
validation mean error at its kept epoch is not below ``FAILED_RATIO`` (80 %) of the first epoch's, i.e. training
after the first epoch removed less than a fifth of the error, or when that error is not finite; a fold with a single
epoch is not judged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["FAILED_RATIO", "FoldHistory", "fold_history", "read_histories", "history_table"]

FAILED_RATIO = 0.8
"""A fold whose kept-epoch validation error is not below this fraction of its first epoch's failed to learn."""


@dataclass
class FoldHistory:
    """One fold's training log and the verdict on it."""

    stage: str
    fold: str
    epochs: np.ndarray
    train_loss: np.ndarray
    val_mean_mm: np.ndarray
    best_epoch: int
    """The kept epoch (1-based, as in ``metrics.csv``)."""

    @property
    def first_mm(self) -> float:
        return float(self.val_mean_mm[0])

    @property
    def best_mm(self) -> float:
        """Validation mean error at the kept epoch."""
        return float(self.val_mean_mm[list(self.epochs).index(self.best_epoch)])

    @property
    def judged(self) -> bool:
        return len(self.epochs) > 1

    @property
    def failed(self) -> bool:
        """Failed to learn: kept-epoch error not below ``FAILED_RATIO`` of the first epoch's (or not finite)."""
        if not self.judged:
            return False
        if not (np.isfinite(self.best_mm) and np.isfinite(self.first_mm)):
            return True
        return self.best_mm >= FAILED_RATIO * self.first_mm

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged (1 epoch)"
        if self.failed:
            return f"FAILED TO LEARN (kept error ≥ {FAILED_RATIO:.0%} of the first epoch's)"
        return "learned"


def fold_history(table: pd.DataFrame, stage: str = "", fold: str = "") -> FoldHistory:
    """A :class:`FoldHistory` from the rows of one ``metrics.csv``."""
    missing = {"epoch", "val_mean_mm"} - set(table.columns)
    if missing or table.empty:
        raise ValueError(f"not a training log: {'no rows' if table.empty else 'missing ' + ', '.join(sorted(missing))}")
    table = table.sort_values("epoch")
    epochs = table["epoch"].to_numpy(dtype=int)
    val = table["val_mean_mm"].to_numpy(dtype=float)
    loss = table["train_loss"].to_numpy(dtype=float) if "train_loss" in table else np.full(len(table), np.nan)
    best = table["best"].astype(float).to_numpy() if "best" in table else np.zeros(len(table))
    if np.nansum(best) > 0:
        best_epoch = int(epochs[np.flatnonzero(best > 0)[-1]])
    elif np.isfinite(val).any():
        best_epoch = int(epochs[int(np.nanargmin(val))])
    else:
        best_epoch = int(epochs[-1])
    return FoldHistory(stage, fold, epochs, loss, val, best_epoch)


def read_histories(run_dir: str | os.PathLike[str]) -> list[FoldHistory]:
    """Every fold log under a model folder (``MODEL/<stage>/fold_<k>/metrics.csv``) or a stage folder; unreadable
    logs are skipped."""
    run_dir = Path(run_dir)
    found = sorted(
        [*run_dir.glob("fold_*/metrics.csv"), *run_dir.glob("*/fold_*/metrics.csv")],
        key=lambda p: (p.parents[1].name != "lc", p.parents[1].name, _fold_number(p.parent.name)),
    )
    out = []
    for path in found:
        try:
            out.append(fold_history(pd.read_csv(path), stage=path.parents[1].name, fold=path.parent.name))
        except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue
    return out


def _fold_number(name: str) -> tuple[int, int]:
    """(fold, member) of ``fold_<k>`` or ``fold_<k>_m<j>``; (-1, 0) for other names."""
    from kneel.models.weights import fold_and_member

    return fold_and_member(name) or (-1, 0)


def history_table(histories: list[FoldHistory]) -> pd.DataFrame:
    """Display table: stage, fold, epochs, first and kept validation error, kept epoch, ratio and verdict."""
    return pd.DataFrame(
        [
            {
                "Stage": h.stage,
                "Fold": h.fold,
                "Epochs": len(h.epochs),
                "First epoch (mm)": f"{h.first_mm:.2f}",
                "Kept epoch": h.best_epoch,
                "Kept (mm)": f"{h.best_mm:.2f}",
                "Kept / first": f"{h.best_mm / h.first_mm:.2f}" if h.first_mm > 0 else "n/a",
                "Verdict": h.verdict,
            }
            for h in histories
        ]
    )
