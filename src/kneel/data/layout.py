"""The prepared-data folder (``DATA/``) written by ``kneel prepare`` and read by :class:`LandmarkDataset`.

Layout::

    DATA/
      lc/images/<subject_id>.png          whole radiograph at 1 mm/px, uint8 (both knees; one per subject)
      lc/metadata.csv                      one row per knee
      hc/images/<subject_id>_<side>.png    140 mm ROI at 0.3 mm/px (466 x 466), left knees mirrored, uint8
      hc/metadata.csv                      one row per knee
      folds.csv                            subject_id,fold
      report.json                          settings, counts, missing images / annotations, unreadable files

Metadata columns (both stages; :data:`METADATA_COLUMNS`):

* ``subject_id`` (int), ``side`` ('R'/'L'), ``kl`` (int, -1 if unknown)
* ``image``: image path relative to the stage folder, e.g. ``images/9000099_R.png``
* ``width``, ``height``: image size in pixels; ``spacing_mm``: its pixel spacing (1.0 lc, 0.3 hc)
* ``source``: the DICOM the image came from; ``source_spacing_row_mm``, ``source_spacing_col_mm``: its spacing
* ``centre_x``, ``centre_y``: knee centre (tibial landmark 4) in the image
* ``landmarks``: JSON ``[[x, y], ...]`` (16 points, index order T0..F15) in the image (lc: whole 1 mm image;
  hc: the mirrored ROI for left knees)
* ``landmarks_original``: the same 16 points in original DICOM pixels
* ``transform``: JSON 3x3 matrix of the exact :class:`~kneel.geometry.Affine` original pixels -> image pixels
  (the one used to warp the image; ``landmarks == transform.apply(landmarks_original)``)

Floats are written with ``repr`` precision, so reading gives back the exact values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.geometry import Affine
from kneel.io.atomic import atomic_write_text

__all__ = [
    "STAGES",
    "STAGE_SPACING_MM",
    "METADATA_FILE",
    "IMAGES_DIR",
    "FOLDS_FILE",
    "REPORT_FILE",
    "METADATA_COLUMNS",
    "DataLayoutError",
    "stage_dir",
    "metadata_path",
    "read_metadata",
    "write_metadata",
    "row_landmarks",
    "row_transform",
    "to_json",
]

STAGES = ("lc", "hc")
STAGE_SPACING_MM = {"lc": 1.0, "hc": 0.3}
METADATA_FILE = "metadata.csv"
IMAGES_DIR = "images"
FOLDS_FILE = "folds.csv"
REPORT_FILE = "report.json"
METADATA_COLUMNS = (
    "subject_id",
    "side",
    "kl",
    "image",
    "width",
    "height",
    "spacing_mm",
    "source",
    "source_spacing_row_mm",
    "source_spacing_col_mm",
    "centre_x",
    "centre_y",
    "landmarks",
    "landmarks_original",
    "transform",
)


class DataLayoutError(KneelError):
    """A prepared-data folder is missing files or has a malformed metadata table."""


def stage_dir(data_dir: str | Path, stage: str) -> Path:
    if stage not in STAGES:
        raise DataLayoutError(f"stage must be one of {STAGES}, got {stage!r}")
    return Path(data_dir) / stage


def metadata_path(data_dir: str | Path, stage: str) -> Path:
    return stage_dir(data_dir, stage) / METADATA_FILE


def write_metadata(rows: pd.DataFrame, path: str | Path) -> None:
    """Write a metadata table (atomically), sorted by subject then side (R first)."""
    table = rows.loc[:, list(METADATA_COLUMNS)].copy()
    table["_side"] = (table["side"] != "R").astype(int)
    table = table.sort_values(["subject_id", "_side"], ignore_index=True).drop(columns="_side")
    for column in table.columns:  # shortest exact text for floats (repr), e.g. 0.3 rather than 0.29999999999999999
        if pd.api.types.is_float_dtype(table[column]):
            table[column] = [repr(float(v)) for v in table[column]]
    atomic_write_text(path, table.to_csv(index=False))


def read_metadata(data_dir: str | Path, stage: str) -> pd.DataFrame:
    """Read ``DATA/<stage>/metadata.csv``; JSON columns stay strings (see :func:`row_landmarks`)."""
    path = metadata_path(data_dir, stage)
    if not path.is_file():
        raise DataLayoutError(f"no {METADATA_FILE}; run `kneel prepare` first", path)
    try:
        table = pd.read_csv(path, dtype={"side": str, "image": str, "source": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataLayoutError(f"cannot read metadata: {exc}", path) from exc
    missing = [c for c in METADATA_COLUMNS if c not in table.columns]
    if missing:
        raise DataLayoutError(f"metadata lacks column(s) {missing}", path)
    return table.astype({"subject_id": np.int64, "kl": np.int64, "width": np.int64, "height": np.int64})


def row_landmarks(row: pd.Series | dict, column: str = "landmarks") -> np.ndarray:
    """The (16, 2) float64 landmark array of a metadata row."""
    return np.asarray(json.loads(row[column]), dtype=np.float64).reshape(-1, 2)


def row_transform(row: pd.Series | dict) -> Affine:
    """The original-pixels -> image-pixels transform of a metadata row."""
    return Affine.from_list(json.loads(row["transform"]))


def to_json(value: np.ndarray | Affine) -> str:
    """Compact JSON with exact (repr) floats, for the landmark and transform columns."""
    array = value.matrix if isinstance(value, Affine) else np.asarray(value, dtype=np.float64)
    return json.dumps(array.tolist(), separators=(",", ":"))
