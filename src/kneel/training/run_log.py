"""Per-epoch training log: ``metrics.csv`` (rewritten atomically each epoch) and TensorBoard scalars.

The CSV is rebuilt from the full history each time, so after ``--resume`` it holds exactly one row per completed
epoch even if the interrupted run had logged an epoch whose checkpoint never made it to disk.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kneel.io.atomic import atomic_write_text

__all__ = ["METRIC_COLUMNS", "MetricsLog", "read_metrics"]

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch",
    "lr",
    "train_loss",
    "val_loss",
    "val_mean_mm",
    "val_median_mm",
    "recall_1mm",
    "recall_1.5mm",
    "recall_2mm",
    "recall_2.5mm",
    "best",
    "epoch_time_s",
)
"""Columns of ``metrics.csv``; every column but ``epoch_time_s`` is reproducible run to run."""

_TB_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_mean_mm": "val/mean_mm",
    "val_median_mm": "val/median_mm",
    "recall_1mm": "val/recall_1mm",
    "recall_1.5mm": "val/recall_1.5mm",
    "recall_2mm": "val/recall_2mm",
    "recall_2.5mm": "val/recall_2.5mm",
    "lr": "lr",
}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


class MetricsLog:
    """Writes ``metrics.csv`` and (optionally) TensorBoard events for one fold; a no-op on non-main ranks."""

    def __init__(self, csv_path: Path, tb_dir: Path | None, *, enabled: bool = True, purge_step: int | None = None):
        self.csv_path = Path(csv_path)
        self.enabled = enabled
        self.writer = None
        if enabled and tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tb_dir), purge_step=purge_step)

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite the CSV from ``history`` and send the newest row to TensorBoard."""
        if not self.enabled:
            return
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        out.writerow(METRIC_COLUMNS)
        for row in history:
            out.writerow([_format(row.get(c, "")) for c in METRIC_COLUMNS])
        atomic_write_text(self.csv_path, buffer.getvalue())
        if self.writer is not None and history:
            row = history[-1]
            for key, tag in _TB_TAGS.items():
                value = row.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(tag, float(value), global_step=int(row["epoch"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
