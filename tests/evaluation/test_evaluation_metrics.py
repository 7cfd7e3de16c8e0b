"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kneel.evaluation.metrics import (
    cumulative_curve,
    error_summary,
    group_errors,
    grouped_recall,
    landmark_errors_mm,
    outlier_percent,
    recall_at,
)
from kneel.landmarks import CV_GROUPS, TEST_GROUPS


def test_errors_isotropic_and_anisotropic_spacing():
    pred = np.array([[3.0, 4.0], [0.0, 0.0]])
    true = np.zeros((2, 2))
    assert landmark_errors_mm(pred, true, 0.5).tolist() == [2.5, 0.0]
    # (row_mm, col_mm): dx scales with the column spacing, dy with the row spacing.
    err = landmark_errors_mm(np.array([[3.0, 4.0]]), np.zeros((1, 2)), (0.1, 0.2))
    assert err[0] == pytest.approx(math.hypot(3 * 0.2, 4 * 0.1))


def test_errors_per_row_spacing_and_nan():
    pred = np.zeros((3, 16, 2))
    true = np.ones((3, 16, 2))
    true[2, 5] = np.nan
    err = landmark_errors_mm(pred, true, np.array([[1.0, 2.0], [0.5, 0.5], [1.0, 1.0]]))
    assert err.shape == (3, 16)
    assert err[0, 0] == pytest.approx(math.hypot(2.0, 1.0))
    assert err[1, 3] == pytest.approx(math.hypot(0.5, 0.5))
    assert np.isnan(err[2, 5]) and not np.isnan(err[2, 4])
    scalar_rows = landmark_errors_mm(pred, np.ones((3, 16, 2)), np.array([1.0, 2.0, 3.0]))
    assert scalar_rows[:, 0] == pytest.approx([math.sqrt(2), 2 * math.sqrt(2), 3 * math.sqrt(2)])
    with pytest.raises(ValueError):
        landmark_errors_mm(pred, true, np.ones((4, 2)))


def test_recall_is_fraction_at_or_below_and_nan_safe():
    rec = recall_at([0.5, 1.0, 1.6, 3.0, np.nan], thresholds=(1.0, 1.5, 2.0, 2.5))
    assert rec == {1.0: 0.5, 1.5: 0.5, 2.0: 0.75, 2.5: 0.75}
    assert all(math.isnan(v) for v in recall_at([np.nan]).values())


def test_error_summary():
    s = error_summary(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["n"] == 4
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert s["p95"] == pytest.approx(np.percentile([1, 2, 3, 4], 95))


def test_groupings_cv_and_test_style():
    err = np.zeros((2, 16))
    err[:, 0] = [1.0, 3.0]
    err[:, 8] = [3.0, 3.0]
    err[:, 4] = [8.0, 0.0]
    err[:, 9] = [0.5, 0.5]
    err[:, 15] = [0.5, 4.5]
    cv = group_errors(err, CV_GROUPS)
    assert cv["tibia"].tolist() == [2.0, 3.0]
    assert cv["femur"].tolist() == [0.5, 2.5]
    test = group_errors(err, TEST_GROUPS)
    assert test["tibia"].tolist() == pytest.approx([4.0, 2.0])
    assert test["femur"].tolist() == pytest.approx([1.0 / 3, 5.0 / 3])
    cell = grouped_recall(err, CV_GROUPS, thresholds=(2.0, 2.5))
    # tibia recall@2 = 1/2, femur recall@2 = 1/2 -> 0.5 +- 0; @2.5: tibia 1/2, femur 2/2 -> 0.75 +- 0.25
    assert cell[2.0] == pytest.approx((0.5, 0.0))
    assert cell[2.5] == pytest.approx((0.75, 0.25))


def test_outlier_percent_any_landmark_at_or_above_limit():
    err = np.ones((4, 16))
    err[1, 7] = 10.0  # exactly at the limit counts
    err[2, 3] = np.nan
    err[3] = np.nan  # a fully missing knee is ignored
    assert outlier_percent(err) == pytest.approx(100.0 / 3)


def test_cumulative_curve_monotone():
    grid, frac = cumulative_curve(np.array([0.0, 1.0, 2.0, np.nan]), max_mm=2.0, num=5)
    assert grid.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert frac.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])
