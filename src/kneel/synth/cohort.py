"""Write a synthetic cohort: DICOM films, ground truth, reference-format annotations, OAI-like folder structure.

Output (``DIR``):

* the films: ``DIR/<Folder>/001`` listed in ``DIR/contents.csv`` (``layout="oai"``) or ``DIR/<subject_id>.dcm``
  (``layout="flat"``);
* ``ground_truth.csv``: the landmark table ``file,side,landmark,x_px,y_px,kl`` (original pixels, exact floats);
* ``annotations.csv``: the same knees in the format of ``bf_landmarks_1_0.3.csv`` (integers, ROI frame), so that
  dataset preparation runs on it exactly as on the published file;
* ``films.csv``: one row per film (size, spacing, photometric, bits, compression, knees present, source subjects).

Film ``i`` depends only on ``(seed, i, split)`` and the options, never on ``n``, the worker count or the order in
which workers finish: same arguments, same bytes (UIDs included).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kneel.errors import KneelError
from kneel.io.annotations import ROI_SIZE_PX, KneeAnnotation, padded_to_roi, write_bf_landmarks
from kneel.io.atomic import atomic_write_text
from kneel.io.dicom_writer import write_dicom
from kneel.landmarks import CENTRE_LANDMARK, KneeSide
from kneel.synth.film import FilmPlan, plan_film, render_film
from kneel.synth.placement import ROI_HALF
from kneel.synth.shapes import Split

__all__ = ["generate_cohort", "CohortSummary", "SynthError", "subject_id_for", "LAYOUTS", "COMPRESSIONS"]

Layout = Literal["oai", "flat"]
LAYOUTS = ("oai", "flat")
COMPRESSIONS = ("none", "rle", "jpeg2000", "mixed")
SERIES = "Bilateral PA Fixed Flexion Knee"
_OTHER_SERIES = ("PA Right Hand", "PA Left Hand", "Lateral Right Knee", "Lateral Left Knee", "AP Pelvis")
_ID_RANGES: dict[str, tuple[int, int]] = {
    "train": (9_000_000, 800_000),
    "test": (9_800_000, 100_000),
    "all": (9_900_000, 100_000),
}
"""Synthetic subject ids per split: (first id, count). Disjoint, so cohorts of different splits never share ids."""


class SynthError(KneelError):
    """Invalid generator arguments or an output folder that cannot be written."""


@dataclass(frozen=True)
class CohortSummary:
    """What ``generate_cohort`` wrote and how long it took."""

    out: Path
    n_images: int
    n_knees: int
    seconds: float
    layout: str
    split: str
    seed: int
    files: tuple[str, ...] = field(repr=False)

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (
            f"{self.n_images} films, {self.n_knees} knees ({self.layout} layout, split {self.split}, seed {self.seed}) "
            f"in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s) -> {self.out}"
        )


@dataclass(frozen=True)
class _Task:
    out: str
    seed: int
    index: int
    subject_id: int
    split: str
    layout: str
    single_knee_fraction: float
    compression: str
    implant_fraction: float = 0.0


@dataclass(frozen=True)
class _FilmRecord:
    file: str
    subject_id: int
    folder: str
    study_date: str
    knees: tuple[dict[str, Any], ...]
    film: dict[str, Any]


def subject_id_for(seed: int, index: int, split: str) -> int:
    """The synthetic subject id of film ``index``: 7 digits, OAI-like, unique within a cohort and split-specific."""
    base, count = _ID_RANGES[split]
    state = np.random.SeedSequence([int(seed), 7]).generate_state(2)
    a = int(state[0]) % count
    while np.gcd(a, count) != 1:
        a = (a + 1) % count
    return base + (a * int(index) + int(state[1])) % count


def generate_cohort(
    out: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    layout: Layout = "oai",
    single_knee_fraction: float = 0.05,
    compression: str = "none",
    split: Split = "all",
    workers: int | None = None,
    progress: bool = True,
    implant_fraction: float = 0.0,
) -> CohortSummary:
    """Generate ``n`` synthetic bilateral PA knee films with exact landmark ground truth under ``out``.

    Args:
        out: Output folder (created; existing files of the same names are replaced).
        n: Number of films.
        seed: Cohort seed; film ``i`` is a pure function of ``(seed, i, split)`` and the options.
        layout: ``"oai"`` (``contents.csv``, images at ``<Folder>/001``) or ``"flat"`` (``<subject_id>.dcm``).
        single_knee_fraction: Probability that a film shows only one knee.
        compression: ``none``, ``rle``, ``jpeg2000`` (lossless) or ``mixed`` (each film draws one).
        split: ``train`` or ``test`` draw shapes only from their side of the fixed subject split of the published
            knees (see ``kneel.synth.shapes.is_held_out``); ``all`` from every knee.
        workers: Worker processes (default: CPU count, at most ``n``); 1 renders in this process.
        progress: Show a progress bar.
        implant_fraction: Probability that one knee of a bilateral film is a total knee replacement (metal,
            saturated); such a knee is rendered but has no ground truth and no row in ``annotations.csv``.
    """
    if n < 0:
        raise SynthError(f"n must be >= 0, got {n}")
    if layout not in LAYOUTS:
        raise SynthError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if compression not in COMPRESSIONS:
        raise SynthError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
    if split not in _ID_RANGES:
        raise SynthError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if not 0.0 <= single_knee_fraction <= 1.0:
        raise SynthError(f"single_knee_fraction must be within [0, 1], got {single_knee_fraction}")
    if not 0.0 <= implant_fraction <= 1.0:
        raise SynthError(f"implant_fraction must be within [0, 1], got {implant_fraction}")
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthError(f"cannot create the output folder: {exc.strerror}", out_dir) from exc
    tasks = [
        _Task(
            str(out_dir),
            int(seed),
            i,
            subject_id_for(seed, i, split),
            split,
            layout,
            single_knee_fraction,
            compression,
            implant_fraction,
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    records = list(_run(tasks, workers, progress))
    _write_tables(out_dir, records, layout)
    seconds = time.perf_counter() - start
    return CohortSummary(
        out=out_dir,
        n_images=len(records),
        n_knees=sum(len(r.knees) for r in records),
        seconds=seconds,
        layout=layout,
        split=split,
        seed=int(seed),
        files=tuple(r.file for r in records),
    )


def _run(tasks: list[_Task], workers: int | None, progress: bool) -> Iterator[_FilmRecord]:
    from tqdm import tqdm

    n_workers = min(workers or os.cpu_count() or 1, len(tasks)) if tasks else 1
    bar = tqdm(total=len(tasks), desc="synth", unit="film", disable=not progress)
    try:
        if n_workers <= 1:
            for task in tasks:
                yield _make_film(task)
                bar.update()
            return
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_init_worker) as pool:
            for record in pool.map(_make_film, tasks, chunksize=1):
                yield record
                bar.update()
    finally:
        bar.close()


def _init_worker() -> None:
    """One OpenCV thread per worker process: the processes already use every core."""
    import cv2

    cv2.setNumThreads(1)


def film_rng(seed: int, index: int, split: str) -> np.random.Generator:
    """The random generator of film ``index`` of a cohort."""
    split_code = {"train": 1, "test": 2, "all": 3}[split]
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), split_code]))


def _make_film(task: _Task) -> _FilmRecord:
    """Plan, render and write one film; return what the tables need."""
    from pydicom.uid import generate_uid

    rng = film_rng(task.seed, task.index, task.split)
    single = bool(rng.random() < task.single_knee_fraction)
    compression = task.compression
    if compression == "mixed":
        compression = str(rng.choice(["none", "rle", "jpeg2000"], p=[0.5, 0.3, 0.2]))
    date = _study_date(rng)
    accession = int(rng.integers(10_000_000, 99_999_999))
    plan = plan_film(
        rng,
        task.split,  # type: ignore[arg-type]
        single_knee=single,
        implant_probability=task.implant_fraction,
    )
    pixels = render_film(plan)

    sid = task.subject_id
    if task.layout == "oai":
        folder = f"0.C.2/{sid}/{date}/{accession:08d}"
        rel = f"{folder}/001"
    else:
        folder = ""
        rel = f"{sid}.dcm"
    # UIDs identify the content: they follow everything that changes the pixels (not the folder layout).
    options = f"{task.single_knee_fraction!r}/{task.implant_fraction!r}/{task.compression}"
    entropy = ["kneel-synth", str(task.seed), task.split, str(task.index), options]
    acq = plan.acquisition
    sides = tuple(k.side for k in plan.knees)
    laterality = "B" if len(sides) == 2 else sides[0]
    extra = {
        "StudyInstanceUID": generate_uid(entropy_srcs=[*entropy, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=[*entropy, "series"]),
        "SeriesDescription": SERIES,
        "StudyDescription": "XR KNEE BILATERAL",
        "StudyDate": date,
        "SeriesDate": date,
        "Manufacturer": "kneel synthetic",
        "ImageComments": "synthetic radiograph (kneel synth); not a patient image",
    }
    # A display window, as modalities store one (readers ignore it for processing).
    sample = pixels[::8, ::8]
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    extra["WindowCenter"] = f"{0.5 * (low + high):.1f}"
    extra["WindowWidth"] = f"{max(high - low, 1.0):.1f}"
    path = Path(task.out) / rel
    write_dicom(
        path,
        pixels,
        spacing=plan.layout.spacing,
        spacing_tags=acq.spacing_tags,
        photometric=acq.photometric,
        bits_stored=acq.bits_stored,
        compression=compression,
        modality=acq.modality,
        patient_id=str(sid),
        sop_instance_uid=generate_uid(entropy_srcs=[*entropy, "image"]),
        laterality=laterality,
        extra=extra,
    )
    knees = tuple(
        {
            "side": k.side,
            "kl": k.kl,
            "original_px": k.original_px,
            "padded": k.padded,
            "source_subject": s.subject_id,
        }
        for k, s in plan.annotated
    )
    return _FilmRecord(rel, sid, folder, date, knees, _film_row(rel, sid, plan, compression))


def _study_date(rng: np.random.Generator) -> str:
    day = int(rng.integers(0, 1000))
    date = np.datetime64("2004-02-01") + np.timedelta64(day, "D")
    return str(date).replace("-", "")


def _film_row(rel: str, sid: int, plan: FilmPlan, compression: str) -> dict[str, Any]:
    acq = plan.acquisition
    lay = plan.layout
    return {
        "file": rel,
        "subject_id": sid,
        "rows": lay.rows,
        "columns": lay.cols,
        "spacing_row_mm": lay.spacing[0],
        "spacing_col_mm": lay.spacing[1],
        "spacing_tags": "+".join(acq.spacing_tags),
        "photometric": acq.photometric,
        "bits_stored": acq.bits_stored,
        "modality": acq.modality,
        "compression": compression,
        "sides": "".join(k.side for k in plan.knees),
        "kl": ";".join(f"{k.side}:{k.kl}" for k, _ in plan.annotated),
        "source_subjects": ";".join(f"{k.side}:{s.subject_id}" for k, s in plan.annotated),
        "implants": "".join(plan.implants),
        "unusual_rotation": int(lay.unusual),
        "response": acq.response,
    }


# ---------------------------------------------------------------------------------------------------------------
# tables


def _write_tables(out: Path, records: list[_FilmRecord], layout: str) -> None:
    _write_ground_truth(out / "ground_truth.csv", records)
    _write_annotations(out / "annotations.csv", records)
    _write_csv(out / "films.csv", [r.film for r in records])
    if layout == "oai":
        _write_contents(out / "contents.csv", records)


def _ground_truth_rows(records: Iterable[_FilmRecord]) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        for knee in rec.knees:
            for lm, (x, y) in enumerate(knee["original_px"]):
                rows.append(
                    {
                        "file": rec.file,
                        "side": knee["side"],
                        "landmark": lm,
                        "x_px": float(x),
                        "y_px": float(y),
                        "kl": knee["kl"],
                    }
                )
    return rows


def _write_ground_truth(path: Path, records: list[_FilmRecord]) -> None:
    import pandas as pd

    from kneel.io.landmark_table import write_landmark_table

    df = pd.DataFrame(_ground_truth_rows(records), columns=["file", "side", "landmark", "x_px", "y_px", "kl"])
    write_landmark_table(df, path)


def knee_annotations(records: Iterable[_FilmRecord]) -> list[KneeAnnotation]:
    """The knees as rows of ``bf_landmarks_1_0.3.csv``: ROI frame (L mirrored), bbox and centre in the padded frame."""
    anns = []
    for rec in records:
        for knee in rec.knees:
            padded = np.asarray(knee["padded"], dtype=np.float64)
            cx, cy = (int(v) for v in padded[CENTRE_LANDMARK])
            bbox = (cx - ROI_HALF, cy - ROI_HALF, cx - ROI_HALF + ROI_SIZE_PX, cy - ROI_HALF + ROI_SIZE_PX)
            side = KneeSide.parse(knee["side"])
            roi = padded_to_roi(padded, side, bbox)
            anns.append(KneeAnnotation(rec.subject_id, side, int(knee["kl"]), roi, bbox, (cx, cy)))
    return sorted(anns, key=lambda a: (a.subject_id, a.side.value))


def _write_annotations(path: Path, records: list[_FilmRecord]) -> None:
    write_bf_landmarks(knee_annotations(records), path)


def _write_contents(path: Path, records: list[_FilmRecord]) -> None:
    """OAI-style ``contents.csv``: the bilateral PA series of every subject plus other series (no files) to skip."""
    rows = []
    for rec in records:
        rng = np.random.default_rng(rec.subject_id)
        extra = rng.choice(len(_OTHER_SERIES), size=int(rng.integers(1, 3)), replace=False)
        series = [(rec.folder, SERIES)]
        for j in extra:
            other_folder = rec.folder.rsplit("/", 1)[0] + f"/{int(rng.integers(10_000_000, 99_999_999)):08d}"
            series.append((other_folder, _OTHER_SERIES[int(j)]))
        for folder, description in series:
            rows.append(
                {
                    "Folder": folder,
                    "ParticipantID": rec.subject_id,
                    "StudyDate": rec.study_date,
                    "Barcode": f"0166{rec.subject_id % 10_000_000:07d}"[:11],
                    "StudyDescription": "XR KNEE BILATERAL" if description == SERIES else "XR",
                    "SeriesDescription": description,
                }
            )
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
