"""kneel prepare on real DICOM files written to tmp_path: exact geometry, layout, report, folds, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from landmark_dots import MEAN_ROI_LANDMARKS, find_dot

from kneel.cli import main as kneel_main
from kneel.data.cohort import CohortError, detect_annotation_format
from kneel.data.folds import read_folds
from kneel.data.layout import METADATA_COLUMNS, read_metadata, row_landmarks, row_transform
from kneel.data.prepare import prepare_datasets
from kneel.io.dicom_writer import write_dicom

ROWS, COLS = 400, 560
SIGMA = 1.5


def _knee_points(spacing, centre, mirror, rng):
    """16 landmarks in original pixels: the mean ROI shape (0.3 mm px) scaled to the image spacing about T4."""
    rel = (MEAN_ROI_LANDMARKS - MEAN_ROI_LANDMARKS[4]) + rng.uniform(-2, 2, (16, 2))
    rel[4] = 0.0
    if mirror:
        rel[:, 0] = -rel[:, 0]
    return np.column_stack([centre[0] + rel[:, 0] * 0.3 / spacing[1], centre[1] + rel[:, 1] * 0.3 / spacing[0]])


def _radiograph(points, rows=ROWS, cols=COLS):
    """uint16 image: background ramp, a bright band (sets the 99th percentile), a Gaussian dot at every landmark."""
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float64)
    img = 1000.0 + 200.0 * xs / cols
    img[:40] = 4000.0
    for x, y in points:
        img += 2000.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * SIGMA**2))
    return np.clip(img, 0, 4095).astype(np.uint16)


def _cohort(root, spacings, rng):
    """Write DICOMs named by subject id and return the ground-truth landmark table (original pixels)."""
    rows = []
    for sid, spacing in spacings.items():
        knees = {
            "R": _knee_points(spacing, (COLS * 0.27 + rng.uniform(-4, 4), ROWS * 0.55), False, rng),
            "L": _knee_points(spacing, (COLS * 0.73 + rng.uniform(-4, 4), ROWS * 0.52), True, rng),
        }
        write_dicom(root / f"{sid}.dcm", _radiograph(np.vstack(list(knees.values()))), spacing=spacing)
        for side, pts in knees.items():
            for i, (x, y) in enumerate(pts):
                rows.append({"file": f"{sid}.dcm", "side": side, "landmark": i, "x_px": x, "y_px": y, "kl": sid % 5})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    spacings = {11: (0.5, 0.5), 12: (0.45, 0.5), 13: (0.4, 0.4), 14: (0.5, 0.5), 15: (0.5, 0.45)}
    table = _cohort(images, spacings, rng)
    (images / "16.dcm").write_bytes(b"not a dicom at all")  # unreadable
    write_dicom(images / "18.dcm", _radiograph([]), spacing=(0.5, 0.5))
    (images / "18.dcm").write_bytes((images / "18.dcm").read_bytes()[:5000])  # truncated
    table = pd.concat(
        [
            table,
            table[table["file"] == "11.dcm"].assign(file="16.dcm"),
            table[table["file"] == "11.dcm"].assign(file="18.dcm"),
            table[table["file"] == "11.dcm"].assign(file="99.dcm"),
        ],
        ignore_index=True,
    )  # 16, 18: unreadable images, 99: no image
    write_dicom(images / "17.dcm", _radiograph([]), spacing=(0.5, 0.5))  # image without annotation
    table.to_csv(tmp / "ground_truth.csv", index=False, float_format="%.17g")
    out = tmp / "DATA"
    report = prepare_datasets(tmp / "ground_truth.csv", out, images=images, workers=2, folds=2, seed=1, progress=False)
    return out, table, report


def test_report_lists_missing_unreadable_and_unannotated(prepared):
    out, _, report = prepared
    assert report.annotation_format == "table"
    assert report.knees_prepared == 10 and report.subjects_prepared == 5 and report.lc_images == 5
    assert report.subjects_without_image == [99]
    assert [u["subject_id"] for u in report.unreadable] == ["16", "18"] and "16.dcm" in report.unreadable[0]["path"]
    assert all(u["reason"] for u in report.unreadable)
    assert len(report.images_without_annotation) == 1 and report.images_without_annotation[0].endswith("17.dcm")
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["subjects_without_image"] == [99] and on_disk["knees_prepared"] == 10
    text = report.summary()
    assert "unreadable images: 2" in text and "without an image: 1" in text


def test_layout_and_metadata_columns(prepared):
    out, _, _ = prepared
    for stage in ("lc", "hc"):
        meta = read_metadata(out, stage)
        assert tuple(meta.columns) == METADATA_COLUMNS
        assert len(meta) == 10
        for _, row in meta.iterrows():
            assert (out / stage / row["image"]).is_file()
    hc = read_metadata(out, "hc")
    assert sorted(p.name for p in (out / "hc" / "images").iterdir())[:2] == ["11_L.png", "11_R.png"]
    assert list(hc["side"][:2]) == ["R", "L"]  # sorted by subject, R first
    assert (hc["width"] == 466).all() and (hc["spacing_mm"] == 0.3).all()
    assert cv2.imread(str(out / "hc" / hc["image"][0]), cv2.IMREAD_UNCHANGED).shape == (466, 466)


def test_landmarks_are_exact_through_the_stored_transform(prepared):
    out, table, _ = prepared
    for stage in ("lc", "hc"):
        for _, row in read_metadata(out, stage).iterrows():
            truth = table[(table["file"] == f"{row['subject_id']}.dcm") & (table["side"] == row["side"])]
            truth = truth.sort_values("landmark")[["x_px", "y_px"]].to_numpy()
            np.testing.assert_array_equal(row_landmarks(row, "landmarks_original"), truth)  # no rounding anywhere
            np.testing.assert_allclose(row_transform(row).apply(truth), row_landmarks(row), atol=1e-9)
            assert (row["centre_x"], row["centre_y"]) == tuple(row_landmarks(row)[4])


def test_hc_roi_is_centred_on_t4_mirrored_for_left_and_dots_match(prepared):
    out, _, _ = prepared
    for _, row in read_metadata(out, "hc").iterrows():
        pts = row_landmarks(row)
        # T4 on ROI pixel 233; left knees mirrored like cv2.flip (x -> 465 - x) put it on 232
        np.testing.assert_allclose(pts[4], [233.0 if row["side"] == "R" else 232.0, 233.0], atol=1e-9)
        # lateral (index 0) on the image left in every ROI: left knees are mirrored
        assert pts[0, 0] < pts[4, 0] < pts[8, 0]
        img = cv2.imread(str(out / "hc" / row["image"]), cv2.IMREAD_GRAYSCALE)
        for p in pts:
            np.testing.assert_allclose(find_dot(img, near=p, radius=4), p, atol=0.1)


def test_lc_is_one_mm_and_centre_dot_matches(prepared):
    out, _, _ = prepared
    meta = read_metadata(out, "lc")
    for _, row in meta.iterrows():
        assert row["spacing_mm"] == 1.0
        assert row["width"] == round(COLS * row["source_spacing_col_mm"])
        assert row["height"] == round(ROWS * row["source_spacing_row_mm"])
        img = cv2.imread(str(out / "lc" / row["image"]), cv2.IMREAD_GRAYSCALE)
        assert img.shape == (row["height"], row["width"])
        centre = np.array([row["centre_x"], row["centre_y"]])
        np.testing.assert_allclose(find_dot(img, near=centre, radius=2), centre, atol=0.15)
        assert (centre[0] < row["width"] / 2) == (row["side"] == "R")  # right knee on the image left


def test_folds_group_subjects(prepared):
    out, _, report = prepared
    folds = read_folds(out / "folds.csv")
    assert sorted(folds["subject_id"]) == [11, 12, 13, 14, 15]
    assert set(folds["fold"]) == {0, 1}
    assert sum(report.folds.values()) == 10


def test_oai_layout_with_contents_csv_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(1)
    table = _cohort(tmp_path, {21: (0.5, 0.5), 22: (0.5, 0.5)}, rng)
    oai = tmp_path / "oai"
    contents = []
    for sid in (21, 22):
        folder = f"1.C.2/{sid}/20050101/0000{sid}"
        (oai / folder).mkdir(parents=True)
        (tmp_path / f"{sid}.dcm").rename(oai / folder / "001")
        contents.append(
            {"Folder": folder, "ParticipantID": sid, "SeriesDescription": "Bilateral PA Fixed Flexion Knee"}
        )
        table.loc[table["file"] == f"{sid}.dcm", "file"] = f"{folder}/001"
    contents.append({"Folder": "1.C.2/23/x", "ParticipantID": 23, "SeriesDescription": "PA Right Hand"})
    pd.DataFrame(contents).to_csv(oai / "contents.csv", index=False)
    table.to_csv(tmp_path / "gt.csv", index=False, float_format="%.17g")
    out = tmp_path / "DATA"
    code = kneel_main(
        [
            "prepare",
            "--oai",
            str(oai),
            "--annotations",
            str(tmp_path / "gt.csv"),
            "--out",
            str(out),
            "--folds",
            "2",
            "--stratify-kl",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "prepared 4 knees of 2 subjects" in printed
    assert len(read_metadata(out, "hc")) == 4 and (out / "folds.csv").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    (tmp_path / "imgs").mkdir()
    code = kneel_main(
        ["prepare", "--images", str(tmp_path / "imgs"), "--annotations", str(bad), "--out", str(tmp_path / "o")]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown annotation format" in err[0]
    with pytest.raises(CohortError):
        detect_annotation_format(tmp_path / "missing.csv")


def test_too_few_subjects_for_the_folds_keeps_the_data(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _cohort(images, {31: (0.5, 0.5), 32: (0.5, 0.5)}, np.random.default_rng(2)).to_csv(tmp_path / "gt.csv", index=False)
    report = prepare_datasets(tmp_path / "gt.csv", tmp_path / "DATA", images=images, folds=5, progress=False)
    assert report.knees_prepared == 4 and not (tmp_path / "DATA" / "folds.csv").exists()
    assert "2 subjects cannot fill 5 folds" in report.folds_error and "no folds.csv" in report.summary()


def test_published_bf_annotations_with_an_images_folder(tmp_path, capsys):
    """Shipped bf_landmarks CSV (default --annotations): ROI landmarks = CSV ROI landmarks re-centred on T4 exactly.

    (The CSV mirrors left knees as 466 - x, kneel as 465 - x: hence T4 at x = 232 for left knees.)
    """
    from kneel.io.annotations import read_bf_landmarks
    from kneel.resources import bf_landmarks_csv

    images = tmp_path / "images"
    images.mkdir()
    spacings = {9000798: (0.3, 0.3), 9012867: (0.28, 0.3)}
    rng = np.random.default_rng(3)
    for sid, (row_mm, col_mm) in spacings.items():
        pixels = rng.integers(500, 3000, (int(1000 * 0.3 / row_mm), int(1500 * 0.3 / col_mm))).astype(np.uint16)
        write_dicom(images / f"{sid}.dcm", pixels, spacing=(row_mm, col_mm))
    out = tmp_path / "DATA"
    assert kneel_main(["prepare", "--images", str(images), "--out", str(out), "--folds", "2", "--no-progress"]) == 0
    assert "annotated subjects without an image: 718" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["annotation_format"] == "bf" and report["knees_prepared"] == 4
    published = {(a.subject_id, a.side.value): a for a in read_bf_landmarks(bf_landmarks_csv())}
    for _, row in read_metadata(out, "hc").iterrows():
        roi = np.asarray(published[(row["subject_id"], row["side"])].landmarks_roi, dtype=np.float64)
        t4 = np.array([233.0 if row["side"] == "R" else 232.0, 233.0])
        np.testing.assert_allclose(row_landmarks(row), roi - roi[4] + t4, atol=1e-9)
    for _, row in read_metadata(out, "lc").iterrows():
        # low-cost centre: the reference's (center - 100) * 0.3 up to the T4-vs-center rounding and pixel edges
        ann = published[(row["subject_id"], row["side"])]
        spacing = np.array([row["source_spacing_col_mm"], row["source_spacing_row_mm"]])
        ref = (np.asarray(ann.centre, dtype=np.float64) - 100) * 0.3
        assert np.abs(np.array([row["centre_x"], row["centre_y"]]) - ref).max() <= 0.3 + 0.5 * spacing.max()
