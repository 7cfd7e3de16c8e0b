"""Knees to measure or crop: landmarks, spacing, uncertainty and image path, from a table or a predictions folder.

Sources:

* a long landmark table (``file,side,landmark,x_px,y_px[,...]``: ground truth, ``kneel predict``'s
  ``landmarks.csv``, review corrections), read with :func:`kneel.io.landmark_table.read_landmark_table`;
* a ``kneel predict --out`` folder: its ``results/*.json`` (the unit of truth; exact spacing, image path).

Spacing ``(row_mm, col_mm)`` of each knee, first that applies (the source is recorded per knee):

1. the table's own spacing columns (``row_mm,col_mm`` or ``spacing_row_mm,spacing_col_mm``);
2. the prediction JSON's ``image.spacing_mm`` (what inference used, overrides included);
3. the table's ``x_mm/x_px`` and ``y_mm/y_px`` (prediction tables; the median over the knee's landmarks);
4. the radiograph itself (``images`` folder, or the file path as written), read with ``kneel.io.read_radiograph``;
5. ``spacing`` given by the caller (``--spacing``).

A knee that gets no spacing, or whose JSON cannot be read, is kept with its ``error`` set: a batch never stops on one
bad knee.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.io.landmark_table import read_landmark_table
from kneel.landmarks import NUM_LANDMARKS, KneeSide

__all__ = [
    "KneeSet",
    "MeasureInputError",
    "load_knees",
    "find_image",
    "is_predictions_folder",
    "stated_coverage",
]

PathLike = str | os.PathLike[str]
SPACING_COLUMNS: tuple[tuple[str, str], ...] = (("row_mm", "col_mm"), ("spacing_row_mm", "spacing_col_mm"))
COVERAGE_KEY = "uncertainty_coverage"
"""Column / JSON key stating the coverage of ``uncertainty_mm`` radii (a fraction, e.g. 0.9), where predictions
give one."""
EXTRA_COLUMNS: tuple[str, ...] = ("kl", "quality")
"""Per-knee columns of a table carried into the measurement rows when present."""


class MeasureInputError(KneelError):
    """A landmark source cannot be read at all (a single bad knee is reported in its row instead)."""


@dataclass
class KneeSet:
    """``N`` knees: landmarks in original pixels with everything needed to measure or crop them."""

    files: list[str]
    sides: list[str]
    points_px: np.ndarray
    """(N, 16, 2) original-image pixels; NaN where a landmark is missing."""
    spacing: np.ndarray
    """(N, 2) ``(row_mm, col_mm)``; NaN when unknown (then ``errors`` says why)."""
    spacing_source: list[str]
    uncertainty_mm: np.ndarray
    """(N, 16) landmark radii in mm; NaN when the source has none (ground truth)."""
    coverage: np.ndarray
    """(N,) stated coverage of the radii; NaN when the source states none."""
    paths: list[str | None]
    """The radiograph behind each knee when known (prediction JSON ``path``, or found in ``images``)."""
    errors: list[str | None]
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per-knee columns carried along (``kl``, ``quality``), one row per knee."""
    mirrored: np.ndarray | None = None
    """(N,) True where the image the landmarks refer to was mirrored (``kneel crop`` of a left knee): such a knee is
    already in the right-knee view. ``None``: no image is mirrored."""

    def __len__(self) -> int:
        return len(self.files)

    @property
    def right_view_mirror(self) -> np.ndarray:
        """(N,) whether each knee must be mirrored to be seen as a right knee: left knees in unmirrored images and
        right knees in mirrored ones."""
        left = np.array([s == KneeSide.L.value for s in self.sides], dtype=bool)
        flipped = np.zeros(len(self), dtype=bool) if self.mirrored is None else np.asarray(self.mirrored, dtype=bool)
        return left != flipped


def is_predictions_folder(path: PathLike) -> bool:
    """Whether ``path`` is a ``kneel predict --out`` folder (it has a ``results/`` folder)."""
    return Path(path).is_dir() and (Path(path) / "results").is_dir()


