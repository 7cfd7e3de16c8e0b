"""Load predictions and ground truth, pair them knee by knee, and find each knee's pixel spacing.

Both sides arrive as long landmark tables (``file,side,landmark,x_px,y_px``; one row per landmark). Ground truth may
also come as the VIA point export or the reference's ``bf_landmarks`` CSV (converted to original pixels with the
images' spacing). Pairing is on ``file,side,landmark``; ground-truth rows without a prediction are *kept* and
reported as missing, never silently dropped. File names are compared exactly when that pairs anything, otherwise by
base name, otherwise by stem, so a table written with absolute paths still pairs with one written with names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError, option
from kneel.evaluation.metrics import landmark_errors_mm
from kneel.landmarks import NUM_LANDMARKS, KneeSide

__all__ = [
    "EvaluationInputError",
    "MatchedKnees",
    "read_table",
    "read_ground_truth",
    "read_kl_table",
    "match_predictions",
]

KEY = ["file", "side", "landmark"]
PathLike = str | os.PathLike[str]


class EvaluationInputError(KneelError):
    """A prediction, ground-truth or KL table cannot be read or paired."""


@dataclass
class MatchedKnees:
    """One prediction set paired with the ground truth, one row per knee (file, side).

    Arrays have ``N`` knees and 16 landmarks; a landmark absent from the ground truth is NaN in ``true`` and
    ``errors``; one absent from the predictions (but in the ground truth) is NaN in ``pred`` and ``errors`` and listed
    in ``missing``.
    """

    name: str
    files: list[str]
    sides: list[str]
    pred: np.ndarray
    true: np.ndarray
    spacing: np.ndarray
    spacing_source: list[str]
    kl: np.ndarray
    errors: np.ndarray
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=KEY))
    unmatched: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=KEY))

    @property
    def num_knees(self) -> int:
        return len(self.files)

    @property
    def evaluated_landmarks(self) -> list[int]:
        """Landmarks present in the ground truth for at least one knee."""
        return [k for k in range(NUM_LANDMARKS) if np.any(~np.isnan(self.true[:, k, 0]))]

    def subset(self, mask: np.ndarray) -> MatchedKnees:
        """The knees selected by a boolean mask (the missing/unmatched lists are kept whole)."""
        idx = np.flatnonzero(mask)
        return MatchedKnees(
            name=self.name,
            files=[self.files[i] for i in idx],
            sides=[self.sides[i] for i in idx],
            pred=self.pred[idx],
            true=self.true[idx],
            spacing=self.spacing[idx],
            spacing_source=[self.spacing_source[i] for i in idx],
            kl=self.kl[idx],
            errors=self.errors[idx],
            missing=self.missing,
            unmatched=self.unmatched,
        )


# ----------------------------------------------------------------------------------------------------------------
# reading


def _normalise_long(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in ("file", "side", "landmark", "x_px", "y_px") if c not in df.columns]
    if missing:
        raise EvaluationInputError(f"not a landmark table: missing column(s) {', '.join(missing)}", path)
    df = df.copy()
    df["file"] = df["file"].astype(str)
    try:
        df["side"] = [KneeSide.parse(s).value for s in df["side"]]
    except ValueError as exc:
        raise EvaluationInputError(str(exc), path) from exc
    df["landmark"] = pd.to_numeric(df["landmark"], errors="coerce")
    if df["landmark"].isna().any() or not df["landmark"].between(0, NUM_LANDMARKS - 1).all():
        raise EvaluationInputError("landmark indices must be integers 0-15", path)
    df["landmark"] = df["landmark"].astype(int)
    for col in ("x_px", "y_px", "x_mm", "y_mm"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    dup = df.duplicated(KEY)
    if dup.any():
        first = df.loc[dup, KEY].iloc[0].tolist()
        raise EvaluationInputError(f"{int(dup.sum())} duplicate file,side,landmark rows (first: {first})", path)
    return df


def read_table(path: PathLike) -> pd.DataFrame:
    """Read a long landmark table (predictions or ground truth), validated, with ``file`` as str and ``side`` R/L."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError("file not found", path)
    try:
        from kneel.io.landmark_table import read_landmark_table  # the project's reader when installed
    except ImportError:
        read_landmark_table = None
    try:
        df = read_landmark_table(path) if read_landmark_table is not None else pd.read_csv(path, dtype={"file": str})
    except KneelError as exc:
        raise EvaluationInputError(exc.reason, path) from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise EvaluationInputError(f"cannot read table: {exc}", path) from exc
    return _normalise_long(pd.DataFrame(df), path)


