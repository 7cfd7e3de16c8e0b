"""Build the training data (``DATA/lc``, ``DATA/hc``, ``DATA/folds.csv``) from radiographs and annotations.

What the reference's ``create_train_dataset_from_oai.py`` does (§3), with these deliberate differences:

* exact geometry: landmarks are brought to original DICOM pixels first, then every image and its landmarks go through
  the SAME :class:`~kneel.geometry.Affine` (stored in the metadata), so targets are exact floats, never rounded;
* anti-aliased downsampling (:func:`kneel.geometry.warp`) instead of a bilinear ``cv2.resize``;
* the high-cost ROI is centred on tibial landmark 4 exactly (ROI pixel 233; 232 in x after mirroring a left knee with
  the ``W - 1 - x`` convention used everywhere) and cropped directly from the original image; where it passes the
  image border it is filled with zeros (no fixed pixel padding);
* a metadata table next to the images, parallel workers with a progress bar, and a report (printed and
  ``DATA/report.json``) of subjects without image, images without annotation, and unreadable files;
  a bad file never stops the batch.

Landmarks from ``bf_landmarks_1_0.3.csv`` (ROI frame, left knees mirrored) are converted with the reference's own
relations (:mod:`kneel.io.annotations`): ROI -> padded 0.3 mm frame (un-mirror, add the bbox corner) -> original
pixels (``x_orig = (x_pad - 100) * 0.3 / spacing``, per axis, with the image's real spacing). A ground-truth landmark
table (``file,side,landmark,x_px,y_px,kl``) is already in original pixels and is used as is.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from kneel.data.cohort import Cohort, KneeTarget, SubjectJob, load_cohort
from kneel.data.folds import FoldError, make_folds, write_folds
from kneel.data.layout import (
    FOLDS_FILE,
    IMAGES_DIR,
    METADATA_COLUMNS,
    METADATA_FILE,
    REPORT_FILE,
    to_json,
    write_metadata,
)
from kneel.errors import ConfigError, KneelError, option
from kneel.geometry import Affine, resample_transform, resampled_size, roi_transform, warp
from kneel.io.atomic import atomic_write_bytes, atomic_write_text
from kneel.landmarks import CENTRE_LANDMARK, KneeSide

__all__ = ["PrepareSettings", "PrepareReport", "NothingPreparedError", "prepare_datasets", "prepare_subject"]


class NothingPreparedError(ConfigError):
    """A preparation that prepared no knee at all; the message says why and what to pass instead."""


@dataclass(frozen=True)
class PrepareSettings:
    """Geometry of the prepared images (reference values by default)."""

    lc_spacing: float = 1.0
    hc_spacing: float = 0.3
    roi_size_mm: float = 140.0
    antialias: bool = True

    @property
    def roi_size_px(self) -> int:
        """``int(140 / 0.3) = 466`` as the reference."""
        return int(self.roi_size_mm / self.hc_spacing)


@dataclass
class PrepareReport:
    """What ``kneel prepare`` did; also written to ``DATA/report.json``."""

    out: str
    annotation_format: str
    settings: dict[str, Any]
    subjects_prepared: int = 0
    knees_prepared: int = 0
    lc_images: int = 0
    hc_images: int = 0
    subjects_without_image: list[int] = field(default_factory=list)
    annotation_files_without_image: list[str] = field(default_factory=list)
    images_without_annotation: list[str] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    duplicate_series: dict[str, list[str]] = field(default_factory=dict)
    """Subjects with several matching series (OAI) or files (``--images``); the first in sorted order is used."""
    rois_past_border: list[str] = field(default_factory=list)
    lc_centre_in_other_half: list[str] = field(default_factory=list)
    folds: dict[str, int] = field(default_factory=dict)
    folds_error: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        """A few human-readable lines for the terminal."""
        lines = [
            f"prepared {self.knees_prepared} knees of {self.subjects_prepared} subjects into {self.out} "
            f"({self.lc_images} lc images, {self.hc_images} hc ROIs) in {self.seconds:.1f} s",
            _count_line("annotated subjects without an image", self.subjects_without_image),
            _count_line("annotation files without an image", self.annotation_files_without_image),
            _count_line("images without annotation", self.images_without_annotation),
            _count_line("unreadable images", [f"{u['path']} ({u['reason']})" for u in self.unreadable]),
            _count_line("subjects with several matching series (first used)", list(self.duplicate_series)),
            _count_line("ROIs reaching past the image border (zero-filled)", self.rois_past_border),
            _count_line(
                "knee centres in the other image half (the lc half image will not show them)",
                self.lc_centre_in_other_half,
            ),
        ]
        if self.folds:
            lines.append("folds (knees): " + ", ".join(f"{k}: {v}" for k, v in self.folds.items()))
        if self.folds_error:
            lines.append(f"no folds.csv written: {self.folds_error}")
        lines.append(f"details: {Path(self.out) / REPORT_FILE}")
        return "\n".join(line for line in lines if line)


def _count_line(label: str, items: list) -> str:
    if not items:
        return ""
    shown = ", ".join(str(i) for i in items[:5]) + (", ..." if len(items) > 5 else "")
    return f"{label}: {len(items)} ({shown})"


def prepare_datasets(
    annotations: str | Path,
    out: str | Path,
    *,
    oai: str | Path | None = None,
    images: str | Path | None = None,
    workers: int = 1,
    folds: int = 5,
    stratify_kl: bool = False,
    seed: int = 0,
    settings: PrepareSettings | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Prepare ``out/lc``, ``out/hc``, ``out/folds.csv`` and ``out/report.json`` (layout: :mod:`kneel.data.layout`).

    Args:
        annotations: ``bf_landmarks_1_0.3.csv`` or a landmark table ``file,side,landmark,x_px,y_px[,kl]`` in original
            pixels (detected from the header).
        out: the ``DATA`` folder (created).
        oai: OAI folder with ``contents.csv``; or
        images: a plain folder of radiographs named by subject id.
        workers: processes (1 = in this process).
        folds: number of cross-validation folds (0 = do not write ``folds.csv``).
        stratify_kl: balance KL grades across folds.
        seed: fold seed.
        settings: spacing and ROI size (reference values by default).
        progress: show a tqdm progress bar.

    Returns:
        The report (also printed by the CLI and written as JSON). Unreadable images are listed, never raised.

    Raises:
        NothingPreparedError: not a single knee was prepared (``report.json`` is written first): the reason, and the
            annotations to pass when the cohort folder holds its own (a synthetic cohort's ``ground_truth.csv``).
    """
    start = time.perf_counter()
    settings = settings or PrepareSettings()
    out = Path(out)
    cohort: Cohort = load_cohort(annotations, oai=oai, images=images)
    for stage in ("lc", "hc"):
        (out / stage / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    report = PrepareReport(
        out=str(out),
        annotation_format=cohort.annotation_format,
        settings={
            **asdict(settings),
            "roi_size_px": settings.roi_size_px,
            "annotations": str(annotations),
            "oai": None if oai is None else str(oai),
            "images": None if images is None else str(images),
            "folds": folds,
            "stratify_kl": stratify_kl,
            "seed": seed,
        },
        subjects_without_image=list(cohort.subjects_without_image),
        annotation_files_without_image=list(cohort.annotation_files_without_image),
        images_without_annotation=list(cohort.images_without_annotation),
        duplicate_series={str(k): v for k, v in cohort.duplicate_series.items()},
    )
    lc_rows: list[dict] = []
    hc_rows: list[dict] = []
    for result in _run_jobs(cohort.jobs, out, settings, workers, progress):
        if "error" in result:
            report.unreadable.append({"subject_id": str(result["subject_id"]), **result["error"]})
            continue
        lc_rows.extend(result["lc"])
        hc_rows.extend(result["hc"])
        report.rois_past_border.extend(result["past_border"])
        report.lc_centre_in_other_half.extend(result["wrong_half"])
    report.unreadable.sort(key=lambda u: u["path"])
    report.rois_past_border.sort()
    report.lc_centre_in_other_half.sort()
    write_metadata(pd.DataFrame(lc_rows, columns=list(METADATA_COLUMNS)), out / "lc" / METADATA_FILE)
    write_metadata(pd.DataFrame(hc_rows, columns=list(METADATA_COLUMNS)), out / "hc" / METADATA_FILE)
    report.knees_prepared = len(hc_rows)
    report.subjects_prepared = len({r["subject_id"] for r in hc_rows})
    report.lc_images = len({r["image"] for r in lc_rows})
    report.hc_images = len(hc_rows)
    if folds and hc_rows:
        knees = pd.DataFrame(hc_rows)
        try:
            table = make_folds(knees["subject_id"], knees["kl"], n_folds=folds, seed=seed, stratify=stratify_kl)
        except FoldError as exc:  # e.g. fewer subjects than folds: keep the prepared data, say why there are no folds
            report.folds_error = exc.reason
        else:
            write_folds(table, out / FOLDS_FILE)
            fold_of = dict(zip(table["subject_id"], table["fold"], strict=True))
            counts = knees["subject_id"].map(fold_of).value_counts().sort_index()
            report.folds = {str(k): int(v) for k, v in counts.items()}
    report.seconds = round(time.perf_counter() - start, 3)
    atomic_write_text(out / REPORT_FILE, json.dumps(asdict(report), indent=2) + "\n")
    if report.knees_prepared == 0:
        raise NothingPreparedError(_why_nothing(report, annotations, oai if oai is not None else images), out)
    return report


def _why_nothing(report: PrepareReport, annotations: str | Path, cohort_dir: str | Path | None) -> str:
    """Why a preparation yielded no knee, and what to do about it (one line)."""
    subjects, images = len(report.subjects_without_image), len(report.images_without_annotation)
    if report.unreadable:
        first = report.unreadable[0]
        n = len(report.unreadable)
        why = f"every matched image was unreadable ({n}; first: {first['path']}: {first['reason']})"
    elif images:
        why = f"none of the {images} images found has an annotation ({subjects} annotated subjects have no image)"
    else:
        why = f"no image found for the {subjects} annotated subjects"
    hint = ""
    own = [Path(cohort_dir) / name for name in ("ground_truth.csv", "annotations.csv")] if cohort_dir else []
    own = [p for p in own if p.is_file() and p.resolve() != Path(annotations).resolve()]
    if images and own:
        hint = f"; the cohort has its own annotations: pass {option('annotations', str(own[0]))}"
    elif images:
        hint = f"; pass the cohort's own annotations with {option('annotations', 'CSV')}"
    return f"prepared no knee: {why}{hint} (details: {Path(report.out) / REPORT_FILE})"


def _run_jobs(jobs: list[SubjectJob], out: Path, settings: PrepareSettings, workers: int, progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="prepare", unit="image", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield _safe_prepare(job, out, settings)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_safe_prepare, job, out, settings) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
                bar.update()
    finally:
        bar.close()


def _safe_prepare(job: SubjectJob, out: Path, settings: PrepareSettings) -> dict[str, Any]:
    """Run :func:`prepare_subject`; turn any error into a report entry (a batch never dies on one file)."""
    try:
        return prepare_subject(job, out, settings)
    except KneelError as exc:
        reason = exc.reason
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch; the reason is reported
        reason = f"{type(exc).__name__}: {exc}"
    return {"subject_id": job.subject_id, "error": {"path": str(job.source), "reason": reason}}


def prepare_subject(job: SubjectJob, out: Path, settings: PrepareSettings) -> dict[str, Any]:
    """Read one radiograph, write its low-cost image and one high-cost ROI per knee; return the metadata rows."""
    from kneel.io import normalize_intensity, read_radiograph

    radiograph = read_radiograph(job.source)
    spacing = (float(radiograph.spacing[0]), float(radiograph.spacing[1]))
    image = normalize_intensity(radiograph.image).astype(np.float32)
    rows, cols = image.shape
    common = {
        "subject_id": int(job.subject_id),
        "source": str(job.source),
        "source_spacing_row_mm": spacing[0],
        "source_spacing_col_mm": spacing[1],
    }

    # Low cost: the whole radiograph at 1 mm/px (pixel edges preserved), one image per subject.
    to_lc = resample_transform(spacing, settings.lc_spacing)
    lc_h, lc_w = resampled_size((rows, cols), spacing, settings.lc_spacing)
    lc_rel = f"{IMAGES_DIR}/{job.subject_id}.png"
    _write_png(out / "lc" / lc_rel, warp(image, to_lc, (lc_h, lc_w), antialias=settings.antialias))

    size = settings.roi_size_px
    lc_rows, hc_rows, past_border, wrong_half = [], [], [], []
    for knee in job.knees:
        xy = knee_landmarks_original(knee, spacing)
        centre = xy[CENTRE_LANDMARK]
        lc_xy = to_lc.apply(xy)
        if (lc_xy[CENTRE_LANDMARK, 0] < lc_w // 2) != (knee.side == "R"):
            wrong_half.append(f"{job.subject_id}_{knee.side}")
        lc_rows.append(_knee_row(common, knee, lc_rel, (lc_w, lc_h), settings.lc_spacing, to_lc, xy))
        # High cost: 140 mm ROI at 0.3 mm/px centred on T4 (ROI pixel 233), left knees mirrored.
        # T4 lands on ROI pixel (233, 233); a left knee is then mirrored like cv2.flip (x -> 465 - x, so its T4 is
        # at x = 232): the same transform inference uses, and one mirror convention everywhere (reference bug §8.4).
        mirrored = KneeSide.parse(knee.side).mirrored
        to_roi = roi_transform(centre, spacing, size, settings.hc_spacing, mirror=mirrored)
        roi = warp(image, to_roi, (size, size), antialias=settings.antialias)
        hc_rel = f"{IMAGES_DIR}/{job.subject_id}_{knee.side}.png"
        _write_png(out / "hc" / hc_rel, roi)
        if _past_border(to_roi, size, rows, cols):
            past_border.append(f"{job.subject_id}_{knee.side}")
        hc_rows.append(_knee_row(common, knee, hc_rel, (size, size), settings.hc_spacing, to_roi, xy))
    return {
        "subject_id": job.subject_id,
        "lc": lc_rows,
        "hc": hc_rows,
        "past_border": past_border,
        "wrong_half": wrong_half,
    }


def _knee_row(
    common: dict[str, Any],
    knee: KneeTarget,
    image: str,
    size_wh: tuple[int, int],
    spacing_mm: float,
    transform: Affine,
    xy: np.ndarray,
) -> dict[str, Any]:
    """One metadata row of a prepared image (low- or high-cost): the landmarks ``xy`` (original pixels) mapped by
    ``transform`` into that image, the centre landmark, and the transform itself."""
    frame_xy = transform.apply(xy)
    return {
        **common,
        "side": knee.side,
        "kl": knee.kl,
        "image": image,
        "width": size_wh[0],
        "height": size_wh[1],
        "spacing_mm": spacing_mm,
        "centre_x": float(frame_xy[CENTRE_LANDMARK, 0]),
        "centre_y": float(frame_xy[CENTRE_LANDMARK, 1]),
        "landmarks": to_json(frame_xy),
        "landmarks_original": to_json(xy),
        "transform": to_json(transform),
    }


def knee_landmarks_original(knee: KneeTarget, spacing: tuple[float, float]) -> np.ndarray:
    """The knee's 16 landmarks in original image pixels ``(x, y)``.

    bf-CSV records are converted with the image's real spacing ``(row_mm, col_mm)``: ROI -> padded 0.3 mm frame ->
    original pixels, using the reference's relations from :mod:`kneel.io.annotations`.
    """
    if knee.landmarks_original is not None:
        return np.asarray(knee.landmarks_original, dtype=np.float64).reshape(-1, 2)
    from kneel.io import annotations as ann

    padded = np.asarray(ann.roi_to_padded(knee.bf_record), dtype=np.float64)
    return np.asarray(ann.padded_to_original(padded, spacing), dtype=np.float64)


def _past_border(to_roi: Affine, size: int, rows: int, cols: int) -> bool:
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    src = to_roi.inverse().apply(corners)
    return bool(
        src[:, 0].min() < -0.5 or src[:, 1].min() < -0.5 or src[:, 0].max() > cols - 0.5 or src[:, 1].max() > rows - 0.5
    )


def _write_png(path: Path, image: np.ndarray) -> None:
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise KneelError("cannot encode PNG", path)
    atomic_write_bytes(path, buffer.tobytes())
