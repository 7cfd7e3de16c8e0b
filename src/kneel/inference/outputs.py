"""The output folder of ``kneel predict``: one JSON per image (the unit of truth), tables rebuilt from them.

Layout of ``--out``::

    run.json              settings of the run (a resumed run must use the same ones)
    results/<name>.json   one per finished radiograph, written atomically (temp file + rename)
    failed/<name>.json    one per file that failed (retried by the next run; removed once it succeeds)
    landmarks.csv         file,side,landmark,name,x_px,y_px,x_mm,y_mm,uncertainty_mm,sop_instance_uid,quality
    errors.csv            file,reason
    status.csv            file,status,knees_found,reason: every input, ok / no_knee / failed
    overlays/<name>.png   optional pictures of the landmarks
    preds.npz             optional, reference-compatible: preds (N, 2, 16, 2) in R, L order (NaN: missing), imgs

``<name>`` is the file key made safe for a file name plus a short hash of the key (keys may contain ``/``).
``landmarks.csv`` is appended to after each radiograph (one ``write`` of whole lines) and rebuilt from the JSON files,
sorted, at the start and at the end of every run, so a run killed at any moment (even ``kill -9``) loses nothing
that was finished and leaves no half line behind once it is resumed. A radiograph counts as finished when its JSON
is complete and, in a run with overlays, its overlay exists: a run stopped between the two (disk full) redoes it.

Keys are stable across runs into the same folder: a file that already has a result or a failure record keeps the key
it had (:meth:`OutputFolder.stable_keys`), whatever other inputs a later run adds.

Text cells that a spreadsheet would take for a formula are written with a leading ``'``
(:func:`kneel.io.spreadsheet.spreadsheet_safe`). Anything that cannot be written (read-only folder, disk full)
raises :class:`~kneel.errors.OutputError`: one line naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneel.errors import ConfigError, OutputError, option
from kneel.inference.discovery import InputFile
from kneel.inference.presence import STATUS_FAILED
from kneel.inference.results import CSV_COLUMNS, RadiographPrediction
from kneel.io.atomic import atomic_write_bytes, atomic_write_text, atomic_writer
from kneel.io.spreadsheet import spreadsheet_safe

__all__ = ["OutputFolder", "result_name", "STATUS_COLUMNS"]

STATUS_COLUMNS = ("file", "status", "knees_found", "reason")
"""Columns of ``status.csv``: one row per input file."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def result_name(key: str) -> str:
    """A file-name-safe, unique name for a file key: ``<sanitised key>-<8 hex of SHA-1>``."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    safe = _UNSAFE.sub("_", key.replace("/", "__").replace("\\", "__")).strip("._")[-80:]
    return f"{safe or 'file'}-{digest}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6f}"
    if isinstance(value, str):
        return spreadsheet_safe(value)  # file names and DICOM strings come from outside
    return str(value)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write (read-only folder, disk full, quota) into one clear :class:`OutputError`."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc} (finished results are kept; re-run to resume)",
                          getattr(exc, "filename", None) or path) from None  # fmt: skip


def _csv_text(rows: Iterator[tuple[Any, ...]] | list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([_fmt(v) for v in row])
    return buffer.getvalue()


class OutputFolder:
    """Reads and writes one ``--out`` folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.results = self.root / "results"
        self.failed = self.root / "failed"
        self.overlays = self.root / "overlays"
        self.landmarks_csv = self.root / "landmarks.csv"
        self.errors_csv = self.root / "errors.csv"
        self.status_csv = self.root / "status.csv"
        self.npz = self.root / "preds.npz"
        self.run_json = self.root / "run.json"

    # ------------------------------------------------------------------------------------------------ setup
    def open(self, settings: dict[str, Any]) -> None:
        """Create the folder; refuse to mix results made with different settings (resume with the same ones)."""
        with _writing(self.root):
            self.results.mkdir(parents=True, exist_ok=True)
            self.failed.mkdir(parents=True, exist_ok=True)
        if self.run_json.exists():
            try:
                previous = json.loads(self.run_json.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous is not None and previous.get("settings") != settings:
                raise ConfigError(
                    f"holds results made with other settings ({previous.get('settings')}); "
                    f"use another {option('out')}, or the same settings to resume",
                    self.root,
                )
        with _writing(self.run_json):
            atomic_write_text(self.run_json, json.dumps({"settings": settings}, indent=2) + "\n")
        self.rebuild_landmarks()

    def result_path(self, key: str) -> Path:
        return self.results / f"{result_name(key)}.json"

    def failure_path(self, key: str) -> Path:
        return self.failed / f"{result_name(key)}.json"

    def overlay_path(self, key: str) -> Path:
        return self.overlays / f"{result_name(key)}.png"

    def is_done(self, key: str, *, overlay: bool = False) -> bool:
        """Whether a complete result for ``key`` exists (a valid JSON naming the same key), and its overlay when
        ``overlay`` (a run stopped between the two, e.g. by a full disk, must redo the radiograph)."""
        path = self.result_path(key)
        if not path.exists() or (overlay and not self.overlay_path(key).exists()):
            return False
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("file") == key
        except (OSError, ValueError):
            return False

    def known_keys(self) -> dict[str, str]:
        """``{absolute path: key}`` of every file this folder holds a result or a failure record for."""
        known: dict[str, str] = {}
        for folder in (self.failed, self.results):  # a result wins over an old failure record
            for path in folder.glob("*.json"):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    known[os.path.abspath(str(data["path"]))] = str(data["file"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return known

    def stable_keys(self, files: Sequence[InputFile]) -> list[InputFile]:
        """``files`` with absolute paths, each keeping the key it already has in this folder.

        Keys of files found in several folders depend on the other inputs (colliding names get the folder as a
        prefix), so a later run with one more input folder would otherwise give finished files new keys and predict
        them again under those. A new file whose key is already another file's gets its absolute path as key.
        """
        known = self.known_keys()
        taken = set(known.values())
        out = []
        for f in files:
            path = os.path.abspath(f.path)
            key = known.get(path)
            if key is None:
                key = f.key if f.key not in taken else path
            out.append(InputFile(key, path))
        return out

    # ------------------------------------------------------------------------------------------------ per image
    def write_result(self, prediction: RadiographPrediction) -> None:
        """Write the JSON (atomic), drop an old failure record, append the rows to ``landmarks.csv``."""
        result = self.result_path(prediction.file)
        with _writing(result):
            atomic_write_text(result, json.dumps(prediction.to_dict(), indent=1) + "\n")
            failure = self.failure_path(prediction.file)
            if failure.exists():
                failure.unlink(missing_ok=True)
        self._append(_csv_text(list(prediction.rows())))

    def write_failure(self, key: str, path: str, reason: str) -> None:
        reason = " ".join(str(reason).split())
        record = self.failure_path(key)
        with _writing(record):
            atomic_write_text(record, json.dumps({"file": key, "path": path, "reason": reason}) + "\n")

    def _append(self, text: str) -> None:
        if not text:
            return
        with _writing(self.landmarks_csv):
            fd = os.open(self.landmarks_csv, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)

    # ------------------------------------------------------------------------------------------------ tables
    def _records(self, folder: Path) -> list[tuple[str, Path]]:
        out = []
        for path in folder.glob("*.json"):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                out.append((str(data["file"]), path))
            except (OSError, ValueError, KeyError):
                continue
        return sorted(out)

    def iter_results(self) -> Iterator[RadiographPrediction]:
        """Every finished result, sorted by file key, read one at a time (memory does not grow with N)."""
        for _, path in self._records(self.results):
            yield RadiographPrediction.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def rebuild_landmarks(self) -> int:
        """Rewrite ``landmarks.csv`` from the JSON files, sorted by file, side (R first), landmark; atomic."""
        count = 0
        with _writing(self.landmarks_csv), atomic_writer(self.landmarks_csv, "w", newline="") as handle:
            handle.write(_csv_text([], CSV_COLUMNS))
            for prediction in self.iter_results():
                handle.write(_csv_text(list(prediction.rows())))
                count += 1
        return count

    def rebuild_errors(self) -> int:
        """Rewrite ``errors.csv`` (file, reason) from the failure records; returns the number of failed files."""
        rows = []
        for key, path in self._records(self.failed):
            try:
                rows.append((key, json.loads(path.read_text(encoding="utf-8")).get("reason", "")))
            except (OSError, ValueError):
                continue
        with _writing(self.errors_csv):
            atomic_write_text(self.errors_csv, _csv_text(rows, ("file", "reason")))
        return len(rows)

    def rebuild_status(self) -> dict[str, str]:
        """Rewrite ``status.csv`` (file, status, knees_found, reason): every finished radiograph (``ok``: a knee was
        found, ``no_knee``: none) and every failed file (``failed``), sorted by file; returns ``{file: status}``."""
        rows: dict[str, tuple[str, str, str, str]] = {}
        for key, path in self._records(self.failed):
            try:
                reason = str(json.loads(path.read_text(encoding="utf-8")).get("reason", ""))
            except (OSError, ValueError):
                continue
            rows[key] = (key, STATUS_FAILED, "", reason)
        for prediction in self.iter_results():
            found = "".join(knee.side.value for knee in prediction)
            rows[prediction.file] = (prediction.file, prediction.status, found, prediction.reason)
        with _writing(self.status_csv):
            atomic_write_text(self.status_csv, _csv_text([rows[k] for k in sorted(rows)], STATUS_COLUMNS))
        return {k: v[1] for k, v in rows.items()}

    def write_npz(self) -> int:
        """``preds.npz`` like the reference's: ``preds`` (N, 2, 16, 2) R/L, ``imgs`` (names without extension),
        plus ``files`` (the keys); float64 original pixels (not rounded), NaN for a missing knee."""
        preds, imgs, files = [], [], []
        for prediction in self.iter_results():
            preds.append(prediction.bilateral_array())
            imgs.append(Path(prediction.file).stem if Path(prediction.file).suffix else Path(prediction.file).name)
            files.append(prediction.file)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            preds=np.asarray(preds, dtype=np.float64).reshape(-1, 2, 16, 2),
            imgs=np.asarray(imgs, dtype=str),
            files=np.asarray(files, dtype=str),
        )
        with _writing(self.npz):
            atomic_write_bytes(self.npz, buffer.getvalue())
        return len(preds)

    def write_overlay(self, prediction: RadiographPrediction, image_u8: np.ndarray, max_side: int = 1024) -> Path:
        """A PNG of the (downscaled) normalised image with each knee's landmarks, ROI centre, quality and, on
        uncertain knees, the calibrated radius circles (:func:`kneel.inference.overlay.draw_overlay`)."""
        import cv2

        from kneel.inference.overlay import draw_overlay

        canvas = draw_overlay(prediction, image_u8, max_side)
        ok, encoded = cv2.imencode(".png", canvas)
        if not ok:
            raise OSError("PNG encoding failed")
        path = self.overlay_path(prediction.file)
        with _writing(path):
            atomic_write_bytes(path, encoded.tobytes())
        return path
