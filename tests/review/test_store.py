"""corrections.csv: exact round trip, statuses, versions, conflicts between tabs and servers, malformed input."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from kneel.io.landmark_table import read_landmark_table
from kneel.review.store import CORRECTION_COLUMNS, CorrectionError, CorrectionStore, VersionConflict

SHAPE = (400, 600)  # rows, columns
SPACING = (0.2, 0.1)  # row_mm, col_mm


def points(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 599, 16), rng.uniform(0, 399, 16)])


def save(store: CorrectionStore, file="=a.dcm", side="R", status="accepted", xy=None, base=0, pred=None):
    xy = points() if xy is None else xy
    return store.save(file, side, status=status, landmarks_px=xy, base_version=base, shape=SHAPE, spacing=SPACING,
                      predicted_px=points() if pred is None else pred)  # fmt: skip


def test_a_saved_knee_reads_back_exactly_from_a_new_store(tmp_path):
    store = CorrectionStore(tmp_path)
    xy = points()
    xy[5] += (1 / 3, -2 / 7)  # floats that need every digit
    review = save(store, xy=xy)
    assert (review.status, review.version, review.moved[5], sum(review.moved)) == ("corrected", 1, True, 1)
    again = CorrectionStore(tmp_path).get("=a.dcm", "R")
    assert np.array_equal(again.landmarks_px, xy) and again.status == "corrected" and again.version == 1
    np.testing.assert_array_equal(again.landmarks_mm, xy * [0.1, 0.2])
    table = read_landmark_table(store.path)  # the long landmark table, formula-safe file names read back as given
    assert list(table.columns) == list(CORRECTION_COLUMNS) and len(table) == 16
    assert set(table["file"]) == {"=a.dcm"} and table["timestamp"].str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()


def test_status_says_whether_the_prediction_was_changed(tmp_path):
    store = CorrectionStore(tmp_path)
    assert save(store, status="accepted").status == "accepted"
    assert save(store, status="corrected", base=1).status == "accepted"  # nothing moved
    moved = points()
    moved[0, 0] += 0.5
    assert save(store, status="accepted", xy=moved, base=2).status == "corrected"
    assert save(store, status="flagged", xy=moved, base=3).status == "flagged"
    added = store.save("b.dcm", "L", status="accepted", landmarks_px=points(1), base_version=0, shape=SHAPE,
                       spacing=SPACING, predicted_px=None)  # fmt: skip
    assert added.status == "corrected" and all(added.moved)  # a knee added by hand
    absent = save(store, side="L", status="absent", xy=None)
    assert absent.landmarks_px is None and absent.status == "absent"
    records = CorrectionStore(tmp_path).load()
    assert records[("=a.dcm", "L")].landmarks_px is None and records[("=a.dcm", "R")].version == 4
    assert np.isnan(read_landmark_table(store.path).query("side == 'L' and file == '=a.dcm'")["x_px"]).all()


def test_a_stale_version_is_refused_with_a_clear_message(tmp_path):
    tab1, tab2 = CorrectionStore(tmp_path), CorrectionStore(tmp_path)  # two servers on one folder, too
    save(tab1)
    with pytest.raises(VersionConflict, match="changed elsewhere .* version 1, your change was made on version 0"):
        save(tab2, status="flagged")
    assert tab2.get("=a.dcm", "R").status == "accepted"  # nothing overwritten
    assert save(tab2, status="flagged", base=1).version == 2
    assert tab1.get("=a.dcm", "R").status == "flagged"  # the other store sees it


def test_concurrent_saves_from_two_stores_lose_nothing(tmp_path):
    stores = [CorrectionStore(tmp_path), CorrectionStore(tmp_path)]
    errors = []

    def work(i: int) -> None:
        try:
            save(stores[i % 2], file=f"f{i}.dcm", xy=points(i))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    records = CorrectionStore(tmp_path).load()
    assert sorted(records) == sorted((f"f{i}.dcm", "R") for i in range(12))
    assert all(np.array_equal(records[(f"f{i}.dcm", "R")].landmarks_px, points(i)) for i in range(12))


@pytest.mark.parametrize(
    "xy, status, message",
    [
        (np.full((16, 2), np.nan), "accepted", "landmark 0 is not a finite number"),
        (points()[:15], "accepted", r"16 \[x, y\] pairs, got shape \[15, 2\]"),
        (points() + [[600, 0]] + np.zeros((16, 2)), "accepted", "outside the 600x400 image"),
        (np.where(np.arange(32).reshape(16, 2) == 7, -0.6, points()), "accepted", "landmark 3 .* outside"),
        (points(), "approved", "status must be one of"),
        ("nonsense", "accepted", "16 \\[x, y\\] pairs of numbers"),
    ],
)
def test_malformed_corrections_are_refused(tmp_path, xy, status, message):
    store = CorrectionStore(tmp_path)
    with pytest.raises(CorrectionError, match=message):
        save(store, xy=xy, status=status)
    assert not store.path.exists()


def test_points_on_the_image_edge_are_allowed(tmp_path):
    xy = points()
    xy[0] = (-0.5, -0.5)
    xy[1] = (599.5, 399.5)
    assert np.array_equal(save(CorrectionStore(tmp_path), xy=xy).landmarks_px, xy)
