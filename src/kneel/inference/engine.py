"""The batch engine behind ``kneel predict``: many radiographs, worker processes, resume, shards, never one crash.

DataLoader worker processes read, normalise and warp the low-cost inputs of the next radiographs while the main
process runs the networks on the current ones (:class:`~kneel.inference.pipeline.Preparer` in the workers,
:meth:`~kneel.inference.pipeline.Predictor.predict_prepared` in the main process, ROIs of all radiographs of a batch in
one forward pass). Every finished radiograph is written at once (:class:`~kneel.inference.outputs.OutputFolder`), so a
re-run with the same ``--out`` skips it; a file that fails is recorded in ``errors.csv`` and the run goes on.
Nothing accumulates in memory across batches.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kneel.inference.discovery import InputFile, discover_inputs, in_shard, parse_shard
from kneel.inference.outputs import OutputFolder
from kneel.inference.pipeline import Predictor, PreparedRadiograph, PrepareFailure, Preparer
from kneel.inference.presence import STATUS_NO_KNEE, STATUS_OK

__all__ = ["RunSummary", "predict_files", "predict_batch", "PreparingDataset", "default_workers"]


@dataclass
class RunSummary:
    """What a batch run did."""

    found: int
    """Inputs in this shard."""
    skipped: int
    """Already finished in ``--out`` (resume)."""
    done: int
    """Predicted in this run."""
    failed: int
    """Files of this shard that failed (listed in ``errors.csv``)."""
    seconds: float
    out: str
    no_knee: int = 0
    """Files of this shard read but holding no knee (status ``no_knee`` in ``status.csv``)."""

    @property
    def ok(self) -> bool:
        """Every file of this shard was read (files without a knee count as read)."""
        return self.failed == 0


def default_workers() -> int:
    """Worker processes for reading: one fewer than the CPUs (the main process runs the networks), at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class PreparingDataset(Dataset):
    """Reads and prepares one radiograph per item (in a DataLoader worker); failures come back as values."""

    def __init__(self, files: Sequence[InputFile], preparer: Preparer) -> None:
        self.files = list(files)
        self.preparer = preparer

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> PreparedRadiograph | PrepareFailure:
        f = self.files[index]
        return self.preparer(f.key, f.path)


def _collate(items: list[Any]) -> list[Any]:
    return items


def _worker_init(_: int) -> None:
    import cv2

    from kneel.io.radiograph import quiet_reader_warnings

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    quiet_reader_warnings()


