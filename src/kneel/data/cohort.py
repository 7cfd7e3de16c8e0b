"""Find the images and the annotations of a cohort and pair them per subject, for ``kneel prepare``.

Images come from an OAI-style folder (``contents.csv`` rows with ``SeriesDescription == 'Bilateral PA Fixed Flexion
Knee'``, DICOM at ``<oai>/<Folder>/001``) or a plain folder of files named by subject id (``9000099.dcm``,
``9000099``, ``9000099.png``...). Annotations are the reference's ``bf_landmarks_1_0.3.csv`` (ROI frame; converted to
original pixels once the image spacing is known) or a ground-truth landmark table ``file,side,landmark,x_px,y_px,kl``
(original pixels, e.g. the synthetic generator's exact ``ground_truth.csv``); the format is detected from the header.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError, option
from kneel.landmarks import NUM_LANDMARKS, KneeSide

__all__ = [
    "CohortError",
    "KneeTarget",
    "SubjectJob",
    "Cohort",
    "OAI_SERIES",
    "detect_annotation_format",
    "load_cohort",
]

OAI_SERIES = "Bilateral PA Fixed Flexion Knee"


class CohortError(KneelError):
    """The image folder, ``contents.csv`` or the annotation file cannot be used."""


@dataclass
class KneeTarget:
    """One annotated knee: landmarks either already in original pixels or as a bf-CSV record (ROI frame)."""

    side: str
    kl: int
    landmarks_original: np.ndarray | None = None
    bf_record: object | None = None  # kneel.io.annotations.KneeAnnotation


@dataclass
class SubjectJob:
    """One radiograph to prepare and the annotated knees on it."""

    subject_id: int
    source: Path
    knees: list[KneeTarget] = field(default_factory=list)


@dataclass
class Cohort:
    """Jobs plus what could not be paired (reported by ``kneel prepare``)."""

    jobs: list[SubjectJob]
    annotation_format: str
    subjects_without_image: list[int]
    images_without_annotation: list[str]
    duplicate_series: dict[int, list[str]]
    annotation_files_without_image: list[str] = field(default_factory=list)


def detect_annotation_format(path: str | Path) -> str:
    """'bf' for ``subject_id,side,kl,tibia,femur,bbox,center``; 'table' for ``file,side,landmark,x_px,y_px,...``."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    except OSError as exc:
        raise CohortError(f"cannot read annotations: {exc}", path) from exc
    cols = {c.strip() for c in header}
    if {"subject_id", "side", "tibia", "femur", "bbox"} <= cols:
        return "bf"
    if {"file", "side", "landmark", "x_px", "y_px"} <= cols:
        return "table"
    raise CohortError(
        f"unknown annotation format (header {header[:8]}); expected bf_landmarks "
        "(subject_id,side,kl,tibia,femur,bbox,center) or a landmark table (file,side,landmark,x_px,y_px[,kl])",
        path,
    )


def load_cohort(annotations: str | Path, oai: str | Path | None = None, images: str | Path | None = None) -> Cohort:
    """Pair annotations with images. Exactly one of ``oai`` and ``images`` must be given."""
    if (oai is None) == (images is None):
        raise CohortError(f"give exactly one of {option('oai', 'DIR')} and {option('images', 'DIR')}")
    annotations = Path(annotations)
    fmt = detect_annotation_format(annotations)
    if oai is not None:
        by_subject, names, duplicates = _oai_images(Path(oai))
    else:
        by_subject, names, duplicates = _folder_images(Path(images))
    unmatched: list[str] = []
    if fmt == "bf":
        knees = _bf_knees(annotations)
    else:
        knees, unmatched = _table_knees(annotations, by_subject, names, Path(oai or images))
    jobs, missing = [], []
    for sid in sorted(knees):
        if sid not in by_subject:
            missing.append(sid)
            continue
        order = {"R": 0, "L": 1}
        jobs.append(SubjectJob(sid, by_subject[sid], sorted(knees[sid], key=lambda k: order[k.side])))
    for name in unmatched:  # a table row whose file is missing: name the subject when the file is named by id
        stem = Path(name).name.split(".")[0]
        if stem.isdigit() and int(stem) not in by_subject:
            missing.append(int(stem))
    missing = sorted(set(missing))
    unannotated = sorted(str(p) for sid, p in by_subject.items() if sid not in knees)
    return Cohort(jobs, fmt, missing, unannotated, duplicates, unmatched)