def _sniff_columns(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"cannot read table: {exc}", path) from exc


def read_ground_truth(
    path: PathLike, spacing_of: Callable[[str], tuple[float, float] | None] | None = None
) -> pd.DataFrame:
    """Ground truth as a long table (``file,side,landmark,x_px,y_px`` and ``kl`` when known), original pixels.

    Accepts the long table (e.g. the synthetic generator's ``ground_truth.csv``), a VIA point export (read with
    ``kneel.io.annotations.read_via_points``) or the reference's ``bf_landmarks`` CSV (ROI frame at 0.3 mm; converted
    to original pixels with ``spacing_of(file)``, which must then be given; ``file`` = subject id).
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError("ground truth not found", path)
    columns = _sniff_columns(path)
    if {"file", "side", "landmark", "x_px", "y_px"} <= set(columns):
        return read_table(path)
    if "region_shape_attributes" in columns:
        return _read_via(path)
    if {"subject_id", "side", "tibia", "femur", "bbox"} <= set(columns):
        return _read_bf(path, spacing_of)
    raise EvaluationInputError(
        "unknown ground-truth format (expected a long landmark table, a VIA export or a bf_landmarks CSV)", path
    )


def _read_via(path: Path) -> pd.DataFrame:
    """VIA point export -> long table; only complete knees (9 tibial then 7 femoral points) are kept."""
    try:
        from kneel.io.annotations import group_via_knees, read_via_points
    except ImportError as exc:
        raise EvaluationInputError("reading VIA files needs kneel.io.annotations.read_via_points", path) from exc
    try:
        knees = group_via_knees(read_via_points(path))
    except KneelError as exc:
        raise EvaluationInputError(exc.reason, path) from exc
    rows = []
    for knee in knees:
        if not knee.complete:
            continue
        side = KneeSide.parse(knee.side).value
        for k, (x, y) in enumerate(np.asarray(knee.landmarks, dtype=np.float64)):
            rows.append({"file": str(knee.filename), "side": side, "landmark": k, "x_px": x, "y_px": y})
    if not rows:
        raise EvaluationInputError("no complete knee (16 points, tibia then femur) in the VIA file", path)
    return _normalise_long(pd.DataFrame(rows), path)


def _read_bf(path: Path, spacing_of: Callable[[str], tuple[float, float] | None] | None) -> pd.DataFrame:
    try:
        from kneel.io.annotations import padded_to_original, read_bf_landmarks, roi_to_padded
    except ImportError as exc:
        raise EvaluationInputError("reading bf_landmarks files needs kneel.io.annotations", path) from exc
    if spacing_of is None:
        reason = f"bf_landmarks ground truth needs the images' spacing ({option('images', 'DIR')})"
        raise EvaluationInputError(reason, path)
    rows = []
    try:
        annotations = read_bf_landmarks(path)
    except KneelError as exc:
        raise EvaluationInputError(exc.reason, path) from exc
    for ann in annotations:
        file = str(ann.subject_id)
        spacing = spacing_of(file)
        if spacing is None:
            continue  # no image: the knee cannot be placed in original pixels; reported as unmatched later
        xy = padded_to_original(roi_to_padded(ann), spacing)
        side = KneeSide.parse(ann.side).value
        for k, (x, y) in enumerate(np.asarray(xy, dtype=np.float64)):
            rows.append({"file": file, "side": side, "landmark": k, "x_px": x, "y_px": y, "kl": ann.kl})
    if not rows:
        raise EvaluationInputError("no bf_landmarks knee has an image with a known spacing", path)
    return _normalise_long(pd.DataFrame(rows), path)


def read_kl_table(path: PathLike) -> pd.DataFrame:
    """KL grades per knee: columns ``file,side,kl`` (or the bf CSV's ``subject_id,side,kl``)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError("KL table not found", path)
    df = pd.read_csv(path, dtype={"file": str, "subject_id": str})
    if "file" not in df.columns and "subject_id" in df.columns:
        df = df.rename(columns={"subject_id": "file"})
    if not {"file", "side", "kl"} <= set(df.columns):
        raise EvaluationInputError("KL table needs columns file,side,kl", path)
    df = df[["file", "side", "kl"]].copy()
    df["side"] = [KneeSide.parse(s).value for s in df["side"]]
    df["kl"] = pd.to_numeric(df["kl"], errors="coerce")
    return df.drop_duplicates(["file", "side"])


# ----------------------------------------------------------------------------------------------------------------
# pairing


def _key_strategies() -> list[tuple[str, Callable[[str], str]]]:
    return [("exact", lambda f: f), ("name", lambda f: Path(f).name), ("stem", lambda f: Path(f).stem)]


def _choose_file_key(pred_files: Sequence[str], gt_files: Sequence[str]) -> Callable[[str], str]:
    """The first of exact / base name / stem that pairs the most files (ties go to the stricter rule).

    A rule that would merge two different files of either table (``A/001`` and ``B/001`` by base name) is not used.
    """
    best, best_n = _key_strategies()[0][1], -1
    for _, fn in _key_strategies():
        if any(len({fn(f) for f in files}) != len(set(files)) for files in (pred_files, gt_files)):
            continue
        n = len({fn(f) for f in pred_files} & {fn(f) for f in gt_files})
        if n > best_n:
            best, best_n = fn, n
    return best


def _ratio_spacing(df: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Per file key: (row_mm, col_mm) = (y_mm / y_px, x_mm / x_px), median over the image's points away from 0."""
    if not {"x_mm", "y_mm"} <= set(df.columns):
        return {}
    out = {}
    for key, g in df.groupby("_fkey", sort=False):
        sx = g["x_mm"] / g["x_px"].where(g["x_px"].abs() > 1.0)
        sy = g["y_mm"] / g["y_px"].where(g["y_px"].abs() > 1.0)
        col = float(np.nanmedian(sx)) if sx.notna().any() else np.nan
        row = float(np.nanmedian(sy)) if sy.notna().any() else np.nan
        if np.isfinite(col) and np.isfinite(row) and col > 0 and row > 0:
            out[key] = (row, col)
        elif np.isfinite(col) and col > 0:
            out[key] = (col, col)
    return out


def match_predictions(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    name: str = "predictions",
    kl: pd.DataFrame | None = None,
    spacing_of: Callable[[str], tuple[float, float] | None] | None = None,
    default_spacing: float | tuple[float, float] | None = None,
) -> MatchedKnees:
    """Pair a prediction table with the ground truth knee by knee and compute errors in mm.

    Spacing per knee, first that applies: the prediction table's ``x_mm/x_px`` (and ``y_mm/y_px``) ratio, the ground
    truth's, ``spacing_of(file)`` (e.g. read from the image), ``default_spacing``. A knee without any spacing raises.

    Args:
        pred: long prediction table (see :func:`read_table`).
        gt: long ground-truth table.
        name: label of this prediction set in tables and plots.
        kl: optional ``file,side,kl`` table; overrides a ``kl`` column of ``gt``.
        spacing_of: maps a ground-truth ``file`` to ``(row_mm, col_mm)`` or None.
        default_spacing: used when nothing else gives a spacing.
    """
    pred = pred.copy()
    gt = gt.copy()
    fkey = _choose_file_key(pred["file"].unique().tolist(), gt["file"].unique().tolist())
    pred["_fkey"] = pred["file"].map(fkey)
    gt["_fkey"] = gt["file"].map(fkey)
    if pred.duplicated(["_fkey", "side", "landmark"]).any():
        raise EvaluationInputError(f"{name}: file names collide after normalisation; use unique file names")

    merged = gt.merge(
        pred[["_fkey", "side", "landmark", "x_px", "y_px"]].rename(columns={"x_px": "px", "y_px": "py"}),
        on=["_fkey", "side", "landmark"],
        how="left",
        indicator=True,
    )
    missing_mask = (merged["_merge"] == "left_only") | merged["px"].isna() | merged["py"].isna()
    missing = merged.loc[missing_mask, KEY].reset_index(drop=True)
    gt_keys = set(zip(gt["_fkey"], gt["side"], strict=True))
    unmatched = pred.loc[[(f, s) not in gt_keys for f, s in zip(pred["_fkey"], pred["side"], strict=True)], KEY]
    unmatched = unmatched.drop_duplicates(["file", "side"]).reset_index(drop=True)[["file", "side"]]

    knees = gt[["_fkey", "file", "side"]].drop_duplicates(["_fkey", "side"]).reset_index(drop=True)
    n = len(knees)
    index = {(f, s): i for i, (f, s) in enumerate(zip(knees["_fkey"], knees["side"], strict=True))}
    pred_xy = np.full((n, NUM_LANDMARKS, 2), np.nan)
    true_xy = np.full((n, NUM_LANDMARKS, 2), np.nan)
    rows = [index[(f, s)] for f, s in zip(merged["_fkey"], merged["side"], strict=True)]
    lms = merged["landmark"].to_numpy()
    true_xy[rows, lms] = merged[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    pred_xy[rows, lms] = merged[["px", "py"]].to_numpy(dtype=np.float64)

    # KL grade per knee
    kl_arr = np.full(n, np.nan)
    if kl is not None:
        kl = kl.copy()
        kl["_fkey"] = kl["file"].map(fkey)
        lut = {(f, s): v for f, s, v in zip(kl["_fkey"], kl["side"], kl["kl"], strict=True)}
        kl_arr = np.array([lut.get((f, s), np.nan) for f, s in zip(knees["_fkey"], knees["side"], strict=True)])
    elif "kl" in gt.columns:
        first = gt.drop_duplicates(["_fkey", "side"]).set_index(["_fkey", "side"])["kl"]
        kl_arr = np.array(
            [first.get((f, s), np.nan) for f, s in zip(knees["_fkey"], knees["side"], strict=True)], dtype=np.float64
        )

    # spacing per knee
    from_pred, from_gt = _ratio_spacing(pred), _ratio_spacing(gt)
    spacing = np.full((n, 2), np.nan)
    source: list[str] = []
    cache: dict[str, tuple[float, float] | None] = {}
    for i, (f, file) in enumerate(zip(knees["_fkey"], knees["file"], strict=True)):
        sp, src = from_pred.get(f), "prediction x_mm/x_px"
        if sp is None:
            sp, src = from_gt.get(f), "ground truth x_mm/x_px"
        if sp is None and spacing_of is not None:
            if file not in cache:
                cache[file] = spacing_of(file)
            sp, src = cache[file], "image"
        if sp is None and default_spacing is not None:
            d = np.broadcast_to(np.asarray(default_spacing, dtype=np.float64), (2,))
            sp, src = (float(d[0]), float(d[1])), "given"
        if sp is None and np.all(np.isnan(pred_xy[i, :, 0])):
            sp, src = (np.nan, np.nan), "none (knee not predicted)"
        if sp is None:
            raise EvaluationInputError(
                f"{name}: no pixel spacing for {file} "
                f"(give x_mm/y_mm columns, {option('images', 'DIR')} or {option('spacing', 'MM')})"
            )
        spacing[i] = sp
        source.append(src)

    errors = landmark_errors_mm(pred_xy, true_xy, spacing)
    return MatchedKnees(
        name=name,
        files=knees["file"].tolist(),
        sides=knees["side"].tolist(),
        pred=pred_xy,
        true=true_xy,
        spacing=spacing,
        spacing_source=source,
        kl=kl_arr,
        errors=errors,
        missing=missing,
        unmatched=unmatched,
    )
