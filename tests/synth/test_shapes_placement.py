"""Shapes from the published knees, film placement from the published positions, exact snapping, OA by KL."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kneel.resources import bf_landmarks_csv, via_points_csv
from kneel.synth.anatomy import sample_anatomy
from kneel.synth.placement import SPACING_TABLE, sample_layout, snap_knee
from kneel.synth.shapes import sample_shape, source_pool


def test_spacing_table_is_the_published_distribution() -> None:
    """Spacing implied by the published centre (padded 0.3 mm frame) vs the refined VIA tibial landmark 4."""
    bf = pd.read_csv(bf_landmarks_csv())
    via = pd.read_csv(via_points_csv())
    via["subject_id"] = via.filename.str.replace(".png", "").astype(int)
    via["side"] = via.region_attributes.map(lambda s: json.loads(s)["Side"])
    via["cx"] = via.region_shape_attributes.map(lambda s: json.loads(s)["cx"])
    t4 = via.groupby(["subject_id", "side"]).nth(4).set_index(["subject_id", "side"])["cx"]
    cx = bf.set_index(["subject_id", "side"])["center"].map(lambda c: int(c.split(",")[0]))
    both = pd.concat([cx.rename("c"), t4.rename("v")], axis=1, join="inner")
    implied = ((both.c - 100) * 0.3 / both.v).round(3)
    table = dict(SPACING_TABLE)
    nearest = implied.map(lambda s: min(table, key=lambda t: abs(t - s)))
    assert (abs(nearest - implied) <= 0.0015).mean() > 0.99
    counts = nearest.value_counts()
    for value, count in SPACING_TABLE:
        assert abs(counts.get(value, 0) - count) <= 5


def test_sampled_shapes_stay_close_to_the_real_ones() -> None:
    rng = np.random.default_rng(0)
    for knee in source_pool("all")[::50]:
        shape = sample_shape(knee, rng)
        assert shape.shape == (16, 2)
        assert np.all(np.diff(shape[:9, 0]) > 0) and np.all(np.diff(shape[9:, 0]) > 0)
        assert np.allclose(shape[4], 0.0)
        assert np.abs(shape - knee.shape_mm).max() < 8.0  # mm
        assert np.array_equal(sample_shape(knee, rng, strength=0.0), knee.shape_mm)


def test_layouts_follow_the_published_films() -> None:
    rng = np.random.default_rng(1)
    distances, right_x = [], []
    for _ in range(200):
        lay = sample_layout(rng)
        (rx, ry), (lx, ly) = lay.centres["R"], lay.centres["L"]
        width, height = lay.size_mm
        assert 380 < width < 440 and 320 < height < 360
        assert 0 < rx < lx < width and 0 < ry < height and 0 < ly < height
        # As on every published film (and as the low-cost stage assumes): each knee in its own half of the image.
        assert rx < width / 2 - 10 and lx > width / 2 + 10
        assert min(lay.spacing) >= 0.099 and max(lay.spacing) <= 0.21
        distances.append(np.hypot(lx - rx, ly - ry))
        right_x.append(rx)
    assert 150 < np.median(distances) < 200  # published: 137-238 mm, median 171
    assert 100 < np.median(right_x) < 135  # published: 88-143 mm


def test_snapping_is_exact_and_small() -> None:
    rng = np.random.default_rng(2)
    knee = source_pool("all")[3]
    shape = sample_shape(knee, rng)
    for side in ("R", "L"):
        placed = snap_knee(shape, side, knee.kl, (300.0, 180.0), 4.0, (0.15, 0.17))
        assert placed.padded.dtype.kind == "i"
        # The snapped shape, placed, is exactly on the integer padded grid.
        padded = placed.pose.apply(placed.shape_mm) / 0.3 + 100
        assert np.abs(padded - placed.padded).max() < 1e-9
        assert np.abs(placed.shape_mm - shape).max() <= 0.3 * np.sqrt(0.5) + 1e-9
        orig = (placed.padded - 100) * 0.3 / np.array([0.17, 0.15])
        assert np.abs(orig - placed.original_px).max() < 1e-9
        lateral_outwards = placed.original_px[0, 0] < placed.original_px[8, 0]
        assert lateral_outwards == (side == "R")


def test_osteoarthritis_signs_grow_with_kl() -> None:
    rng = np.random.default_rng(3)
    shape = source_pool("all")[0].shape_mm
    spurs, sclerosis = [], []
    for kl in range(5):
        anats = [sample_anatomy(shape, kl, rng) for _ in range(100)]
        spurs.append(np.mean([sum(o.size for o in a.osteophytes) for a in anats]))
        sclerosis.append(np.mean([a.tib_sclerosis_med for a in anats]))
    assert spurs[0] == 0 and all(b > a for a, b in zip(spurs, spurs[1:], strict=False))
    assert sclerosis[0] == sclerosis[1] == 0 and sclerosis[4] > sclerosis[3] > sclerosis[2] > 0
