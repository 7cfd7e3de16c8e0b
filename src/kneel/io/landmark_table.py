"""The one long landmark table: one row per (file, side, landmark), used for ground truth and predictions alike.

Columns: ``file,side,landmark,x_px,y_px`` first (``x_px``/``y_px`` in the original image's pixels, pixel centres at
integer coordinates), then any others: ground truth adds ``kl``; predictions add ``name,x_mm,y_mm,uncertainty_mm,
sop_instance_uid``. ``write_landmark_table`` sorts rows (file, side with R first, landmark), writes floats with
Python's shortest round-trip representation (reading gives back the identical float64) and replaces the file
atomically. ``read_landmark_table`` checks the key columns and their values and raises ``LandmarkTableError`` naming
the file and the first bad line.

Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return: a file name, or a DICOM string such as a UID, is under outside control) are written with a leading ``'``
(:mod:`kneel.io.spreadsheet`, OWASP's advice); a cell that starts with ``'`` gets one more, so the reader takes
exactly one off and every value reads back as written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.io.atomic import atomic_write_text
from kneel.io.errors import AnnotationError
from kneel.io.spreadsheet import from_spreadsheet_safe, spreadsheet_safe
from kneel.landmarks import NUM_LANDMARKS

__all__ = [
    "spreadsheet_safe",
    "from_spreadsheet_safe",
    "KEY_COLUMNS",
    "STRING_COLUMNS",
    "LandmarkTableError",
    "read_landmark_table",
    "write_landmark_table",
    "validate_landmark_table",
    "sort_landmark_table",
]

KEY_COLUMNS: tuple[str, ...] = ("file", "side", "landmark", "x_px", "y_px")
"""Required columns, always written first in this order."""
STRING_COLUMNS: tuple[str, ...] = ("file", "side", "name", "sop_instance_uid", "patient_id")
"""Columns read as text even when they look like numbers (OAI file names are digits; UIDs are dotted digits)."""

_SIDE_ORDER = {"R": 0, "L": 1}


def _text_columns(df: pd.DataFrame, convert) -> pd.DataFrame:  # noqa: ANN001
    out = df.copy()
    for column in STRING_COLUMNS:
        if column in out.columns:
            out[column] = [convert(v) if isinstance(v, str) else v for v in out[column]]
    return out


class LandmarkTableError(AnnotationError):
    """A landmark table is missing key columns or holds invalid values."""


def validate_landmark_table(df: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Check and normalise key columns: ``file`` str, ``side`` 'R'/'L', ``landmark`` int 0-15, coordinates float.

    Returns a copy with the key columns first. Raises ``LandmarkTableError`` naming the first bad row (as a CSV line
    number when ``path`` is given: header = line 1).
    """
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise LandmarkTableError(f"missing column(s) {', '.join(missing)} (need {','.join(KEY_COLUMNS)})", path)
    out = df.copy()
    out = out[list(KEY_COLUMNS) + [c for c in out.columns if c not in KEY_COLUMNS]]

    def fail(mask: np.ndarray, message: str) -> None:
        if mask.any():
            index = int(np.flatnonzero(mask)[0])
            where = f"line {index + 2}" if path is not None else f"row {index}"
            raise LandmarkTableError(f"{where}: {message}", path)

    fail(out["file"].isna().to_numpy() | (out["file"].astype(str).str.strip() == "").to_numpy(), "empty file name")
    out["file"] = out["file"].astype(str)
    side = out["side"].astype(str).str.strip().str.upper()
    fail(~side.isin(list(_SIDE_ORDER)).to_numpy(), "side must be 'R' or 'L'")
    out["side"] = side.astype(str)
    landmark = pd.to_numeric(out["landmark"], errors="coerce")
    bad = landmark.isna().to_numpy() | (landmark.fillna(-1) % 1 != 0).to_numpy()
    fail(bad, "landmark must be an integer")
    landmark = landmark.astype(np.int64)
    fail(((landmark < 0) | (landmark >= NUM_LANDMARKS)).to_numpy(), f"landmark must be 0-{NUM_LANDMARKS - 1}")
    out["landmark"] = landmark
    for column in ("x_px", "y_px"):
        values = pd.to_numeric(out[column], errors="coerce")
        # NaN is allowed (a knee that could not be located); text that is not a number is not.
        fail((values.isna() & out[column].notna()).to_numpy(), f"{column} is not a number")
        out[column] = values.astype(np.float64)
    return out


def sort_landmark_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by file, side (R first), landmark; stable for ties; fresh 0..n-1 index."""
    order = np.lexsort((df["landmark"].to_numpy(), df["side"].map(_SIDE_ORDER).to_numpy(), df["file"].to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def read_landmark_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a landmark table CSV, validated (see ``validate_landmark_table``); rows in file order."""
    path = Path(path)
    try:
        header = pd.read_csv(path, nrows=0)
    except FileNotFoundError:
        raise LandmarkTableError("file not found", path) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LandmarkTableError(f"not a readable CSV: {exc}", path) from None
    dtypes = {c: str for c in header.columns if c in STRING_COLUMNS}
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=True, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise LandmarkTableError(f"not a readable CSV: {exc}", path) from None
    return validate_landmark_table(_text_columns(df, from_spreadsheet_safe), path)


def write_landmark_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Validate, sort and write ``df`` atomically (key columns first, floats round-trip exact, ``\\n`` line ends)."""
    table = _text_columns(sort_landmark_table(validate_landmark_table(df)), spreadsheet_safe)
    atomic_write_text(path, table.to_csv(index=False, lineterminator="\n"))
