"""Known geometry in, known numbers out; and the exact answers under film rotation, translation, mirroring and
spacing changes (anisotropic included)."""

from __future__ import annotations

import numpy as np
import pytest
from knee_cases import EXPECTED, KNEE_MM, to_film

from kneel.geometry import Affine, resample_transform
from kneel.measure import MEASUREMENT_NAMES, measure_knees

SPACINGS = [(0.15, 0.15), (0.1, 0.143), (0.2, 0.1)]


def _measure(points_px: np.ndarray, spacing, side: str) -> dict[str, float]:
    out = measure_knees(points_px[None], np.array([spacing]), [side])
    return {name: float(v[0]) for name, v in out.items()}


def _assert_expected(values: dict[str, float], obliquity: float = 0.0) -> None:
    for name in MEASUREMENT_NAMES:
        expected = obliquity if name == "plateau_obliquity_deg" else EXPECTED[name]
        assert values[name] == pytest.approx(expected, abs=1e-9), name


def test_expected_values_cover_every_measurement():
    assert set(EXPECTED) == set(MEASUREMENT_NAMES)


@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_known_knee_gives_hand_computed_numbers(side, spacing):
    _assert_expected(_measure(to_film(KNEE_MM, side, spacing), spacing, side))


@pytest.mark.parametrize("side, sign", [("R", 1.0), ("L", -1.0)])
@pytest.mark.parametrize("angle", [-170.0, -25.0, 7.5, 90.0, 135.0])
def test_film_rotation_changes_only_the_obliquity_by_the_rotation(side, sign, angle):
    # Rotating the film counter-clockwise raises the right end of every knee: the medial end of a right knee (its
    # medial side faces the image right) and the lateral end of a left knee.
    spacing = (0.1, 0.143)
    values = _measure(to_film(KNEE_MM, side, spacing, angle_deg=angle), spacing, side)
    expected = (sign * angle + 180.0) % 360.0 - 180.0
    _assert_expected(values, obliquity=expected)


@pytest.mark.parametrize("side", ["R", "L"])
def test_translation_and_rotation_through_kneel_geometry(side):
    # The same invariance, with the film transform built by kneel.geometry (pixels -> pixels, anisotropic spacing).
    spacing = (0.12, 0.16)
    px = to_film(KNEE_MM, side, spacing, angle_deg=3.0)
    base = _measure(px, spacing, side)
    to_mm = Affine.scaling(spacing[1], spacing[0])
    moved = to_mm.then(Affine.rotation(11.0, centre=(40.0, 60.0))).then(Affine.translation(-17.5, 230.25))
    moved = moved.then(to_mm.inverse())
    values = _measure(moved.apply(px), spacing, side)
    for name in MEASUREMENT_NAMES:
        shift = (11.0 if side == "R" else -11.0) if name == "plateau_obliquity_deg" else 0.0
        assert values[name] == pytest.approx(base[name] + shift, abs=1e-9), name


@pytest.mark.parametrize("angle", [0.0, 4.0, -12.0])
def test_mirrored_film_with_swapped_sides_gives_identical_numbers(angle):
    # A film flipped left-right shows the right knee where a left knee belongs: labelled by image half it becomes
    # 'L'. Medial stays medial (landmark indices), so every number, obliquity included, is unchanged.
    spacing = (0.15, 0.12)
    width = 2800
    for side, swapped in (("R", "L"), ("L", "R")):
        px = to_film(KNEE_MM, side, spacing, angle_deg=angle)
        flipped = Affine.mirror_x(width).apply(px)
        base, values = _measure(px, spacing, side), _measure(flipped, spacing, swapped)
        for name in MEASUREMENT_NAMES:
            assert values[name] == pytest.approx(base[name], abs=1e-9), (side, name)


@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("new_spacing", [(0.3, 0.3), (0.05, 0.2), (0.17, 0.11)])
def test_resampling_the_film_changes_nothing(side, new_spacing):
    # Resampling to another (possibly anisotropic) spacing keeps pixel edges: the landmark pixels change, the
    # anatomy does not.
    spacing = (0.1, 0.143)
    px = to_film(KNEE_MM, side, spacing, angle_deg=-6.0)
    resampled = resample_transform(spacing, new_spacing).apply(px)
    base, values = _measure(px, spacing, side), _measure(resampled, new_spacing, side)
    for name in MEASUREMENT_NAMES:
        assert values[name] == pytest.approx(base[name], abs=1e-9), name


