"""The published KNEEL annotation files: round trips, typed records, and the frame relations of reference §2."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest

from kneel import resources
from kneel.io.annotations import (
    HC_SPACING,
    IMAGE_PAD,
    ROI_SIZE_PX,
    KneeAnnotation,
    ViaKnee,
    group_via_knees,
    implied_spacing,
    lc_to_padded,
    original_to_padded,
    padded_to_lc,
    padded_to_original,
    padded_to_roi,
    read_bf_landmarks,
    read_via_points,
    roi_to_padded,
    write_bf_landmarks,
    write_via_points,
)
from kneel.io.errors import AnnotationError
from kneel.landmarks import KneeSide


@cache
def bf() -> list[KneeAnnotation]:
    return read_bf_landmarks(resources.bf_landmarks_csv())


@cache
def refined_knees() -> dict[tuple[int, KneeSide], ViaKnee]:
    knees = group_via_knees(read_via_points(resources.via_points_csv(refined=True)))
    return {(k.subject_id, k.side): k for k in knees}


@cache
def spacings() -> np.ndarray:
    """Per knee of the bf file: the film spacing implied by its centre and the refined VIA tibia-4, (x, y)."""
    via = refined_knees()
    return np.array([implied_spacing(via[(a.subject_id, a.side)].landmarks[4], a.centre) for a in bf()])


# ---------------------------------------------------------------------------------------------------------------
# bf_landmarks_1_0.3.csv


def test_shipped_copy_is_the_published_file(annotations_dir):
    for name in (
        "bf_landmarks_1_0.3.csv",
        "oai_landmarks_00_via_format.csv",
        "oai_landmarks_00_via_format_refined.csv",
    ):
        assert (resources.annotations_dir() / name).read_bytes() == (annotations_dir / name).read_bytes()


def test_bf_records():
    records = bf()
    assert len(records) == 748
    assert len({a.subject_id for a in records}) == 720
    assert Counter(a.side for a in records) == {KneeSide.L: 374, KneeSide.R: 374}
    assert Counter(a.kl for a in records) == {0: 150, 1: 150, 2: 149, 3: 150, 4: 149}
    first = records[0]
    assert (first.subject_id, first.side, first.kl) == (9000798, KneeSide.L, 4)
    assert first.landmarks_roi.shape == (16, 2) and first.landmarks_roi.dtype == np.float64
    np.testing.assert_array_equal(first.landmarks_roi[0], [63, 278])  # T0
    np.testing.assert_array_equal(first.landmarks_roi[9], [65, 238])  # F9
    assert first.bbox == (967, 166, 1433, 632) and first.centre == (1200, 399)


def test_bf_written_back_byte_for_byte(tmp_path):
    out = tmp_path / "bf.csv"
    write_bf_landmarks(bf(), out)
    assert out.read_bytes() == resources.bf_landmarks_csv().read_bytes()
    assert read_bf_landmarks(out) == bf()


def test_bf_non_integer_landmarks_round_trip(tmp_path):
    a = bf()[0]
    moved = KneeAnnotation(a.subject_id, a.side, a.kl, a.landmarks_roi + 1 / 3, a.bbox, a.centre)
    out = tmp_path / "bf.csv"
    write_bf_landmarks([moved], out)
    back = read_bf_landmarks(out)[0]
    np.testing.assert_array_equal(back.landmarks_roi, moved.landmarks_roi)  # repr-exact floats


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("subject_id,side,kl\n1,L,2\n", "header"),
        ('subject_id,side,kl,tibia,femur,bbox,center\n1,X,2,"1,2","3,4","1,2,3,4","5,6"\n', "line 2"),
        ('subject_id,side,kl,tibia,femur,bbox,center\n1,L,2,"1,2","3,4","1,2,3,4","5,6"\n', "tibia"),
    ],
)
def test_bf_malformed(tmp_path, text, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=words) as info:
        read_bf_landmarks(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# VIA point CSVs


@pytest.mark.parametrize("refined", [True, False])
def test_via_round_trip_value_for_value(tmp_path, refined):
    source = resources.via_points_csv(refined=refined)
    points = read_via_points(source)
    assert len(points) == (11985 if refined else 12000)  # 748 x 16 + 13 + 4 broken (reference §2.2 says 11,984)
    out = tmp_path / "via.csv"
    write_via_points(points, out)
    assert read_via_points(out) == points
    if refined:  # VIA's own layout: identical text (the published file just lacks the final newline)
        assert out.read_text() == source.read_text() + "\n"


def test_via_unknown_fields_kept(tmp_path):
    path = tmp_path / "via.csv"
    path.write_text(
        "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n"
        'a.png,12,"{""who"":""me""}",1,0,"{""name"":""point"",""cx"":1.5,""cy"":2,""extra"":[1]}",'
        '"{""Bone"":""T"",""Side"":""L"",""note"":""x""}"\n'
    )
    (p,) = read_via_points(path)
    assert p.xy == (1.5, 2) and p.bone == "T" and p.side is KneeSide.L
    assert p.file_attributes == {"who": "me"} and p.shape["extra"] == [1] and p.attributes["note"] == "x"
    write_via_points([p], tmp_path / "out.csv")
    assert read_via_points(tmp_path / "out.csv") == [p]


def test_via_not_a_point(tmp_path):
    path = tmp_path / "via.csv"
    path.write_text(
        "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n"
        'a.png,12,{},1,0,"{""name"":""rect"",""x"":1}","{}"\n'
    )
    with pytest.raises(AnnotationError, match="line 2"):
        read_via_points(path)


def test_via_knees():
    knees = refined_knees()
    complete = [k for k in knees.values() if k.complete]
    assert len(knees) == 750 and len(complete) == 748
    broken = sorted(len(k.landmarks) for k in knees.values() if not k.complete)
    assert broken == [4, 13] and all(k.subject_id == 9284795 for k in knees.values() if not k.complete)
    # reference §1: index 0 is the same anatomical side for both knees (R: x increases, L: x decreases)
    assert np.all(np.diff(knees[(9710479, KneeSide.R)].landmarks[:9, 0]) > 0)
    left = [k for k in complete if k.side is KneeSide.L]
    assert np.mean([np.all(np.diff(k.landmarks[:9, 0]) < 0) for k in left]) > 0.95


# ---------------------------------------------------------------------------------------------------------------
# frames (reference §2.1 relations)


def test_bbox_is_centre_plus_minus_233():
    for a in bf():
        x0, y0, x1, y1 = a.bbox
        assert (x1 - x0, y1 - y0) == (ROI_SIZE_PX, ROI_SIZE_PX) == (466, 466)
        assert (a.centre[0] - x0, a.centre[1] - y0) == (233, 233)


def test_t4_is_the_roi_centre_on_average():
    t4 = np.array([a.landmarks_roi[4] for a in bf()])
    np.testing.assert_allclose(t4.mean(axis=0), [233.0, 233.5], atol=0.05)
    # and, in the padded frame, T4 is the stored centre to within a pixel (the reference rounded both)
    diff = np.array([roi_to_padded(a)[4] - a.centre for a in bf()])
    assert np.abs(diff).max() <= 1.0


def test_roi_padded_round_trip_and_mirroring():
    for a in bf()[:50]:
        padded = roi_to_padded(a)
        np.testing.assert_array_equal(padded_to_roi(padded, a.side, a.bbox), a.landmarks_roi)
        np.testing.assert_array_equal(a.landmarks_padded, padded)
        x_roi = a.landmarks_roi[:, 0]
        expected_x = (ROI_SIZE_PX - x_roi if a.side is KneeSide.L else x_roi) + a.bbox[0]
        np.testing.assert_array_equal(padded[:, 0], expected_x)
        np.testing.assert_array_equal(padded[:, 1], a.landmarks_roi[:, 1] + a.bbox[1])
    # mirrored ROIs look like right knees, so in the whole image a left knee's T0 is right of its T8
    left = [a for a in bf() if a.side is KneeSide.L]
    assert all(roi_to_padded(a)[0, 0] > roi_to_padded(a)[8, 0] for a in left)


def test_lc_frame():
    a = bf()[0]
    np.testing.assert_allclose(a.centre_lc, [(1200 - 100) * 0.3, (399 - 100) * 0.3])
    xy = np.array([[0.0, 0.0], [100.0, 100.0], [1333.3, 27.1]])
    np.testing.assert_allclose(padded_to_lc(xy), (xy - IMAGE_PAD) * HC_SPACING)
    np.testing.assert_allclose(lc_to_padded(padded_to_lc(xy)), xy)


def test_implied_spacing_matches_reference():
    s = spacings()
    # exactly consistent in x and y, 0.0997-0.2 mm, median 0.15, most common 0.15 / 0.17 / 0.102
    assert np.abs(s[:, 0] - s[:, 1]).max() < 1e-3
    assert s.min() == pytest.approx(0.0997, abs=5e-4) and s.max() == pytest.approx(0.2, abs=5e-4)
    assert np.median(s) == pytest.approx(0.15, abs=1e-3)
    common = Counter(np.round(s[:, 0], 3)).most_common(3)
    assert common == [(0.15, 211), (0.17, 194), (0.102, 85)]


def test_original_and_padded_frames_agree_for_all_landmarks():
    via, s = refined_knees(), spacings()
    errors = []
    for a, spacing in zip(bf(), s, strict=True):
        knee = via[(a.subject_id, a.side)]
        film_spacing = (spacing[1], spacing[0])  # (row, col) from the (x, y) estimate
        errors.append(original_to_padded(knee.landmarks, film_spacing) - roi_to_padded(a))
    errors = np.abs(np.array(errors))
    # the reference rounded to whole 0.3 mm pixels twice (ROI landmarks, centre): within 2 px everywhere
    assert errors.max() <= 2.01 and errors.mean() < 0.7


def test_original_padded_inverse_anisotropic():
    xy = np.array([[0.0, 0.0], [2500.0, 1800.0], [17.5, 3.25]])
    spacing = (0.1, 0.15)  # rows 0.1 mm, columns 0.15 mm
    padded = original_to_padded(xy, spacing)
    np.testing.assert_allclose(padded[:, 0], xy[:, 0] * 0.15 / 0.3 + 100)
    np.testing.assert_allclose(padded[:, 1], xy[:, 1] * 0.1 / 0.3 + 100)
    np.testing.assert_allclose(padded_to_original(padded, spacing), xy)
    np.testing.assert_allclose(padded_to_original(padded, 0.1), xy * [1.5, 1.0])
