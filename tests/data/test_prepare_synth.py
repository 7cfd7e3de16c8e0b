"""kneel prepare on the synthetic OAI-like cohort (kneel synth): both annotation formats, both layouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kneel.data.datasets import LandmarkDataset
from kneel.data.layout import read_metadata, row_landmarks, row_transform
from kneel.data.prepare import prepare_datasets
from kneel.synth import generate_cohort


@pytest.fixture(scope="module")
def synth_oai(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_oai")
    generate_cohort(root, 3, seed=5, layout="oai", single_knee_fraction=0.0, workers=1, progress=False)
    return root


def _truth(table: pd.DataFrame, file_of: dict[int, str], sid: int, side: str) -> np.ndarray:
    knee = table[(table["file"] == file_of[sid]) & (table["side"] == side)].sort_values("landmark")
    return knee[["x_px", "y_px"]].to_numpy()


def test_ground_truth_table_is_used_exactly(synth_oai, tmp_path):
    truth = pd.read_csv(synth_oai / "ground_truth.csv")
    films = pd.read_csv(synth_oai / "films.csv")
    file_of = dict(zip(films["subject_id"], films["file"], strict=True))
    report = prepare_datasets(synth_oai / "ground_truth.csv", tmp_path / "DATA", oai=synth_oai, folds=3, progress=False)
    assert report.knees_prepared == len(truth) // 16 == 6 and not report.unreadable
    assert not report.subjects_without_image and not report.images_without_annotation
    for _, row in read_metadata(tmp_path / "DATA", "hc").iterrows():
        xy = _truth(truth, file_of, row["subject_id"], row["side"])
        np.testing.assert_array_equal(row_landmarks(row, "landmarks_original"), xy)
        np.testing.assert_allclose(row_transform(row).apply(xy), row_landmarks(row), atol=1e-9)
        np.testing.assert_allclose(row_landmarks(row)[4], [233.0 if row["side"] == "R" else 232.0, 233.0], atol=1e-9)
    ds = LandmarkDataset(tmp_path / "DATA", "lc")
    item = ds[0]
    assert item["image"].shape == (3, 450, 450) and item["keypoints"].shape == (1, 2)


def test_bf_annotations_match_the_ground_truth_within_reference_rounding(synth_oai, tmp_path):
    pytest.importorskip("kneel.io.annotations")
    truth = pd.read_csv(synth_oai / "ground_truth.csv")
    films = pd.read_csv(synth_oai / "films.csv")
    file_of = dict(zip(films["subject_id"], films["file"], strict=True))
    report = prepare_datasets(synth_oai / "annotations.csv", tmp_path / "DATA", oai=synth_oai, folds=0, progress=False)
    assert report.annotation_format == "bf" and report.knees_prepared == 6
    for _, row in read_metadata(tmp_path / "DATA", "hc").iterrows():
        xy = _truth(truth, file_of, row["subject_id"], row["side"])
        spacing = np.array([row["source_spacing_col_mm"], row["source_spacing_row_mm"]])
        # the bf CSV holds integers in a 0.3 mm frame: up to ~1 px of 0.3 mm (ROI + bbox rounding) per axis
        err_mm = np.abs(row_landmarks(row, "landmarks_original") - xy) * spacing
        assert err_mm.max() <= 0.3 + 1e-6, err_mm.max()
        # rounding averages ~0.1 mm; a wrong mirror convention would shift every x of a left knee by 0.3 mm
        assert err_mm[:, 0].mean() <= 0.15, (row["side"], err_mm[:, 0].mean())
    assert not (tmp_path / "DATA" / "folds.csv").exists()


def test_flat_layout_with_images_folder(tmp_path):
    root = tmp_path / "flat"
    generate_cohort(root, 2, seed=6, layout="flat", single_knee_fraction=0.0, workers=1, progress=False)
    report = prepare_datasets(root / "ground_truth.csv", tmp_path / "DATA", images=root, folds=2, progress=False)
    assert report.knees_prepared == 4 and report.subjects_prepared == 2
    assert len(LandmarkDataset(tmp_path / "DATA", "hc")) == 4


def test_a_preparation_that_matches_nothing_fails_with_the_reason_and_the_hint(synth_oai, tmp_path, capsys):
    from kneel.cli import main
    from kneel.data.prepare import NothingPreparedError
    from kneel.resources import bf_landmarks_csv

    # the shipped annotations are real OAI subjects: none of them is in a synthetic cohort
    with pytest.raises(NothingPreparedError) as error:
        prepare_datasets(bf_landmarks_csv(), tmp_path / "DATA", oai=synth_oai, folds=0, progress=False)
    assert "none of the 3 images found has an annotation" in error.value.reason
    assert f"pass annotations={synth_oai / 'ground_truth.csv'}" in error.value.reason
    assert (tmp_path / "DATA" / "report.json").is_file()  # the details are still written
    assert main(["prepare", "--oai", str(synth_oai), "--out", str(tmp_path / "CLI"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pass --annotations {synth_oai / 'ground_truth.csv'}" in err[0]
