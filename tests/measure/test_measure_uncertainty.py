"""Landmark radii -> measurement half-widths: closed forms where the measurement is linear, the stated coverage in a
simulation with known truth, and exact invariance."""

from __future__ import annotations

import numpy as np
import pytest
from knee_cases import KNEE_MM, to_film

from kneel.measure import MEASUREMENT_NAMES, measure_knees
from kneel.measure.definitions import canonical_mm
from kneel.measure.uncertainty import propagate

Z95 = 1.6448536269514722  # standard normal quantile 0.95: a symmetric 90 % interval is +- Z95 sd
RAYLEIGH_90 = np.sqrt(-2.0 * np.log(0.1))  # a 2-D isotropic Gaussian's 90 % radius, in per-axis sd


def _canonical(side: str = "R", spacing=(0.15, 0.15), angle: float = 0.0, knee=KNEE_MM) -> np.ndarray:
    return canonical_mm(to_film(knee, side, spacing, angle_deg=angle)[None], np.array([spacing]), [side == "L"])


def test_plateau_width_half_width_matches_the_closed_form():
    # Only T0 and T8 uncertain (radii 1 and 2 mm at 90 %): the width is linear in their u coordinates to first order,
    # so its 90 % half-width is Z95 * sqrt(s0^2 + s8^2) with s = r / RAYLEIGH_90.
    radius = np.zeros((1, 16))
    radius[0, 0], radius[0, 8] = 1.0, 2.0
    out = propagate(_canonical(), radius, 0.9, samples=4000, seed=3)
    expected = Z95 * np.hypot(1.0, 2.0) / RAYLEIGH_90
    assert out["tibial_plateau_width_mm"][0] == pytest.approx(expected, rel=0.05)
    # Landmarks the femoral width does not use carry all the uncertainty: it has none.
    assert out["femoral_condyle_width_mm"][0] == 0.0


def test_obliquity_half_width_matches_the_closed_form():
    # Only T1 and T7 (60 mm apart) uncertain, 1.5 mm each: the angle moves by (dv7 - dv1) / 60 rad to first order.
    radius = np.zeros((1, 16))
    radius[0, [1, 7]] = 1.5
    out = propagate(_canonical(angle=20.0), radius, 0.9, samples=4000, seed=5)
    expected = np.degrees(Z95 * np.sqrt(2.0) * 1.5 / RAYLEIGH_90 / 60.0)
    assert out["plateau_obliquity_deg"][0] == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("coverage", [0.9, 0.5])
def test_stated_coverage_holds_in_a_simulation_with_known_truth(coverage):
    # Truth: the known knee. "Predictions": truth + isotropic Gaussian errors whose radius at `coverage` is r. Each
    # prediction's half-widths (from its own noisy landmarks) must contain the true value `coverage` of the time.
    rng = np.random.default_rng(11)
    trials = 240
    radius = np.full((trials, 16), 1.2)
    sigma = 1.2 / np.sqrt(-2.0 * np.log(1.0 - coverage))
    truth = _canonical()[0]
    noisy = truth[None] + rng.normal(0.0, sigma, size=(trials, 16, 2))
    from kneel.measure.definitions import measure_canonical

    measured = measure_canonical(noisy)
    true_values = measure_canonical(truth[None])
    half = propagate(noisy, radius, coverage, samples=400, seed=0, values=measured)
    rates = {}
    for name in MEASUREMENT_NAMES:
        rates[name] = float(np.mean(np.abs(measured[name] - true_values[name][0]) <= half[name]))
    overall = float(np.mean(list(rates.values())))
    # 12 measurements x 240 trials: the overall rate is known to about +-0.02 (correlated measurements); single
    # measurements to about +-0.06 (binomial, 240 trials).
    assert overall == pytest.approx(coverage, abs=0.04), rates
    for name, rate in rates.items():
        assert rate == pytest.approx(coverage, abs=0.1), (name, rates)


def test_uncertainty_is_exactly_invariant_and_independent_of_the_batch():
    rng = np.random.default_rng(2)
    radius = rng.uniform(0.3, 2.0, size=(1, 16))
    base = propagate(_canonical("R", (0.15, 0.15), 0.0), radius, 0.9, samples=500)
    for side, spacing, angle in (("L", (0.15, 0.15), 0.0), ("R", (0.1, 0.2), 33.0), ("L", (0.2, 0.12), -80.0)):
        moved = propagate(_canonical(side, spacing, angle), radius, 0.9, samples=500)
        for name in MEASUREMENT_NAMES:
            assert moved[name][0] == pytest.approx(base[name][0], rel=1e-9, abs=1e-12), (side, name)
    # The same knee among others gets the same numbers.
    others = np.concatenate([_canonical("L", angle=10.0), _canonical("R"), _canonical("R", angle=-5.0)])
    radii = np.concatenate([rng.uniform(0.3, 2.0, size=(1, 16)), radius, radius])
    batch = propagate(others, radii, 0.9, samples=500)
    for name in MEASUREMENT_NAMES:
        assert batch[name][1] == pytest.approx(base[name][0], rel=1e-12), name


def test_unknown_radius_gives_unknown_uncertainty_and_zero_radius_gives_zero():
    points = np.concatenate([_canonical(), _canonical()])
    radius = np.zeros((2, 16))
    radius[1, 3] = np.nan
    out = propagate(points, radius, 0.9, samples=50)
    for name in MEASUREMENT_NAMES:
        assert out[name][0] == 0.0
        assert np.isnan(out[name][1])


def test_measure_knees_and_propagate_agree_on_sides():
    # measure_knees mirrors left knees itself; propagate takes canonical points: both see the same knee.
    px = to_film(KNEE_MM, "L", (0.15, 0.15))
    values = measure_knees(px[None], np.array([[0.15, 0.15]]), ["L"])
    assert values["min_jsw_medial_mm"][0] == pytest.approx(3.0)


def test_ratio_near_contact_has_an_infinite_half_width():
    # Lateral space 0.3 mm, landmarks known to 1 mm: in many draws the lateral space closes and the ratio is
    # undefined, so no finite half-width covers 90 % of the draws.
    knee = KNEE_MM.copy()
    knee[9:12, 1] += 4.7  # F9 at 99.7: minimum lateral width 0.3 mm
    out = propagate(_canonical(knee=knee), np.full((1, 16), 1.0), 0.9, samples=500)
    assert np.isinf(out["jsw_ratio_medial_lateral"][0])
    assert np.isfinite(out["min_jsw_lateral_mm"][0])
