"""Calibrated uncertainty: the radius covers the truth as often as stated, checked against closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kneel.inference.calibration import Calibration, CalibrationError, fit_calibration

K = 16


def _cohort(rng: np.random.Generator, knees: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Landmark errors of a 2-D isotropic Gaussian with a per-landmark sigma that the ``spread`` signal reports
    (times an arbitrary factor 0.4) and that ``heatmap`` does not know (pure noise)."""
    sigma = rng.uniform(0.3, 4.0, size=(knees, K)) * np.linspace(0.8, 1.5, K)
    errors = sigma * np.sqrt(rng.chisquare(2, size=(knees, K)))  # Rayleigh(sigma)
    signals = {"spread": 0.4 * sigma, "heatmap": rng.uniform(0.5, 3.0, size=(knees, K))}
    return signals, errors, sigma


def test_radius_matches_the_rayleigh_quantile_and_covers_as_stated():
    rng = np.random.default_rng(0)
    signals, errors, _ = _cohort(rng, 400)
    cal = fit_calibration(signals, errors, coverage=0.9)
    # Closed form: the 90 % quantile of Rayleigh(sigma) is sigma * sqrt(-2 ln 0.1) = 2.146 sigma.
    fresh_signals, fresh_errors, fresh_sigma = _cohort(rng, 400)
    radius = cal.radius_mm(fresh_signals)
    ratio = np.median(radius / fresh_sigma)
    assert ratio == pytest.approx(math.sqrt(-2 * math.log(0.1)), rel=0.08)
    assert np.mean(fresh_errors <= radius) == pytest.approx(0.9, abs=0.02)
    # ... and conditionally: as often for the easiest third of the landmarks as for the hardest (the radius follows
    # the signal; a constant radius would cover the easy ones always and the hard ones rarely).
    low, high = np.quantile(fresh_sigma, [1 / 3, 2 / 3])
    for part in (fresh_sigma <= low, fresh_sigma >= high):
        assert np.mean(fresh_errors[part] <= radius[part]) == pytest.approx(0.9, abs=0.03)
    # The noise signal gets (almost) no weight; the informative one a weight near 1 (error proportional to it).
    weights = dict(zip(cal.signals, cal.weights, strict=True))
    assert abs(weights["heatmap"]) < 0.1 and weights["spread"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("coverage", [0.5, 0.8, 0.95])
def test_other_coverages(coverage: float):
    rng = np.random.default_rng(1)
    signals, errors, _ = _cohort(rng, 300)
    cal = fit_calibration(signals, errors, coverage=coverage)
    fresh_signals, fresh_errors, _ = _cohort(rng, 300)
    assert np.mean(fresh_errors <= cal.radius_mm(fresh_signals)) == pytest.approx(coverage, abs=0.03)


def test_save_load_round_trip_and_quality(tmp_path):
    rng = np.random.default_rng(2)
    signals, errors, _ = _cohort(rng, 40)
    cal = fit_calibration(signals, errors, flag_radius_mm=5.0)
    cal.save(tmp_path)
    back = Calibration.load(tmp_path)
    np.testing.assert_allclose(back.radius_mm(signals), cal.radius_mm(signals))
    assert back.quality(np.full(K, 4.9)) == "ok"
    assert back.quality(np.r_[np.full(K - 1, 1.0), 5.1]) == "uncertain"
    assert back.quality(np.r_[np.full(K - 1, 1.0), np.nan]) == "uncertain"


def test_refuses_too_few_knees_and_corrupt_files(tmp_path):
    rng = np.random.default_rng(3)
    signals, errors, _ = _cohort(rng, 3)
    with pytest.raises(CalibrationError, match="too few"):
        fit_calibration(signals, errors)
    (tmp_path / "calibration.json").write_text('{"coverage": 2}')
    with pytest.raises(CalibrationError, match="calibration"):
        Calibration.load(tmp_path)