# ------------------------------------------------------------------ images
def _oai_images(root: Path) -> tuple[dict[int, Path], dict[str, int], dict[int, list[str]]]:
    contents = root / "contents.csv"
    if not contents.is_file():
        raise CohortError("no contents.csv in the OAI folder", root)
    try:
        table = pd.read_csv(contents, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CohortError(f"cannot read contents.csv: {exc}", contents) from exc
    need = {"ParticipantID", "SeriesDescription", "Folder"}
    if not need <= set(table.columns):
        raise CohortError(f"contents.csv lacks column(s) {sorted(need - set(table.columns))}", contents)
    table = table[table["SeriesDescription"].str.strip() == OAI_SERIES]
    by_subject: dict[int, Path] = {}
    folders: dict[int, list[str]] = defaultdict(list)
    names: dict[str, int] = {}
    for pid, folder in sorted(zip(table["ParticipantID"], table["Folder"], strict=True), key=lambda t: t[1]):
        try:
            sid = int(str(pid).strip())
        except ValueError:
            continue
        folders[sid].append(folder)
        path = root / folder.strip().strip("/") / "001"
        names[_norm(f"{folder.strip().strip('/')}/001")] = sid
        names[_norm(str(path))] = sid
        by_subject.setdefault(sid, path)
    duplicates = {sid: fs for sid, fs in folders.items() if len(fs) > 1}
    return by_subject, names, duplicates


def _folder_images(root: Path) -> tuple[dict[int, Path], dict[str, int], dict[int, list[str]]]:
    if not root.is_dir():
        raise CohortError("image folder does not exist", root)
    by_subject: dict[int, Path] = {}
    names: dict[str, int] = {}
    files: dict[int, list[str]] = defaultdict(list)
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        stem = path.name.split(".")[0]
        if not stem.isdigit():
            continue
        sid = int(stem)
        by_subject.setdefault(sid, path)
        files[sid].append(path.name)
        names[_norm(path.name)] = sid
        names[_norm(str(path))] = sid
    return by_subject, names, {sid: fs for sid, fs in files.items() if len(fs) > 1}


def _norm(text: str) -> str:
    return str(text).replace("\\", "/").strip()


# ------------------------------------------------------------------ annotations
def _bf_knees(path: Path) -> dict[int, list[KneeTarget]]:
    from kneel.io.annotations import read_bf_landmarks

    knees: dict[int, list[KneeTarget]] = defaultdict(list)
    for rec in read_bf_landmarks(path):
        side = KneeSide.parse(rec.side).value
        knees[int(rec.subject_id)].append(KneeTarget(side, int(rec.kl), bf_record=rec))
    return dict(knees)


def _table_knees(
    path: Path, by_subject: dict[int, Path], names: dict[str, int], image_root: Path
) -> tuple[dict[int, list[KneeTarget]], list[str]]:
    """Landmark table (original pixels): ``file`` is matched to an image by relative path, name or numeric stem."""
    try:
        table = pd.read_csv(path, dtype={"file": str, "side": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CohortError(f"cannot read landmark table: {exc}", path) from exc
    knees: dict[int, list[KneeTarget]] = defaultdict(list)
    unmatched: list[str] = []
    for (file, side), group in table.groupby(["file", "side"], sort=True):
        sid = _match_file(str(file), names, image_root)
        if sid is None:
            unmatched.append(str(file))
            continue
        group = group.sort_values("landmark")
        idx = group["landmark"].astype(int).to_numpy()
        if sorted(idx.tolist()) != list(range(NUM_LANDMARKS)):
            raise CohortError(f"{file} {side}: needs landmarks 0-15 exactly once, got {idx.tolist()}", path)
        xy = group[["x_px", "y_px"]].to_numpy(dtype=np.float64)
        kl = int(group["kl"].iloc[0]) if "kl" in group.columns and pd.notna(group["kl"].iloc[0]) else -1
        knees[sid].append(KneeTarget(KneeSide.parse(side).value, kl, landmarks_original=xy))
    return dict(knees), unmatched


def _match_file(file: str, names: dict[str, int], image_root: Path) -> int | None:
    key = _norm(file)
    for candidate in (key, _norm(str(image_root / key)), _norm(Path(key).name)):
        if candidate in names:
            return names[candidate]
    stem = Path(key).name.split(".")[0]
    if stem.isdigit() and _norm(Path(key).name) not in names:
        for name, sid in names.items():
            if sid == int(stem) and "/" not in name:
                return sid
    return None
