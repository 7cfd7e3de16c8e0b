"""The default demo end to end (what ``make demo`` runs): precise landmarks, and the geometry fix shows in the numbers.

The bars are issue 11's: on the held-out synthetic films, through the whole two-stage pipeline from DICOM, a mean
landmark error of at most 1.5 mm, at least 80 % of the knees with a mean error (over their 16 landmarks) of at most
2.5 mm, no knee missed and none invented; this test holds the demo to tighter bars than those (1.2 mm, 95 % of the
knees) so that a regression shows long before the issue's bars break. Measured on the development machine
(deterministic on CPU, 2026-12-01, tiny configs with no dropout and the heatmap spread penalty): 0.992 mm mean, every
knee within 2.5 mm, reference geometry 3.58 mm, no-learning baseline 42.1 mm.
"""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_default_demo_is_precise_and_exact_geometry_wins(full_demo):
    exact = full_demo.headline["exact geometry"]
    reference = full_demo.headline["reference geometry"]
    baseline = full_demo.headline["no-learning baseline"]
    hc_oof = full_demo.headline["hc out-of-fold"]
    assert exact["knees"] == 24 and exact["knees_missing"] == 0  # no knee missed
    assert exact["mean_mm"] <= 1.2, exact  # issue 11's bar: 1.5
    assert exact["mean_mm"] * 10 < baseline["mean_mm"], (exact, baseline)
    assert exact["mean_mm"] + 0.3 < reference["mean_mm"], (exact, reference)
    assert hc_oof["mean_mm"] < 1.5, hc_oof

    evaluation = full_demo.report_html.parent / "evaluation" / "test"
    errors = pd.read_csv(evaluation / "errors_exact_geometry.csv", dtype={"file": str})
    knee_mean = errors.groupby(["file", "side"])["error_mm"].mean()
    assert len(knee_mean) == 24 and knee_mean.notna().all()
    assert (knee_mean <= 2.5).mean() >= 0.95, knee_mean.describe()  # issue 11's bar: 80 %

    truth = pd.read_csv(full_demo.report_html.parent / "cohorts" / "test" / "ground_truth.csv", dtype={"file": str})
    pred = pd.read_csv(full_demo.report_html.parent / "predictions" / "exact" / "landmarks.csv", dtype={"file": str})
    knees_true = set(map(tuple, truth[["file", "side"]].drop_duplicates().to_numpy()))
    knees_pred = set(map(tuple, pred[["file", "side"]].drop_duplicates().to_numpy()))
    assert knees_pred == knees_true  # no knee invented, none missed

    # Issue 12: the calibrated radius covers the truth as often as stated (90 %), within 5 points; measured 92.4 %.
    joined = errors.merge(pred[["file", "side", "landmark", "uncertainty_mm"]], on=["file", "side", "landmark"])
    assert len(joined) == len(errors) == 24 * 16
    assert abs((joined["error_mm"] <= joined["uncertainty_mm"]).mean() - 0.9) <= 0.05
    assert full_demo.report_html.is_file()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_measure_and_crop_run_on_the_demos_predictions(full_demo, tmp_path):
    """Issue 16's done-when: ``kneel measure`` (with the agreement against the synthetic truth, a bare landmark table
    whose spacing comes from the predictions) and ``kneel crop`` on the demo's own prediction folder."""
    import cv2
    import numpy as np

    from kneel.cli import main

    root = full_demo.report_html.parent
    preds, truth = root / "predictions" / "exact", root / "cohorts" / "test" / "ground_truth.csv"
    assert main(["measure", str(preds), "--truth", str(truth), "--samples", "200", "--out", str(tmp_path / "m")]) == 0
    table = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert len(table) == 24 and (table["status"] == "ok").all()
    stats = pd.read_csv(tmp_path / "m" / "agreement.csv").set_index("measurement")
    assert (stats["n"] == 24).all()
    assert stats.at["tibial_plateau_width_mm", "mad"] < 2.0  # measured 1.06 mm with an earlier demo's models

    assert main(["crop", str(preds), "--level", "--out", str(tmp_path / "c")]) == 0
    crops = pd.read_csv(tmp_path / "c" / "crops.csv", dtype={"file": str})
    assert len(crops) == 24 and (crops["status"] == "ok").all()
    image = cv2.imread(str(tmp_path / "c" / crops["crop"].iloc[0]), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.shape == (350, 350)
    points = pd.read_csv(tmp_path / "c" / "landmarks.csv")
    assert len(points) == 24 * 16
    assert points[["x_px", "y_px"]].to_numpy().min() > 0 and points[["x_px", "y_px"]].to_numpy().max() < 350
