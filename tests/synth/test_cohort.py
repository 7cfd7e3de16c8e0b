"""The cohort writer: determinism, re-reading the DICOM files, tables, OAI layout, splits, compression."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kneel.io import read_radiograph
from kneel.io.landmark_table import read_landmark_table
from kneel.landmarks import NUM_LANDMARKS
from kneel.synth import generate_cohort, is_held_out, source_pool
from kneel.synth.cohort import SERIES, SynthError, subject_id_for


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path, oai_cohort) -> None:
    again = generate_cohort(tmp_path / "again", 3, seed=5, layout="oai", workers=2, progress=False)
    assert _digests(again.out) == _digests(oai_cohort.out)
    other = generate_cohort(tmp_path / "other", 1, seed=6, layout="oai", workers=1, progress=False)
    first = sorted(_digests(oai_cohort.out).items())
    assert _digests(other.out)[other.files[0]] not in {d for _, d in first}


def test_film_i_does_not_depend_on_n(tmp_path: Path, flat_cohort) -> None:
    prefix = generate_cohort(
        tmp_path / "prefix", 2, seed=1, layout="flat", single_knee_fraction=0.25, workers=1, progress=False
    )
    for rel in prefix.files:
        assert (prefix.out / rel).read_bytes() == (flat_cohort.out / rel).read_bytes()


def test_rereading_gives_spacing_size_and_metadata(flat_cohort) -> None:
    films = pd.read_csv(flat_cohort.out / "films.csv")
    assert len(films) == 4
    for film in films.itertuples():
        rg = read_radiograph(flat_cohort.out / film.file)
        assert rg.spacing == pytest.approx((film.spacing_row_mm, film.spacing_col_mm), abs=1e-12)
        assert rg.spacing_source == film.spacing_tags.split("+")[0]
        assert rg.image.shape == (film.rows, film.columns)
        assert rg.meta.photometric_interpretation == film.photometric
        assert rg.meta.bits_stored == film.bits_stored
        assert rg.meta.modality == film.modality
        assert rg.meta.patient_id == str(film.subject_id)
        assert min(rg.spacing) >= 0.099 and max(rg.spacing) <= 0.21
        # Bone bright after reading: the knee centres are brighter than the film corners (air or collimation aside).
        width_mm = film.columns * film.spacing_col_mm
        assert 380 <= width_mm <= 440


def test_ground_truth_table(flat_cohort) -> None:
    gt = read_landmark_table(flat_cohort.out / "ground_truth.csv")  # the project's reader validates it
    assert list(gt.columns[:6]) == ["file", "side", "landmark", "x_px", "y_px", "kl"]
    films = pd.read_csv(flat_cohort.out / "films.csv")
    assert set(gt["file"]) == set(films["file"])
    per_knee = gt.groupby(["file", "side"])["landmark"].apply(list)
    assert all(v == list(range(NUM_LANDMARKS)) for v in per_knee)
    assert len(per_knee) == flat_cohort.n_knees
    assert films["sides"].str.len().min() == 1  # the single-knee film
    for (file, side), knee in gt.groupby(["file", "side"]):
        film = films.set_index("file").loc[file]
        x = knee["x_px"].to_numpy()
        centre_mm = x[4] * film.spacing_col_mm
        width_mm = film.columns * film.spacing_col_mm
        # Right knee on the image left, left knee on the image right; lateral side outwards (T0 outside T8).
        assert (centre_mm < width_mm / 2) == (side == "R")
        assert (x[0] < x[8]) == (side == "R")
        assert (x[9] < x[15]) == (side == "R")


def test_annotations_match_ground_truth_exactly(flat_cohort) -> None:
    """annotations.csv holds the same points: the reference relations map one onto the other without rounding."""
    gt = pd.read_csv(flat_cohort.out / "ground_truth.csv")
    ann = pd.read_csv(flat_cohort.out / "annotations.csv")
    films = pd.read_csv(flat_cohort.out / "films.csv").set_index("subject_id")
    assert list(ann.columns) == ["subject_id", "side", "kl", "tibia", "femur", "bbox", "center"]
    assert len(ann) == flat_cohort.n_knees
    for row in ann.itertuples():
        film = films.loc[row.subject_id]
        roi = np.array([int(v) for v in f"{row.tibia},{row.femur}".split(",")], float).reshape(16, 2)
        x0, y0, x1, y1 = (int(v) for v in row.bbox.split(","))
        cx, cy = (int(v) for v in row.center.split(","))
        assert (x1 - x0, y1 - y0) == (466, 466) and (cx - x0, cy - y0) == (233, 233)
        # Reference relations: un-mirror L as 466 - x, add the bbox corner, then x_orig = (x_pad - 100) * 0.3 / s.
        if row.side == "L":
            roi[:, 0] = 466 - roi[:, 0]
        padded = roi + [x0, y0]
        orig = (padded - 100) * 0.3 / [film.spacing_col_mm, film.spacing_row_mm]
        knee = gt[(gt.file == film.file) & (gt.side == row.side)].sort_values("landmark")
        assert np.abs(knee[["x_px", "y_px"]].to_numpy() - orig).max() < 1e-9
        assert (knee["kl"] == row.kl).all()
        # And back: the ground truth lands on the integer padded grid.
        back = knee[["x_px", "y_px"]].to_numpy() * [film.spacing_col_mm, film.spacing_row_mm] / 0.3 + 100
        assert np.abs(back - padded).max() < 1e-9
        # As in the published file: x increases along each bone in the (mirrored) ROI, T4 at the ROI centre.
        assert np.all(np.diff(roi_x := np.where(row.side == "L", 466 - roi[:, 0], roi[:, 0])[:9]) > 0), roi_x
        assert tuple(np.where(row.side == "L", 466 - roi[4, 0], roi[4, 0]).ravel()) == (233,)


def test_annotations_round_trip_through_kneel_io(flat_cohort) -> None:
    """The project's own annotation reader and frame conversions agree with the ground truth."""
    annotations = pytest.importorskip("kneel.io.annotations")
    gt = pd.read_csv(flat_cohort.out / "ground_truth.csv")
    films = pd.read_csv(flat_cohort.out / "films.csv").set_index("subject_id")
    records = annotations.read_bf_landmarks(flat_cohort.out / "annotations.csv")
    assert len(records) == flat_cohort.n_knees
    for rec in records:
        film = films.loc[rec.subject_id]
        side = rec.side.value if hasattr(rec.side, "value") else str(rec.side)
        knee = gt[(gt.file == film.file) & (gt.side == side)].sort_values("landmark")
        xy = knee[["x_px", "y_px"]].to_numpy()
        spacing = (film.spacing_row_mm, film.spacing_col_mm)
        padded = annotations.roi_to_padded(rec)
        assert np.abs(annotations.padded_to_original(padded, spacing) - xy).max() < 1e-9
        assert np.abs(annotations.original_to_padded(xy, spacing) - padded).max() < 1e-9


