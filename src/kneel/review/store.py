"""``PRED_DIR/review/corrections.csv``: every review decision, saved at once, atomically, with a version per knee.

The file is the long landmark table (``file,side,landmark,x_px,y_px`` first, original-image pixels, pixel centres at
integer coordinates) with 16 rows per reviewed knee and these columns after the keys:

* ``x_mm,y_mm``: the point in millimetres (``x_px * col_mm``, ``y_px * row_mm``), so readers need no image;
* ``status`` (the same on the knee's 16 rows): ``accepted`` (the prediction is right as it is), ``corrected`` (at
  least one landmark was moved or the knee was added by hand), ``flagged`` (needs another look; the points are the
  reviewer's current ones), ``absent`` (there is no knee: ``x_px``/``y_px`` empty) or ``unreviewed`` (a decision
  undone; kept so that the knee's version keeps counting);
* ``moved``: 1 where the landmark differs from the prediction (by more than 1e-6 px), else 0;
* ``version``: how many times this knee was saved (1 for the first decision);
* ``timestamp``: UTC time of the save, ISO 8601 (``2026-12-01T07:05:03Z``).

Every save rewrites the whole file through :func:`kneel.io.atomic.atomic_writer` (temporary file, ``fsync``,
``os.replace``): a server killed at any moment leaves either the previous file or the new one, never half of one.
Saves hold a lock (a thread lock, and ``flock`` on ``review/.corrections.lock`` where the platform has it), re-read
the file if another process changed it, and compare the knee's version with the one the client started from: a
stale version raises :class:`VersionConflict` (HTTP 409), so two browser tabs, or two servers, on the same folder
never overwrite each other's work silently.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kneel.errors import KneelError, OutputError
from kneel.io.atomic import atomic_writer
from kneel.io.spreadsheet import from_spreadsheet_safe, spreadsheet_safe
from kneel.landmarks import NUM_LANDMARKS, KneeSide

try:  # POSIX: a lock shared with other processes (two servers on one folder)
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CORRECTION_COLUMNS",
    "STATUSES",
    "REVIEWED",
    "MOVE_TOLERANCE_PX",
    "CorrectionError",
    "VersionConflict",
    "KneeReview",
    "CorrectionStore",
    "corrections_path",
]

CORRECTION_COLUMNS = ("file", "side", "landmark", "x_px", "y_px", "x_mm", "y_mm", "status", "moved", "version",
                      "timestamp")  # fmt: skip
"""Columns of ``corrections.csv``, in order."""
STATUSES = ("accepted", "corrected", "flagged", "absent", "unreviewed")
"""Every status a knee can have in ``corrections.csv``."""
REVIEWED = ("accepted", "corrected", "flagged", "absent")
"""Statuses that count as reviewed (progress)."""
MOVE_TOLERANCE_PX = 1e-6
"""A landmark farther than this from its prediction counts as moved."""


def corrections_path(pred_dir: str | os.PathLike[str]) -> Path:
    """``PRED_DIR/review/corrections.csv``."""
    return Path(pred_dir) / "review" / "corrections.csv"


class CorrectionError(KneelError):
    """A correction that cannot be saved as given (unknown status, wrong landmark count, a point outside the image,
    NaN): the HTTP API answers 422."""


class VersionConflict(KneelError):
    """The knee was saved by someone else (another tab, another server) since the client read it (HTTP 409)."""

    def __init__(self, file: str, side: str, current: int, base: int) -> None:
        self.current = current
        self.base = base
        super().__init__(
            f"knee {side} of {file} was changed elsewhere (another tab or window) since you loaded it: it is at "
            f"version {current}, your change was made on version {base}; reload the knee, check it, and redo the "
            "change"
        )


@dataclass(frozen=True)
class KneeReview:
    """The saved review of one knee."""

    file: str
    side: str
    status: str
    landmarks_px: np.ndarray | None
    """(16, 2) ``(x, y)`` original pixels; ``None`` for an absent knee."""
    moved: tuple[bool, ...]
    version: int
    timestamp: str
    landmarks_mm: np.ndarray | None = None
    """(16, 2) ``(x_mm, y_mm)`` as written (NaN where the spacing is unknown); ``None`` for an absent knee."""

    @property
    def reviewed(self) -> bool:
        return self.status in REVIEWED

    def to_dict(self) -> dict:
        """JSON-ready (NaN-free)."""
        return {
            "status": self.status,
            "landmarks_px": None if self.landmarks_px is None else self.landmarks_px.tolist(),
            "moved": list(self.moved),
            "version": self.version,
            "timestamp": self.timestamp,
        }


def _number(text: str) -> float:
    return float(text) if text.strip() else math.nan


def _fmt(value: float) -> str:
    """Shortest round-trip representation (reading gives back the identical float64); empty for NaN."""
    return repr(float(value)) if math.isfinite(value) else ""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str, path: Path) -> dict[tuple[str, str], KneeReview]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CORRECTION_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CorrectionError(f"not a corrections table: missing column(s) {', '.join(missing)}", path)
    rows: dict[tuple[str, str], list[dict[str, str]]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            key = (from_spreadsheet_safe(row["file"]), KneeSide.parse(row["side"]).value)
            landmark = int(row["landmark"])
            if not 0 <= landmark < NUM_LANDMARKS or row["status"] not in STATUSES:
                raise ValueError(f"landmark {landmark}, status {row['status']!r}")
        except (ValueError, TypeError) as exc:
            raise CorrectionError(f"line {line}: {exc}", path) from None
        rows.setdefault(key, []).append(row)
    out = {}
    for (file, side), group in rows.items():
        by_index = {int(r["landmark"]): r for r in group}
        if sorted(by_index) != list(range(NUM_LANDMARKS)):
            raise CorrectionError(f"{file} {side}: needs landmarks 0-{NUM_LANDMARKS - 1} once each", path)
        ordered = [by_index[k] for k in range(NUM_LANDMARKS)]
        status = ordered[0]["status"]
        xy = np.array([[_number(r["x_px"]), _number(r["y_px"])] for r in ordered], dtype=np.float64)
        mm = np.array([[_number(r["x_mm"]), _number(r["y_mm"])] for r in ordered], dtype=np.float64)
        out[(file, side)] = KneeReview(
            file=file,
            side=side,
            status=status,
            landmarks_px=None if status == "absent" else xy,
            moved=tuple(r["moved"].strip() == "1" for r in ordered),
            version=int(ordered[0]["version"]),
            timestamp=ordered[0]["timestamp"],
            landmarks_mm=None if status == "absent" else mm,
        )
    return out


def _format(records: dict[tuple[str, str], KneeReview]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CORRECTION_COLUMNS)
    order = {"R": 0, "L": 1}
    for key in sorted(records, key=lambda k: (k[0], order[k[1]])):
        record = records[key]
        for k in range(NUM_LANDMARKS):
            x, y = (math.nan, math.nan) if record.landmarks_px is None else record.landmarks_px[k]
            xm, ym = (math.nan, math.nan) if record.landmarks_mm is None else record.landmarks_mm[k]
            writer.writerow([spreadsheet_safe(record.file), record.side, k, _fmt(x), _fmt(y), _fmt(xm), _fmt(ym),
                             record.status, int(record.moved[k]), record.version, record.timestamp])  # fmt: skip
    return buffer.getvalue()


class CorrectionStore:
    """Reads and writes ``PRED_DIR/review/corrections.csv`` (see the module docstring).

    Args:
        pred_dir: the ``--out`` folder of ``kneel predict``.
    """

    def __init__(self, pred_dir: str | os.PathLike[str]) -> None:
        self.path = corrections_path(pred_dir)
        self.lock_path = self.path.parent / ".corrections.lock"
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[tuple[str, str], KneeReview]] | None = None

    # --------------------------------------------------------------------------------------------- reading
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> dict[tuple[str, str], KneeReview]:
        """Every saved knee, ``{(file, side): KneeReview}``, as the file holds it now (re-read when it changed)."""
        stat = self._stat()
        if stat is None:
            return {}
        if self._cache is not None and self._cache[0] == stat:
            return dict(self._cache[1])
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CorrectionError(f"cannot read: {exc.strerror or exc}", self.path) from None
        records = _parse(text, self.path)
        self._cache = (stat, records)
        return dict(records)

    def get(self, file: str, side: str) -> KneeReview | None:
        return self.load().get((file, KneeSide.parse(side).value))

    # --------------------------------------------------------------------------------------------- writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(self.lock_path, "a+b")  # noqa: SIM115 - held for the whole block
            except OSError as exc:
                raise OutputError(f"cannot write: {exc.strerror or exc}", self.lock_path) from None
            try:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                yield
            finally:
                handle.close()  # releases the flock

    def save(
        self,
        file: str,
        side: str,
        *,
        status: str,
        landmarks_px: np.ndarray | list | None,
        base_version: int,
        shape: tuple[int, int],
        spacing: tuple[float, float],
        predicted_px: np.ndarray | None = None,
    ) -> KneeReview:
        """Save one knee's review and return it with its new version.

        Args:
            file, side: the knee (the file key of ``kneel predict``).
            status: one of :data:`STATUSES`; ``accepted`` becomes ``corrected`` when a landmark differs from the
                prediction (or there is none: a knee added by hand), and ``corrected`` becomes ``accepted`` when none
                does, so the status always says whether the prediction was changed.
            landmarks_px: (16, 2) original pixels; ``None`` (or anything) for ``absent``. Every point must be finite
                and on the image (``-0.5 <= x <= columns - 0.5``, same for y).
            base_version: the knee's version the change was made on (0: never saved).
            shape: (rows, columns) of the image; spacing: (row_mm, col_mm).
            predicted_px: (16, 2) prediction, ``None`` for a knee that was not predicted.

        Raises:
            CorrectionError: an invalid status or point. VersionConflict: ``base_version`` is stale.
        """
        side = KneeSide.parse(side).value
        if status not in STATUSES:
            raise CorrectionError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        xy = None if status == "absent" else _check_points(landmarks_px, shape)
        if xy is None:
            moved = (False,) * NUM_LANDMARKS
        elif predicted_px is None:
            moved = (True,) * NUM_LANDMARKS
        else:
            pred = np.asarray(predicted_px, dtype=np.float64).reshape(NUM_LANDMARKS, 2)
            moved = tuple(bool(d > MOVE_TOLERANCE_PX) for d in np.abs(xy - pred).max(axis=1))
        if status == "accepted" and any(moved):
            status = "corrected"
        elif status == "corrected" and not any(moved):
            status = "accepted"
        with self._locked():
            records = self.load()
            current = records.get((file, side))
            version = current.version if current is not None else 0
            if int(base_version) != version:
                raise VersionConflict(file, side, version, int(base_version))
            mm = None if xy is None else xy * np.array([float(spacing[1]), float(spacing[0])])
            record = KneeReview(file, side, status, xy, moved, version + 1, _now(), mm)
            records[(file, side)] = record
            try:
                with atomic_writer(self.path, "w", newline="") as handle:
                    handle.write(_format(records))
            except OSError as exc:
                raise OutputError(f"cannot write: {exc.strerror or exc}", self.path) from None
            self._cache = None
        return record


def _check_points(landmarks_px: np.ndarray | list | None, shape: tuple[int, int]) -> np.ndarray:
    try:
        xy = np.asarray(landmarks_px, dtype=np.float64)
    except (TypeError, ValueError):
        raise CorrectionError("landmarks must be 16 [x, y] pairs of numbers") from None
    if xy.shape != (NUM_LANDMARKS, 2):
        raise CorrectionError(f"landmarks must be {NUM_LANDMARKS} [x, y] pairs, got shape {list(xy.shape)}")
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise CorrectionError(f"landmark {int(np.flatnonzero(bad)[0])} is not a finite number")
    rows, cols = shape
    outside = (xy[:, 0] < -0.5) | (xy[:, 0] > cols - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] > rows - 0.5)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise CorrectionError(
            f"landmark {k} at ({xy[k, 0]:g}, {xy[k, 1]:g}) is outside the {cols}x{rows} image "
            f"(x from -0.5 to {cols - 0.5:g}, y from -0.5 to {rows - 0.5:g})"
        )
    return xy
