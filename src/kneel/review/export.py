"""``kneel review export``: the reviewed knees as ground truth, for ``kneel evaluate --gt`` and ``kneel prepare``.

Writes, into ``OUT`` (default ``PRED_DIR/review/export``):

* ``ground_truth.csv``: the long landmark table ``file,side,landmark,x_px,y_px,x_mm,y_mm,status`` (original-image
  pixels, pixel centres at integers; millimetres with the image's spacing), the format of the synthetic generator's
  ``ground_truth.csv``: ``kneel evaluate --gt`` and ``kneel prepare --annotations`` read it as it is;
* ``via.csv``: the same points in the VIA region format of the published refined annotations
  (``oai_landmarks_00_via_format_refined.csv``): one row per point, ``filename`` = the file key, the knees of a file
  right first, points T0..T8 then F9..F15, ``region_count`` = points of the file, ``region_id`` counting from 0,
  ``{"Bone": "T"|"F", "Side": "R"|"L"}``; ``file_size`` is the image's size in bytes (empty when it is gone).

Knees reviewed ``accepted`` or ``corrected`` are exported (``flagged`` too with ``include_flagged``); ``absent`` and
``unreviewed`` knees are not (they hold no landmarks a model should learn).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.io.annotations import ViaPoint, write_via_points
from kneel.io.landmark_table import write_landmark_table
from kneel.landmarks import LANDMARKS, NUM_LANDMARKS
from kneel.review.store import CorrectionStore

__all__ = ["ExportSummary", "NothingToExportError", "export_reviews"]


class NothingToExportError(KneelError):
    """No knee of the folder has been accepted or corrected yet."""


@dataclass
class ExportSummary:
    """What ``kneel review export`` wrote."""

    out: Path
    knees: int
    files: int
    by_status: dict[str, int] = field(default_factory=dict)
    """Every saved knee by status (exported or not)."""
    written: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.by_status.items()))
        return f"{self.knees} knees of {self.files} films exported ({counts}) -> {', '.join(map(str, self.written))}"


def export_reviews(
    pred_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, include_flagged: bool = False
) -> ExportSummary:
    """Write ``ground_truth.csv`` and ``via.csv`` of the reviewed knees of ``pred_dir`` (see the module docstring).

    Raises:
        NothingToExportError: no knee is accepted or corrected (or flagged, with ``include_flagged``).
    """
    pred_dir = Path(pred_dir)
    out = Path(out) if out is not None else pred_dir / "review" / "export"
    store = CorrectionStore(pred_dir)
    reviews = store.load()
    wanted = {"accepted", "corrected"} | ({"flagged"} if include_flagged else set())
    by_status: dict[str, int] = {}
    for review in reviews.values():
        by_status[review.status] = by_status.get(review.status, 0) + 1
    chosen = [r for r in reviews.values() if r.status in wanted and r.landmarks_px is not None]
    if not chosen:
        saved = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
        raise NothingToExportError(f"no reviewed knee to export (knees saved: {saved}); accept or correct knees in "
                                   "kneel review first", store.path)  # fmt: skip
    rows = []
    for review in chosen:
        mm = review.landmarks_mm if review.landmarks_mm is not None else np.full((NUM_LANDMARKS, 2), np.nan)
        for k in range(NUM_LANDMARKS):
            rows.append({"file": review.file, "side": review.side, "landmark": k,
                         "x_px": float(review.landmarks_px[k, 0]), "y_px": float(review.landmarks_px[k, 1]),
                         "x_mm": float(mm[k, 0]), "y_mm": float(mm[k, 1]), "status": review.status})  # fmt: skip
    table = pd.DataFrame(rows)
    truth_path = out / "ground_truth.csv"
    write_landmark_table(table, truth_path)
    via_path = out / "via.csv"
    write_via_points(_via_points(table, _image_sizes(pred_dir)), via_path)
    files = table["file"].nunique()
    return ExportSummary(out, len(chosen), int(files), by_status, [truth_path, via_path])


def _image_sizes(pred_dir: Path) -> dict[str, str]:
    """File key -> the image's size in bytes (as VIA records it), from the paths ``kneel predict`` recorded."""
    from kneel.inference.outputs import OutputFolder

    sizes = {}
    for path, key in OutputFolder(pred_dir).known_keys().items():
        try:
            sizes[key] = str(os.path.getsize(path))
        except OSError:
            sizes[key] = ""
    return sizes


def _via_points(table: pd.DataFrame, sizes: dict[str, str]) -> list[ViaPoint]:
    """The sorted landmark table (file, R before L, landmark) as VIA points."""
    points = []
    for file, group in table.groupby("file", sort=False):
        for region_id, row in enumerate(group.itertuples(index=False)):
            points.append(ViaPoint(
                filename=str(file),
                file_size=sizes.get(str(file), ""),
                file_attributes={},
                region_count=len(group),
                region_id=region_id,
                shape={"name": "point", "cx": float(row.x_px), "cy": float(row.y_px)},
                attributes={"Bone": LANDMARKS[int(row.landmark)].bone, "Side": str(row.side)},
            ))  # fmt: skip
    return points