def predict_files(
    inputs: Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | Predictor,
    out: str | os.PathLike[str],
    *,
    knees: str = "auto",
    refine: bool = True,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int | None = None,
    precision: str = "fp32",
    overlays: bool = False,
    npz: bool = False,
    shard: str | tuple[int, int] | None = None,
    reference_geometry: bool = False,
    spacing: float | Sequence[float] | None = None,
    progress: bool = True,
    force: bool = False,
) -> RunSummary:
    """Predict landmarks for every radiograph in ``inputs``; write results to ``out`` (see :mod:`.outputs`).

    Args:
        inputs: files, folders (recursive), glob patterns, ``.txt`` lists of paths.
        model: the model directory (``MODEL/{lc,hc}/fold_<k>/``) or a ready :class:`Predictor`.
        out: output folder; re-running with the same folder resumes (finished radiographs are skipped).
        knees, refine, device, precision, reference_geometry, spacing, force: see :class:`Predictor`.
        batch_size: network inputs per forward pass (``batch_size // 2`` radiographs per batch).
        workers: DataLoader worker processes reading radiographs (default :func:`default_workers`).
        overlays: write a PNG per radiograph with the landmarks drawn.
        npz: write the reference-compatible ``preds.npz``.
        shard: ``"K/N"``: process only the files whose key hashes to shard K of N.
        progress: show a progress bar (images/s).

    Returns:
        A :class:`RunSummary`; ``failed > 0`` when any file of this shard could not be processed, ``no_knee``: files
        read that hold no knee (listed with the reason in ``status.csv`` and on stderr).
    """
    start = time.perf_counter()
    shard_kn = parse_shard(shard) if isinstance(shard, str) or shard is None else tuple(shard)
    files = in_shard(discover_inputs(inputs, images=spacing is not None), shard_kn)  # type: ignore[arg-type]
    if isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor(
            model,
            device=device,
            precision=precision,
            refine=refine,
            knees=knees,
            reference_geometry=reference_geometry,
            batch_size=batch_size,
            spacing=spacing,
            force=force,
        )
    folder = OutputFolder(out)
    folder.open(predictor.settings)
    todo = [f for f in files if not folder.is_done(f.key)]
    skipped = len(files) - len(todo)
    workers = default_workers() if workers is None else max(0, int(workers))
    images_per_batch = max(1, predictor.batch_size // 2)
    if len(todo) <= images_per_batch:
        workers = 0  # one batch: starting a reader process would only add its start-up time
    loader = DataLoader(
        PreparingDataset(todo, predictor.preparer),
        batch_size=images_per_batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        # spawn, not fork: a process that already ran torch/OpenCV thread pools can deadlock in a forked child.
        multiprocessing_context="spawn" if workers else None,
    )
    from tqdm import tqdm

    done = 0
    bar = tqdm(total=len(todo), unit="img", desc="kneel predict", disable=not progress, file=sys.stderr)
    try:
        for batch in loader:
            ready = [b for b in batch if isinstance(b, PreparedRadiograph)]
            for failure in (b for b in batch if isinstance(b, PrepareFailure)):
                folder.write_failure(failure.file, failure.path, failure.reason)
                bar.write(f"kneel predict: {failure.file}: {failure.reason}", file=sys.stderr)
            for prediction, item in _predict_robustly(predictor, ready, folder, bar):
                folder.write_result(prediction)
                if overlays:
                    folder.write_overlay(prediction, item.image)
                if prediction.status == STATUS_NO_KNEE:
                    bar.write(f"kneel predict: {prediction.file}: no knee: {prediction.reason}", file=sys.stderr)
                else:
                    for note in prediction.warnings:
                        bar.write(f"kneel predict: {prediction.file}: warning: {note}", file=sys.stderr)
                done += 1
            bar.update(len(batch))
            del batch, ready
    finally:
        bar.close()
        folder.rebuild_landmarks()
        folder.rebuild_errors()
        statuses = folder.rebuild_status()
    if npz:
        folder.write_npz()
    failed = sum(1 for f in files if folder.failure_path(f.key).exists())
    no_knee = sum(1 for f in files if statuses.get(f.key) == STATUS_NO_KNEE)
    seconds = time.perf_counter() - start
    return RunSummary(len(files), skipped, done, failed, seconds, str(folder.root), no_knee=no_knee)


def _predict_robustly(predictor: Predictor, items: list[PreparedRadiograph], folder: OutputFolder, bar: Any) -> list:
    """Predict a batch; if the batch fails, retry each radiograph alone so one bad image fails alone."""
    if not items:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return list(zip(predictor.predict_prepared(items), items, strict=True))
        except Exception:  # noqa: BLE001
            pass
        out = []
        for item in items:
            try:
                out.append((predictor.predict_prepared([item])[0], item))
            except Exception as exc:  # noqa: BLE001 - recorded in errors.csv, the run goes on
                reason = f"prediction failed: {type(exc).__name__}: {exc}"
                folder.write_failure(item.file, item.path, reason)
                bar.write(f"kneel predict: {item.file}: {reason}", file=sys.stderr)
        return out


def predict_batch(predictor: Predictor, keys: Sequence[str], paths: Sequence[str]) -> dict[str, list[Any]]:
    """The per-batch function for external engines (Ray Data ``map_batches``, Spark, Dask...): read, predict.

    Returns a column dictionary of the landmark table (:data:`~kneel.inference.results.CSV_COLUMNS`) plus
    ``status`` and ``error``: landmark rows have status ``ok`` and no error; a file that fails gives one row with
    ``file``, status ``failed`` and the reason in ``error``; a file without a knee one row with status ``no_knee``
    and the reason (``landmark`` is -1 in both).
    """
    from kneel.inference.results import CSV_COLUMNS

    columns: dict[str, list[Any]] = {name: [] for name in (*CSV_COLUMNS, "status", "error")}
    prepared = [predictor.preparer(str(k), str(p)) for k, p in zip(keys, paths, strict=True)]

    text = {"file", "side", "name", "sop_instance_uid", "quality", "status", "error"}

    def add(row: dict[str, Any]) -> None:
        for name, values in columns.items():
            values.append(row.get(name, "" if name in text else float("nan")))

    ready = [p for p in prepared if isinstance(p, PreparedRadiograph)]
    for failure in (p for p in prepared if isinstance(p, PrepareFailure)):
        add({"file": failure.file, "landmark": -1, "status": failure.status, "error": failure.reason})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = predictor.predict_prepared(ready) if ready else []
    for prediction in results:
        if prediction.status == STATUS_NO_KNEE:
            add({"file": prediction.file, "landmark": -1, "status": STATUS_NO_KNEE, "error": prediction.reason})
        for row in prediction.rows():
            add({**dict(zip(CSV_COLUMNS, row, strict=True)), "status": STATUS_OK})
    return columns