def test_oai_layout(oai_cohort) -> None:
    root = oai_cohort.out
    contents = pd.read_csv(root / "contents.csv")
    assert {"ParticipantID", "Folder", "SeriesDescription"} <= set(contents.columns)
    knees = contents[contents.SeriesDescription == SERIES]
    assert len(knees) == 3 and knees.ParticipantID.is_unique
    assert (contents.SeriesDescription != SERIES).any()  # other series, to be ignored
    for row in knees.itertuples():
        assert (root / row.Folder / "001").is_file()
        assert str(row.ParticipantID) in row.Folder
        assert len(str(row.ParticipantID)) == 7 and str(row.ParticipantID).startswith("9")
    # The reference's preparation: inner merge of contents (bilateral series) with annotations on subject id.
    ann = pd.read_csv(root / "annotations.csv")
    merged = knees.rename(columns={"ParticipantID": "subject_id"}).merge(ann, on="subject_id")
    assert len(merged) == oai_cohort.n_knees
    gt = pd.read_csv(root / "ground_truth.csv")
    assert set(gt.file) == {f"{f}/001" for f in knees.Folder}


def test_subject_split_is_disjoint(tmp_path: Path) -> None:
    train, test = source_pool("train"), source_pool("test")
    train_ids, test_ids = {k.subject_id for k in train}, {k.subject_id for k in test}
    assert not train_ids & test_ids
    assert len(train) + len(test) == len(source_pool("all")) == 748
    assert 0.15 < len(test_ids) / len(train_ids | test_ids) < 0.25
    assert {k.kl for k in test} == {0, 1, 2, 3, 4}
    for split, held_out in (("test", True), ("train", False)):
        cohort = generate_cohort(tmp_path / split, 2, seed=1, layout="flat", split=split, workers=1, progress=False)
        films = pd.read_csv(cohort.out / "films.csv")
        sources = [int(s.split(":")[1]) for v in films.source_subjects for s in v.split(";")]
        assert all(is_held_out(s) == held_out for s in sources)
    # Synthetic subject ids of different splits never collide, and are unique within a cohort.
    ids = {split: {subject_id_for(0, i, split) for i in range(500)} for split in ("train", "test", "all")}
    assert all(len(v) == 500 for v in ids.values())
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["all"]) and not (ids["test"] & ids["all"])


def test_compressed_cohort_is_readable(tmp_path: Path) -> None:
    cohort = generate_cohort(tmp_path / "rle", 1, seed=2, layout="flat", compression="rle", workers=1, progress=False)
    rg = read_radiograph(cohort.out / cohort.files[0])
    assert "RLE" in rg.meta.transfer_syntax_name
    films = pd.read_csv(cohort.out / "films.csv")
    assert films.compression.tolist() == ["rle"]


@pytest.mark.parametrize(
    "kwargs",
    [{"n": -1}, {"layout": "bids"}, {"compression": "lzw"}, {"split": "val"}, {"single_knee_fraction": 1.5}],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = {"n": 1, **kwargs}
    with pytest.raises(SynthError):
        generate_cohort(tmp_path, workers=1, progress=False, **args)


def test_implanted_knee_is_rendered_without_ground_truth(tmp_path: Path) -> None:
    cohort = generate_cohort(
        tmp_path, 1, seed=0, layout="flat", single_knee_fraction=0.0, implant_fraction=1.0, workers=1, progress=False
    )
    films = pd.read_csv(cohort.out / "films.csv")
    implanted = films.implants[0]
    assert films.sides[0] == "RL" and implanted in ("R", "L")
    gt = pd.read_csv(cohort.out / "ground_truth.csv")
    assert set(gt.side) == {"RL".replace(implanted, "")} and cohort.n_knees == 1
    assert len(pd.read_csv(cohort.out / "annotations.csv")) == 1
    # The metal saturates, at the height of the joint line, in the implanted knee's half of the film.
    rg = read_radiograph(cohort.out / cohort.files[0])
    full = 2 ** int(films.bits_stored[0]) - 1
    y = int(gt[gt.landmark == 4].y_px.iloc[0])
    band = int(30 / films.spacing_row_mm[0])
    half = rg.image.shape[1] // 2
    rows = rg.image[y - band : y + band]
    implant_half, other_half = (
        (rows[:, :half], rows[:, half:]) if implanted == "R" else (rows[:, half:], rows[:, :half])
    )
    assert (implant_half >= full).sum() > 1000 and (other_half >= full).sum() == 0
