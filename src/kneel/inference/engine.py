"""The batch engine behind ``kneel predict``: many radiographs, worker processes, resume, shards, never one crash.

DataLoader worker processes read, normalise and warp the low-cost inputs of the next radiographs while the main
process runs the networks on the current ones (:class:`~kneel.inference.pipeline.Preparer` in the workers,
:meth:`~kneel.inference.pipeline.Predictor.predict_prepared` in the main process, ROIs of all radiographs of a batch in
one forward pass). Every finished radiograph is written at once (:class:`~kneel.inference.outputs.OutputFolder`), so a
re-run with the same ``--out`` skips it; a file that fails is recorded in ``errors.csv`` and the run goes on.
Nothing accumulates in memory across batches. Reader processes die with the main process, however it ends (``kill
-9`` included): they hold hundreds of megabytes each.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from kneel.errors import ConfigError, OutputError, cli_forms, use_cli_forms
from kneel.inference.discovery import InputFile, SkippedFile, find_inputs, in_shard, parse_shard
from kneel.inference.outputs import OutputFolder
from kneel.inference.pipeline import Predictor, PreparedRadiograph, PrepareFailure, Preparer
from kneel.inference.presence import STATUS_NO_KNEE, STATUS_OK
from kneel.io.radiograph import special_file

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
    ignored: int = 0
    """Files found in input folders and left out (not radiographs, images without a spacing, FIFOs...)."""
    no_knee: int = 0
    """Files of this shard read but holding no knee (status ``no_knee`` in ``status.csv``)."""

    @property
    def ok(self) -> bool:
        """Every file of this shard was read (files without a knee count as read)."""
        return self.failed == 0


def default_workers() -> int:
    """Worker processes for reading: one fewer than the CPUs (the main process runs the networks), at most 4; none on
    two CPUs or fewer, where a worker slows the networks' two threads more than it saves (measured on the 2-core
    development machine, paper-size 5-fold models, 8 films of 5-14 Mpixel: 58 s with no worker, 65 s with one; the
    transfer of the prepared films between processes alone cost 6-8 s of system time)."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


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


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent(parent: int) -> None:
    """End this reader process when the main process ``parent`` ends, however it ends.

    A reader blocked on a full pipe to a dead parent never exits by itself (PyTorch's own check runs only between
    items, and the exit then waits for the pipe). On Linux the kernel kills it (``PR_SET_PDEATHSIG``); elsewhere a
    thread polls the parent's PID. The PID check after ``prctl`` covers a parent that died before it took effect.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), name="kneel-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _worker_init(_: int, parent: int | None = None, cli: bool = False) -> None:
    import cv2

    from kneel.io.radiograph import quiet_reader_warnings

    if parent is not None:
        _exit_with_parent(parent)
    use_cli_forms(cli)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    quiet_reader_warnings()


def _report_skipped(skipped: Sequence[SkippedFile], limit: int = 20) -> None:
    """Name the files left out of the input folders, with the reason (at most ``limit`` lines, then a count)."""
    for item in skipped[:limit]:
        print(f"kneel predict: skipped {item.path}: {item.reason}", file=sys.stderr)
    if len(skipped) > limit:
        print(f"kneel predict: ... and {len(skipped) - limit} more files skipped", file=sys.stderr)


def _nothing_to_do(skipped: Sequence[SkippedFile]) -> ConfigError:
    """The error for inputs that hold no radiograph at all, with what was found instead."""
    if not skipped:
        return ConfigError("no radiograph in the inputs (the folders are empty)")
    reasons: dict[str, int] = {}
    for item in skipped:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    found = "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return ConfigError(f"no radiograph in the inputs: {len(skipped)} files skipped ({found})")


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
    lc_model: str | os.PathLike[str] | None = None,
    flip_tta: bool = False,
    refine_tolerance_mm: float = 0.0,
) -> RunSummary:
    """Predict landmarks for every radiograph in ``inputs``; write results to ``out`` (see :mod:`.outputs`).

    Args:
        inputs: files, folders (recursive), glob patterns, ``.txt`` lists of paths.
        model: the model directory (``MODEL/{lc,hc}/fold_<k>/``) or a ready :class:`Predictor`.
        lc_model: the low-cost stage when ``model`` holds only the high-cost one (see :class:`Predictor`).
        out: output folder; re-running with the same folder resumes (finished radiographs are skipped).
        knees, refine, device, precision, reference_geometry, spacing, force, flip_tta, refine_tolerance_mm: see
            :class:`Predictor`.
        batch_size: network inputs per forward pass (``batch_size // 2`` radiographs per batch).
        workers: DataLoader worker processes reading radiographs (default :func:`default_workers`).
        overlays: write a PNG per radiograph with the landmarks drawn.
        npz: write the reference-compatible ``preds.npz``.
        shard: ``"K/N"``: process only the files whose key hashes to shard K of N.
        progress: show a progress bar (images/s).

    Returns:
        A :class:`RunSummary`; ``failed > 0`` when any file of this shard could not be processed, ``no_knee``: files
        read that hold no knee (listed with the reason in ``status.csv`` and on stderr).

    Raises:
        ConfigError: the inputs hold no radiograph at all (what was skipped, and why, is in the message).
        OutputError: ``out`` cannot be written (read-only, disk full); finished results are kept.
    """
    start = time.perf_counter()
    shard_kn = parse_shard(shard) if isinstance(shard, str) or shard is None else tuple(shard)
    found, ignored = find_inputs(inputs, images=spacing is not None)
    _report_skipped(ignored)
    if not found:
        raise _nothing_to_do(ignored)
    files = in_shard(found, shard_kn)  # type: ignore[arg-type]
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
            lc_model=lc_model,
            flip_tta=flip_tta,
            refine_tolerance_mm=refine_tolerance_mm,
        )
    folder = OutputFolder(out)
    folder.open(predictor.settings)
    files = folder.stable_keys(files)
    todo = [f for f in files if not folder.is_done(f.key, overlay=overlays)]
    skipped = len(files) - len(todo)
    special = [(f, special_file(f.path)) for f in todo]
    for f, reason in special:  # a FIFO or a device named as an input: never opened (it would block or never end)
        if reason is not None:
            folder.write_failure(f.key, f.path, reason)
            print(f"kneel predict: {f.key}: {reason}", file=sys.stderr)
    todo = [f for f, reason in special if reason is None]
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
        worker_init_fn=functools.partial(_worker_init, parent=os.getpid(), cli=cli_forms()) if workers else None,
        prefetch_factor=2 if workers else None,
        # spawn, not fork: a process that already ran torch/OpenCV thread pools can deadlock in a forked child.
        multiprocessing_context="spawn" if workers else None,
    )
    from tqdm import tqdm

    done = 0
    finished = False
    bar = tqdm(total=len(todo), unit="img", desc="kneel predict", disable=not progress, file=sys.stderr)
    try:
        for batch in loader:
            ready = [b for b in batch if isinstance(b, PreparedRadiograph)]
            for failure in (b for b in batch if isinstance(b, PrepareFailure)):
                folder.write_failure(failure.file, failure.path, failure.reason)
                bar.write(f"kneel predict: {failure.file}: {failure.reason}", file=sys.stderr)
            for prediction, item in _predict_robustly(predictor, ready, folder, bar):
                if _write_outputs(folder, prediction, item, overlays, bar):
                    done += 1
            bar.update(len(batch))
            del batch, ready
        finished = True
    finally:
        bar.close()
        try:
            folder.rebuild_landmarks()
            folder.rebuild_errors()
            statuses = folder.rebuild_status()
        except OutputError:
            if finished:
                raise  # otherwise the error that stopped the run is the one to report
    if npz:
        folder.write_npz()
    failed = sum(1 for f in files if folder.failure_path(f.key).exists())
    no_knee = sum(1 for f in files if statuses.get(f.key) == STATUS_NO_KNEE)
    seconds = time.perf_counter() - start
    root = str(folder.root)
    return RunSummary(len(files), skipped, done, failed, seconds, root, ignored=len(ignored), no_knee=no_knee)


def _write_outputs(folder: OutputFolder, prediction: Any, item: PreparedRadiograph, overlays: bool, bar: Any) -> bool:
    """Write one radiograph's result (and overlay). A failure of this file is recorded and the run goes on; an
    output that cannot be written at all (:class:`OutputError`: read-only, disk full) stops the run."""
    try:
        folder.write_result(prediction)
        if overlays:
            folder.write_overlay(prediction, item.image)
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's problem is that file's failure
        reason = f"writing the outputs failed: {type(exc).__name__}: {exc}"
        folder.write_failure(prediction.file, prediction.path, reason)
        bar.write(f"kneel predict: {prediction.file}: {reason}", file=sys.stderr)
        return False
    if prediction.status == STATUS_NO_KNEE:
        bar.write(f"kneel predict: {prediction.file}: no knee: {prediction.reason}", file=sys.stderr)
        return True
    for note in prediction.warnings:
        bar.write(f"kneel predict: {prediction.file}: warning: {note}", file=sys.stderr)
    return True


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
