"""LandmarkDataset: targets sit on the image content, the input transform inverts exactly, augmentation is seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from landmark_dots import find_dot, make_prepared

from kneel.data.augment import Augmentation, AugmentationConfig
from kneel.data.datasets import LandmarkDataset
from kneel.data.layout import DataLayoutError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("DATA")
    hc, lc = make_prepared(root)
    return root, hc, lc


def _assert_dots_at_keypoints(item, size, tol=0.1, skip_border=6, radius=4, clearance=10.0):
    """Every keypoint inside the input and clear of its neighbours must sit on its dot; returns how many did."""
    img = item["image"][0].numpy()
    kp = item["keypoints"].numpy().astype(np.float64) * size
    checked = 0
    for i, p in enumerate(kp):
        if not (skip_border <= p[0] <= size - 1 - skip_border and skip_border <= p[1] <= size - 1 - skip_border):
            continue
        others = np.delete(kp, i, axis=0)
        if len(others) and np.linalg.norm(others - p, axis=1).min() < clearance:
            continue  # a neighbouring dot would bias the centroid
        found = find_dot(img, near=p, radius=radius)
        assert np.linalg.norm(found - p) < tol, (found, p)
        checked += 1
    return checked


def test_hc_validation_item(data_dir):
    root, hc, _ = data_dir
    ds = LandmarkDataset(root, "hc")
    assert len(ds) == 6 and ds.num_keypoints == 16
    item = ds[1]
    assert item["image"].shape == (3, 450, 450) and item["image"].dtype == torch.float32
    assert item["keypoints"].shape == (16, 2) and item["keypoints"].dtype == torch.float32
    assert item["image"].max() > 150 and item["image"].min() == 20  # 0-255, not normalised
    assert torch.equal(item["image"][0], item["image"][2])
    assert (item["subject_id"], item["side"], item["image_id"], item["spacing_mm"]) == (101, "L", "101_L", 0.3)
    # reference geometry: 466 -> pad 520 (offset 27) -> centre crop 450 (offset 35): a shift of -8 px
    np.testing.assert_allclose(ds.input_transform(1).matrix, [[1, 0, -8], [0, 1, -8], [0, 0, 1]])
    truth = hc[(101, "L")]
    np.testing.assert_allclose(item["keypoints"].numpy() * 450, truth - 8, atol=1e-4)
    back = ds.input_transform(1).inverse().apply(item["keypoints"].numpy().astype(np.float64) * 450)
    np.testing.assert_allclose(back, truth, atol=1e-4)
    assert _assert_dots_at_keypoints(item, 450) == 16


def test_lc_halves_and_centre_target(data_dir):
    root, _, lc = data_dir
    ds = LandmarkDataset(root, "lc", subjects=[102])
    assert len(ds) == 2 and ds.num_keypoints == 1 and ds.subject_ids == [102]
    right, left = ds[0], ds[1]
    assert right["side"] == "R" and left["side"] == "L"
    # 230x170 image: R = columns [0, 115), L = columns [115, 230) shifted by -115; pad 520 then crop 450
    w = 115
    np.testing.assert_allclose(
        ds.input_transform(1).matrix, [[1, 0, -115 + (520 - w) // 2 - 35], [0, 1, (520 - 170) // 2 - 35], [0, 0, 1]]
    )
    for item, side in ((right, "R"), (left, "L")):
        assert item["keypoints"].shape == (1, 2) and item["spacing_mm"] == 1.0
        back = ds.input_transform(item["index"]).inverse().apply(item["keypoints"].numpy().astype(np.float64) * 450)
        np.testing.assert_allclose(back[0], lc[(102, side)], atol=1e-4)
        assert _assert_dots_at_keypoints(item, 450) == 1
        assert item["image"].min() == 0  # zero padding around the half image
    # each half shows only its own knee: one bright dot per input
    for item in (right, left):
        img = item["image"][0].numpy()
        assert (img > 150).sum() < 60


def test_tiny_input_spacing_is_one_exact_transform(data_dir):
    root, hc, _ = data_dir
    ds = LandmarkDataset(root, "hc", input_size=128, pad=148, input_spacing=0.3 * 466 / 132)
    item = ds[0]
    assert item["image"].shape == (3, 128, 128)
    assert item["spacing_mm"] == pytest.approx(0.3 * 466 / 132)
    back = ds.input_transform(0).inverse().apply(item["keypoints"].numpy().astype(np.float64) * 128)
    np.testing.assert_allclose(back, hc[(101, "R")], atol=1e-4)
    same = LandmarkDataset(root, "hc", input_size=128, pad=148, scale=132 / 466)
    np.testing.assert_allclose(same.input_transform(0).matrix, ds.input_transform(0).matrix)
    # dots (sigma 2.5 px at 0.3 mm -> ~0.7 px) are still found at the targets, after anti-aliasing
    assert _assert_dots_at_keypoints(item, 128, tol=0.1, skip_border=3, radius=2, clearance=4.0) >= 12


def test_augmented_items_follow_the_image_and_are_seeded(data_dir):
    root, _, _ = data_dir
    cfg = AugmentationConfig(noise_p=0.0, gamma_p=0.0, cutout_p=0.0, geometric_p=1.0)
    ds = LandmarkDataset(root, "hc", augment=Augmentation(cfg), seed=3)
    checked = 0
    for i in range(len(ds)):
        checked += _assert_dots_at_keypoints(ds[i], 450, tol=0.2, radius=3)
    assert checked >= 30
    a = ds[2]
    assert torch.equal(a["image"], ds[2]["image"]) and torch.equal(a["keypoints"], ds[2]["keypoints"])
    ds.set_epoch(1)
    assert not torch.equal(a["keypoints"], ds[2]["keypoints"])
    ds.set_epoch(0)
    other_seed = LandmarkDataset(root, "hc", augment=Augmentation(cfg), seed=4)
    assert not torch.equal(a["keypoints"], other_seed[2]["keypoints"])


@pytest.mark.parametrize(("size", "pad", "scale"), [(450, 520, 1.0), (225, 260, 0.5)])
def test_keypoint_jitter_is_the_references(data_dir, size, pad, scale):
    """Each landmark moves by its own integer offset in the 466 px source ROI (±1 px), before the geometry."""
    root, _, _ = data_dir
    plain = LandmarkDataset(root, "hc", input_size=size, pad=pad, scale=scale)
    cfg = dataclasses.replace(AugmentationConfig.disabled(), keypoint_jitter_p=1.0, keypoint_jitter=0.003)
    jittered = LandmarkDataset(root, "hc", augment=Augmentation(cfg), input_size=size, pad=pad, scale=scale, seed=1)
    offsets = []
    for epoch in range(3):
        jittered.set_epoch(epoch)
        for i in range(len(jittered)):
            item, ref = jittered[i], plain[i]
            assert torch.equal(item["image"], ref["image"])  # only the labels move
            # back in source pixels: the geometry (here a scale) carries the jitter as it carries the image
            shift = (item["keypoints"].numpy() - ref["keypoints"].numpy()).astype(np.float64) * size / scale
            np.testing.assert_allclose(shift, np.round(shift), atol=2e-3)  # whole source pixels
            offsets.append(np.round(shift).astype(int))
    offsets = np.stack(offsets)  # (items, 16, 2)
    assert set(np.unique(offsets)) == {-1, 0, 1}  # trunc(U(-0.003, 0.003) * 466)
    # independent per landmark and axis: within an item the 16 landmarks do not share one offset
    assert all(len({tuple(o) for o in item}) > 1 for item in offsets)
    assert abs(np.corrcoef(offsets[:, :, 0].ravel(), offsets[:, :, 1].ravel())[0, 1]) < 0.2
    # p = 0.5 (the ablation's): about half the items are jittered
    half = dataclasses.replace(cfg, keypoint_jitter_p=0.5)
    ds = LandmarkDataset(root, "hc", augment=Augmentation(half), input_size=size, pad=pad, scale=scale, seed=2)
    moved = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        moved += [not torch.equal(ds[i]["keypoints"], plain[i]["keypoints"]) for i in range(len(ds))]
    assert 0.25 < np.mean(moved) < 0.75


def test_items_do_not_depend_on_worker_count(data_dir):
    root, _, _ = data_dir
    ds = LandmarkDataset(root, "lc", augment=Augmentation(), seed=5)
    ds.set_epoch(2)
    single = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)))
    multi = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)))
    assert torch.equal(single["image"], multi["image"]) and torch.equal(single["keypoints"], multi["keypoints"])
    assert single["subject_id"].tolist() == [101, 101, 102, 102]


def test_missing_folder_and_bad_pad(tmp_path, data_dir):
    with pytest.raises(DataLayoutError, match="kneel prepare"):
        LandmarkDataset(tmp_path, "hc")
    with pytest.raises(DataLayoutError):
        LandmarkDataset(data_dir[0], "hc", input_size=450, pad=400)
    with pytest.raises(DataLayoutError):
        LandmarkDataset(data_dir[0], "xx")
