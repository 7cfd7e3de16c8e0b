"""kneel review export: the reviewed knees as ground truth that kneel evaluate and kneel prepare read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kneel.cli import main
from kneel.io.annotations import group_via_knees, read_via_points
from kneel.review.export import NothingToExportError, export_reviews
from kneel.review.folder import ReviewFolder

SHIFT_MM = 3.0  # the correction: T5 of the first knee moved this far to the right


def review_some(pred_dir):
    """Knee 1 corrected (T5 moved by SHIFT_MM), knee 2 accepted, knee 3 flagged, knee 4 absent."""
    folder = ReviewFolder(pred_dir)
    films = sorted((f for f in folder.films.values() if f.prediction is not None), key=lambda f: f.file)
    knees = [(film, side) for film in films for side in ("R", "L") if film.predicted(side) is not None]
    assert len(knees) == 4, "the fixture's two films should each have two predicted knees"
    decisions = {}
    for (film, side), status in zip(knees, ("accepted", "accepted", "flagged", "absent"), strict=True):
        xy = film.predicted(side).copy()
        if not decisions:
            xy[5, 0] += SHIFT_MM / film.spacing[1]
        folder.store.save(film.file, side, status=status, landmarks_px=xy, base_version=0, shape=film.shape,
                          spacing=film.spacing, predicted_px=film.predicted(side))  # fmt: skip
        decisions[(film.file, side)] = xy
    return knees, decisions


def test_export_writes_the_reviewed_knees_as_a_landmark_table_and_via(pred_dir, tmp_path):
    knees, decisions = review_some(pred_dir)
    summary = export_reviews(pred_dir, tmp_path / "gt")
    assert (summary.knees, summary.by_status) == (2, {"corrected": 1, "accepted": 1, "flagged": 1, "absent": 1})
    table = pd.read_csv(tmp_path / "gt" / "ground_truth.csv", dtype={"file": str})
    assert list(table.columns) == ["file", "side", "landmark", "x_px", "y_px", "x_mm", "y_mm", "status"]
    exported = [(film.file, side) for film, side in knees[:2]]
    assert sorted(set(zip(table["file"], table["side"], strict=True))) == sorted(exported)
    for key in exported:
        rows = table[(table["file"] == key[0]) & (table["side"] == key[1])].sort_values("landmark")
        assert np.array_equal(rows[["x_px", "y_px"]].to_numpy(), decisions[key])  # exact floats
    via = group_via_knees(read_via_points(tmp_path / "gt" / "via.csv"))
    assert [(k.filename, k.side.value) for k in via] == sorted(exported, key=lambda k: (k[0], k[1] == "L"))
    for knee in via:
        assert knee.complete and np.array_equal(knee.landmarks, decisions[(knee.filename, knee.side.value)])
    flagged = export_reviews(pred_dir, tmp_path / "gt2", include_flagged=True)
    assert flagged.knees == 3


@pytest.mark.parametrize("gt_name", ["ground_truth.csv", "via.csv"])
def test_kneel_evaluate_reads_the_export_and_sees_exactly_the_correction(pred_dir, tmp_path, gt_name):
    knees, _ = review_some(pred_dir)
    assert main(["review", "export", str(pred_dir), "--out", str(tmp_path / "gt")]) == 0
    code = main(["evaluate", "--pred", str(pred_dir / "landmarks.csv"), "--gt", str(tmp_path / "gt" / gt_name),
                 "--out", str(tmp_path / "eval"), "--no-examples", "--name", "pred"])  # fmt: skip
    assert code == 0
    errors = pd.read_csv(tmp_path / "eval" / "errors_pred.csv", dtype={"file": str})
    assert len(errors) == 32  # the corrected and the accepted knee, 16 landmarks each
    film, side = knees[0]
    moved = (errors["file"] == film.file) & (errors["side"] == side) & (errors["landmark"] == 5)
    assert errors.loc[moved, "error_mm"].item() == pytest.approx(SHIFT_MM, abs=1e-5)
    assert errors.loc[~moved, "error_mm"].abs().max() < 1e-5  # landmarks.csv holds 6 decimals


def test_kneel_prepare_trains_on_the_export(pred_dir, cohort, tmp_path):
    _, decisions = review_some(pred_dir)
    export_reviews(pred_dir, tmp_path / "gt")
    code = main(["prepare", "--images", str(cohort), "--annotations", str(tmp_path / "gt" / "ground_truth.csv"),
                 "--out", str(tmp_path / "data"), "--folds", "0", "--no-progress"])  # fmt: skip
    assert code == 0
    meta = pd.read_csv(tmp_path / "data" / "hc" / "metadata.csv")
    assert len(meta) == 2
    for row in meta.itertuples():
        key = next(k for k in decisions if Path(k[0]).name.startswith(str(row.subject_id)) and k[1] == row.side)
        np.testing.assert_allclose(json.loads(row.landmarks_original), decisions[key], rtol=0, atol=1e-9)


def test_nothing_to_export_is_one_line(pred_dir, capsys):
    with pytest.raises(NothingToExportError, match="no reviewed knee to export"):
        export_reviews(pred_dir)
    assert main(["review", "export", str(pred_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kneel review: error:") and "\n" not in err