def find_image(file: str, images: PathLike | None = None, path: str | None = None) -> Path | None:
    """The radiograph of a table's ``file`` key: ``path`` if it exists, ``images/file``, ``images/<base name>``,
    ``file`` itself, or a file of ``images`` with the same stem (a key written with or without suffix)."""
    candidates: list[Path] = []
    if path:
        candidates.append(Path(path))
    if images is not None:
        candidates += [Path(images) / file, Path(images) / Path(file).name]
    candidates.append(Path(file))
    for c in candidates:
        if c.is_file():
            return c
    if images is not None and Path(images).is_dir():
        stem = Path(file).stem
        pattern = re.sub(r"([*?\[\]])", r"[\1]", stem) + "*"
        for c in sorted(Path(images).glob(pattern)):
            if c.is_file() and c.stem == stem:
                return c
    return None


class _ImageSpacing:
    """Spacing read from the radiographs themselves, once per file."""

    def __init__(self, images: PathLike | None) -> None:
        self.images = images
        self.cache: dict[str, tuple[tuple[float, float] | None, str | None]] = {}

    def __call__(self, file: str, path: str | None) -> tuple[tuple[float, float] | None, str | None]:
        key = f"{file}\0{path}"
        if key not in self.cache:
            from kneel.io import read_radiograph

            found = find_image(file, self.images, path)
            if found is None:
                self.cache[key] = (None, None)
            else:
                try:
                    sp = read_radiograph(found).spacing
                    self.cache[key] = ((float(sp[0]), float(sp[1])), str(found))
                except KneelError:
                    self.cache[key] = (None, str(found))
        return self.cache[key]


