"""kneel.landmarks: the 16-landmark schema, sides and the mirroring convention (reference §1)."""

from __future__ import annotations

import numpy as np
import pytest

from kneel import resources
from kneel.geometry import Affine
from kneel.io.annotations import read_bf_landmarks
from kneel.landmarks import (
    CENTRE_LANDMARK,
    CV_GROUPS,
    FEMUR,
    LANDMARKS,
    NUM_LANDMARKS,
    TEST_GROUPS,
    TIBIA,
    KneeSide,
    landmark_names,
)


def test_schema():
    assert NUM_LANDMARKS == 16 == len(LANDMARKS)
    assert [lm.index for lm in LANDMARKS] == list(range(16))
    assert (tuple(range(9)), tuple(range(9, 16))) == (TIBIA, FEMUR)
    assert landmark_names() == [f"T{i}" for i in range(9)] + [f"F{i}" for i in range(9, 16)]
    assert {lm.bone for lm in LANDMARKS[:9]} == {"T"} and {lm.bone for lm in LANDMARKS[9:]} == {"F"}
    assert all(lm.description for lm in LANDMARKS)
    assert CENTRE_LANDMARK == 4 and "centre" in LANDMARKS[4].description
    assert "notch" in LANDMARKS[12].description
    assert CV_GROUPS == {"tibia": (0, 8), "femur": (9, 15)}
    assert TEST_GROUPS == {"tibia": (0, 4, 8), "femur": (9, 12, 15)}


@pytest.mark.parametrize(
    ("text", "side"),
    [("R", KneeSide.R), ("l", KneeSide.L), (" right ", KneeSide.R), ("LEFT", KneeSide.L), (KneeSide.L, KneeSide.L)],
)
def test_side_parse(text, side):
    assert KneeSide.parse(text) is side


@pytest.mark.parametrize("text", ["", "B", "both", "0"])
def test_side_parse_rejects(text):
    with pytest.raises(ValueError):
        KneeSide.parse(text)


def test_sides_print_as_r_and_l():
    assert str(KneeSide.R) == "R" and f"{KneeSide.L}" == "L" and "%s" % KneeSide.R == "R"  # noqa: UP031
    assert repr(KneeSide.R) == "<KneeSide.R: 'R'>"


def test_only_left_knees_are_mirrored():
    assert KneeSide.L.mirrored and not KneeSide.R.mirrored
    assert KneeSide("R") is KneeSide.R and KneeSide.R == "R"


def test_order_runs_lateral_to_medial_in_the_roi():
    # reference §1: x strictly increasing within each bone in all 748 (right-knee oriented) ROIs
    for ann in read_bf_landmarks(resources.bf_landmarks_csv()):
        xy = ann.landmarks_roi
        assert np.all(np.diff(xy[list(TIBIA), 0]) > 0) and np.all(np.diff(xy[list(FEMUR), 0]) > 0)


def test_mean_positions_match_the_reference_table():
    xy = np.array([a.landmarks_roi for a in read_bf_landmarks(resources.bf_landmarks_csv())]).mean(axis=0)
    np.testing.assert_allclose(xy[0], [99.0, 262.5], atol=0.06)
    np.testing.assert_allclose(xy[12], [230.9, 200.8], atol=0.06)
    np.testing.assert_allclose(xy[15], [363.2, 241.1], atol=0.06)
    assert xy[3, 1] < xy[2, 1] and xy[3, 1] < xy[4, 1]  # T3 lateral spine: a local y minimum
    assert xy[12, 1] == xy[9:, 1].min()  # F12 notch apex: the highest femoral point


def test_mirroring_keeps_indices_and_flips_order_of_x():
    roi = read_bf_landmarks(resources.bf_landmarks_csv())[0].landmarks_roi
    mirrored = Affine.mirror_x(466).apply(roi)
    assert np.all(np.diff(mirrored[list(TIBIA), 0]) < 0)  # a left knee as seen on the film
    np.testing.assert_allclose(Affine.mirror_x(466).apply(mirrored), roi)  # an involution