def test_anisotropic_spacing_is_exact_not_averaged():
    # Row and column spacing are applied to their own axes: the same pixels read with them swapped are off by mm.
    spacing = (0.1, 0.2)
    px = to_film(KNEE_MM, "R", spacing, angle_deg=30.0)
    _assert_expected(_measure(px, spacing, "R"), obliquity=30.0)
    swapped = _measure(px, (0.2, 0.1), "R")
    assert abs(swapped["tibial_plateau_width_mm"] - 80.0) > 5.0


def test_medial_narrowing_is_reported_medially_on_both_sides():
    # Narrow the medial compartment only (femur F13-F15 down by 2 mm): medial widths drop by 2 mm, lateral ones do
    # not move, on a right and on a left knee alike.
    knee = KNEE_MM.copy()
    knee[13:16, 1] += 2.0
    for side in ("R", "L"):
        spacing = (0.15, 0.15)
        values = _measure(to_film(knee, side, spacing), spacing, side)
        assert values["min_jsw_medial_mm"] == pytest.approx(1.0, abs=1e-9)
        assert values["jsw_medial_15_mm"] == pytest.approx(EXPECTED["jsw_medial_15_mm"] - 2.0, abs=1e-9)
        assert values["min_jsw_lateral_mm"] == pytest.approx(5.0, abs=1e-9)
        assert values["jsw_lateral_25_mm"] == pytest.approx(EXPECTED["jsw_lateral_25_mm"], abs=1e-9)


def test_gap_is_negative_where_contours_cross_and_minimum_can_fall_between_landmarks():
    # F14 pushed 1 mm into the tibia: the medial minimum is -1 at F14; the crossing is kept as a negative width.
    knee = KNEE_MM.copy()
    knee[14, 1] = 101.0
    values = _measure(to_film(knee, "R", (0.15, 0.15)), (0.15, 0.15), "R")
    assert values["min_jsw_medial_mm"] == pytest.approx(-1.0, abs=1e-9)
    # A tibial point raised under a femoral segment: the minimum sits at that tibial vertex (u = 10), not at a
    # femoral landmark: femur at u = 10 is 95 - 6/12 = 94.5, tibia raised to 97 -> 2.5.
    knee = KNEE_MM.copy()
    knee[1, 1] = 97.0
    values = _measure(to_film(knee, "R", (0.15, 0.15)), (0.15, 0.15), "R")
    assert values["min_jsw_lateral_mm"] == pytest.approx(2.5, abs=1e-9)


def test_missing_landmark_gives_nan_not_a_number_from_the_rest():
    px = to_film(KNEE_MM, "R", (0.15, 0.15))
    px[11] = np.nan
    values = _measure(px, (0.15, 0.15), "R")
    assert all(np.isnan(v) for v in values.values())


def test_wrong_handedness_keeps_widths_and_gaps():
    # A mirrored film whose side labels were kept (an AP film, or a flipped export): the knee frame finds the femur
    # on its own, so widths, gaps and the condyle-plateau angle stay right; only the film-relative obliquity, which
    # needs the radiological convention, changes.
    spacing = (0.15, 0.15)
    px = Affine.mirror_x(3000).apply(to_film(KNEE_MM, "R", spacing, angle_deg=5.0))
    values = _measure(px, spacing, "R")
    for name in MEASUREMENT_NAMES:
        if name != "plateau_obliquity_deg":
            assert values[name] == pytest.approx(EXPECTED[name], abs=1e-9), name


def test_ratio_is_undefined_when_the_lateral_space_is_closed():
    knee = KNEE_MM.copy()
    knee[9:12, 1] += 6.0  # lateral condyle 6 mm down: it crosses the plateau (minimum -1 mm at F9)
    values = _measure(to_film(knee, "R", (0.15, 0.15)), (0.15, 0.15), "R")
    assert values["min_jsw_lateral_mm"] == pytest.approx(-1.0, abs=1e-9)
    assert np.isnan(values["jsw_ratio_medial_lateral"])
    assert values["min_jsw_medial_mm"] == pytest.approx(3.0, abs=1e-9)


def test_jsw_positions_are_where_the_widths_are_taken():
    from kneel.measure.definitions import jsw_positions

    points = KNEE_MM[None] - KNEE_MM[4] + np.array([150.0, 180.0])  # a right knee's canonical mm, as to_film places it
    ends = {name: v[0] - np.array([150.0, 180.0]) + KNEE_MM[4] for name, v in jsw_positions(points).items()}
    assert np.allclose(ends["min_jsw_lateral_mm"], [[4, 100], [4, 95]])  # under F9
    assert np.allclose(ends["min_jsw_medial_mm"], [[64, 100], [64, 97]])  # under F14
    assert np.allclose(ends["jsw_medial_15_mm"], [[68, 100], [68, 97 - 1 / 3]])