def _parse_spacing(spacing: float | Sequence[float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    values = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise MeasureInputError(f"spacing must be positive mm per pixel, got {spacing}")
    return float(values[0]), float(values[1])


def _ratio(mm: pd.Series, px: pd.Series) -> float:
    """Median of ``mm / px`` over landmarks away from 0 (the printed mm have 6 decimals: about 1e-8 relative)."""
    px = pd.to_numeric(px, errors="coerce")
    mm = pd.to_numeric(mm, errors="coerce")
    ratio = (mm / px.where(px.abs() > 1.0)).to_numpy(dtype=np.float64)
    ratio = ratio[np.isfinite(ratio)]
    return float(np.median(ratio)) if ratio.size else float("nan")


def _first_spacing(
    candidates: list[tuple[tuple[float, float] | None, str]],
) -> tuple[tuple[float, float], str] | None:
    """The first usable ``(spacing, source)`` of ``candidates`` (positive, finite), or None."""
    for sp, source in candidates:
        if sp is not None and np.all(np.isfinite(sp)) and min(sp) > 0:
            return (float(sp[0]), float(sp[1])), source
    return None


_NO_SPACING = "no pixel spacing (give --images DIR, --spacing MM or row_mm,col_mm columns)"


def _from_table(path: Path, images: PathLike | None, fallback: tuple[float, float] | None) -> KneeSet:
    df = read_landmark_table(path)
    duplicated = df.duplicated(["file", "side", "landmark"])
    if duplicated.any():
        first = df.loc[duplicated, ["file", "side", "landmark"]].iloc[0].tolist()
        raise MeasureInputError(f"{int(duplicated.sum())} duplicate file,side,landmark rows (first: {first})", path)
    knees = df[["file", "side"]].drop_duplicates().reset_index(drop=True)
    n = len(knees)
    index = {(f, s): i for i, (f, s) in enumerate(zip(knees["file"], knees["side"], strict=True))}
    rows = np.array([index[(f, s)] for f, s in zip(df["file"], df["side"], strict=True)], dtype=np.int64)
    lms = df["landmark"].to_numpy(dtype=np.int64)
    points = np.full((n, NUM_LANDMARKS, 2), np.nan)
    points[rows, lms] = df[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    radius = np.full((n, NUM_LANDMARKS), np.nan)
    if "uncertainty_mm" in df.columns:
        radius[rows, lms] = pd.to_numeric(df["uncertainty_mm"], errors="coerce").to_numpy(dtype=np.float64)
    coverage = np.full(n, np.nan)
    if COVERAGE_KEY in df.columns:
        cov = pd.to_numeric(df[COVERAGE_KEY], errors="coerce").to_numpy(dtype=np.float64)
        coverage[rows] = cov  # one value per knee (the last row's wins; they agree in any sane table)
    spacing: list[tuple[float, float]] = [(np.nan, np.nan)] * n
    sources = [""] * n
    errors: list[str | None] = [None] * n
    paths: list[str | None] = [None] * n
    groups = df.groupby(rows, sort=True)
    spacing_cols = next((c for c in SPACING_COLUMNS if set(c) <= set(df.columns)), None)
    image_spacing = _ImageSpacing(images)
    for i, g in groups:
        file = str(knees.at[i, "file"])
        candidates: list[tuple[tuple[float, float] | None, str]] = []
        if spacing_cols is not None:
            row_mm = pd.to_numeric(g[spacing_cols[0]], errors="coerce").median()
            col_mm = pd.to_numeric(g[spacing_cols[1]], errors="coerce").median()
            candidates.append(((float(row_mm), float(col_mm)), f"table {spacing_cols[0]},{spacing_cols[1]}"))
        if {"x_mm", "y_mm"} <= set(df.columns):
            col_mm, row_mm = _ratio(g["x_mm"], g["x_px"]), _ratio(g["y_mm"], g["y_px"])
            if np.isfinite(col_mm) and not np.isfinite(row_mm):
                row_mm = col_mm
            candidates.append(((row_mm, col_mm), "table x_mm/x_px"))
        if not any(sp is not None and np.all(np.isfinite(sp)) for sp, _ in candidates):
            sp, found = image_spacing(file, None)
            paths[i] = found
            candidates.append((sp, "image"))
            if found is None and fallback is None:
                errors[i] = "radiograph not found (give --images DIR) and no other pixel spacing"
        candidates.append((fallback, "--spacing"))
        chosen = _first_spacing(candidates)
        if chosen is not None:
            spacing[i], sources[i] = chosen
        elif errors[i] is None:
            errors[i] = _NO_SPACING
    mirrored = None
    if "mirrored" in df.columns:
        flags = df.groupby(rows, sort=True)["mirrored"].first().reindex(range(n))
        mirrored = flags.map(lambda v: str(v).strip().lower() in ("1", "true", "yes")).to_numpy(dtype=bool)
    extra = pd.DataFrame(index=range(n))
    for column in EXTRA_COLUMNS:
        if column in df.columns:
            extra[column] = df.groupby(rows, sort=True)[column].first().reindex(range(n)).to_numpy()
    return KneeSet(
        files=knees["file"].astype(str).tolist(),
        sides=knees["side"].astype(str).tolist(),
        points_px=points,
        spacing=np.asarray(spacing, dtype=np.float64).reshape(n, 2),
        spacing_source=sources,
        uncertainty_mm=radius,
        coverage=coverage,
        paths=paths,
        errors=errors,
        extra=extra,
        mirrored=mirrored,
    )


def stated_coverage(data: dict, knee: dict) -> float:
    """The coverage a prediction JSON states for a knee's radii (knee, then image level, then settings); NaN if none."""
    for holder in (knee, data, data.get("settings") or {}):
        value = holder.get(COVERAGE_KEY) if isinstance(holder, dict) else None
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return float("nan")
    return float("nan")


def _from_predictions(root: Path, images: PathLike | None, fallback: tuple[float, float] | None) -> KneeSet:
    """Knees of every ``results/*.json``; a JSON that cannot be read becomes one knee row with its error."""
    files, sides, points, spacing, sources, radius, coverage, paths, errors, extra = ([] for _ in range(10))
    image_spacing = _ImageSpacing(images)
    for path in sorted((root / "results").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            file = str(data["file"])
            knees = data.get("knees") or {}
            image = data.get("image") or {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            files.append(str(path.relative_to(root)))
            sides.append("")
            points.append(np.full((NUM_LANDMARKS, 2), np.nan))
            spacing.append((np.nan, np.nan))
            sources.append("")
            radius.append(np.full(NUM_LANDMARKS, np.nan))
            coverage.append(np.nan)
            paths.append(None)
            errors.append(f"unreadable prediction JSON: {type(exc).__name__}: {exc}")
            extra.append({})
            continue
        for side in (KneeSide.R.value, KneeSide.L.value):
            knee = knees.get(side)
            if not isinstance(knee, dict):
                continue
            files.append(file)
            sides.append(side)
            error = None
            try:
                pts = np.asarray(knee["landmarks_px"], dtype=np.float64).reshape(NUM_LANDMARKS, 2)
            except (KeyError, TypeError, ValueError):
                pts = np.full((NUM_LANDMARKS, 2), np.nan)
                error = "prediction JSON has no usable landmarks_px"
            points.append(pts)
            try:
                unc = np.asarray(knee.get("uncertainty_mm"), dtype=np.float64).reshape(NUM_LANDMARKS)
            except (TypeError, ValueError):
                unc = np.full(NUM_LANDMARKS, np.nan)
            radius.append(unc)
            coverage.append(stated_coverage(data, knee))
            image_path = data.get("path")
            candidates: list[tuple[tuple[float, float] | None, str]] = []
            try:
                sp_json = tuple(float(v) for v in image["spacing_mm"])
                candidates.append(((sp_json[0], sp_json[1]), "prediction JSON"))
            except (KeyError, TypeError, ValueError, IndexError):
                sp, found = image_spacing(file, image_path)
                candidates.append((sp, "image"))
            candidates.append((fallback, "--spacing"))
            chosen = _first_spacing(candidates)
            if chosen is None:
                error = error or _NO_SPACING
            sp_final, src = chosen if chosen is not None else ((np.nan, np.nan), "")
            spacing.append(sp_final)
            sources.append(src)
            paths.append(image_path)
            errors.append(error)
            extra.append({"quality": knee.get("quality")})
    n = len(files)
    return KneeSet(
        files=files,
        sides=sides,
        points_px=np.asarray(points, dtype=np.float64).reshape(n, NUM_LANDMARKS, 2),
        spacing=np.asarray(spacing, dtype=np.float64).reshape(n, 2),
        spacing_source=sources,
        uncertainty_mm=np.asarray(radius, dtype=np.float64).reshape(n, NUM_LANDMARKS),
        coverage=np.asarray(coverage, dtype=np.float64),
        paths=paths,
        errors=errors,
        extra=pd.DataFrame(extra, index=range(n)),
    )


def load_knees(
    source: PathLike, *, images: PathLike | None = None, spacing: float | Sequence[float] | None = None
) -> KneeSet:
    """Knees of a landmark table (CSV) or a ``kneel predict --out`` folder (see the module docstring).

    Args:
        source: the table or the folder.
        images: folder of the radiographs (spacing when the source has none; pixels for cropping).
        spacing: ``(row_mm, col_mm)`` or one value, used when nothing else gives a knee's spacing.
    """
    source = Path(source)
    fallback = _parse_spacing(spacing)
    if is_predictions_folder(source):
        return _from_predictions(source, images, fallback)
    if source.is_dir():
        table = source / "landmarks.csv"
        if table.is_file():
            return _from_table(table, images, fallback)
        raise MeasureInputError("not a predictions folder (no results/) and no landmarks.csv in it", source)
    if not source.exists():
        raise MeasureInputError("not found", source)
    try:
        return _from_table(source, images, fallback)
    except KneelError as exc:
        if isinstance(exc, MeasureInputError):
            raise
        raise MeasureInputError(exc.reason, source) from None
