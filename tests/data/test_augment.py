"""Landmarks follow the image through every geometric augmentation; photometric steps are sane and seeded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from landmark_dots import dot_image, find_dot

from kneel.data.augment import NOISE_OPTIONS, Augmentation, AugmentationConfig
from kneel.errors import ConfigError

SIZE = 160  # source image side (small and fast; the matrices do not care)
INPUT, PAD = 144, 170
STEPS = ("flip", "scale", "rotation", "shear", "perspective", "extra_scale")


def _check_dot_follows(aug: Augmentation, force, seed: int, point: np.ndarray, tol: float = 0.1) -> bool:
    """Warp a dot image; the dot must be found where the transform maps the point. False if it left the crop."""
    img = dot_image(SIZE, SIZE, point[None], sigma=2.0)
    rng = np.random.default_rng(seed)
    geo = aug.sample_geometry(rng, (SIZE, SIZE), INPUT, PAD, force=force)
    expected = geo.transform.apply(point)
    if not (8 <= expected[0] <= INPUT - 9 and 8 <= expected[1] <= INPUT - 9):
        return False
    out = aug.warp(img, geo.transform, INPUT)
    found = find_dot(out, near=expected)
    assert np.linalg.norm(found - expected) < tol, (force, seed, found, expected, geo.steps)
    return True


@pytest.mark.parametrize("step", STEPS)
def test_each_geometric_step_moves_dot_and_landmark_together(step):
    aug = Augmentation(AugmentationConfig(random_crop=True))
    rng = np.random.default_rng(1)
    checked = 0
    for seed in range(12):
        point = rng.uniform(45, SIZE - 45, 2)
        checked += _check_dot_follows(aug, (step,), seed, point)
    assert checked >= 6


def test_all_steps_fused_move_dot_and_landmark_together():
    aug = Augmentation()
    rng = np.random.default_rng(2)
    checked = 0
    for seed in range(60):
        point = rng.uniform(50, SIZE - 50, 2)
        checked += _check_dot_follows(aug, STEPS, seed, point, tol=0.15)
    assert checked >= 8


def test_random_reference_draws_move_dot_and_landmark_together():
    """The default (probabilistic) recipe, crop included."""
    aug = Augmentation()
    rng = np.random.default_rng(3)
    checked = 0
    for seed in range(20):
        point = rng.uniform(50, SIZE - 50, 2)
        checked += _check_dot_follows(aug, None, seed, point, tol=0.15)
    assert checked >= 8


def test_pad_and_crop_alone_is_a_translation():
    aug = Augmentation(AugmentationConfig(geometric_p=0.0))
    geo = aug.sample_geometry(np.random.default_rng(0), (SIZE, SIZE), INPUT, PAD)
    m = geo.transform.matrix
    np.testing.assert_allclose(m[:2, :2], np.eye(2))
    np.testing.assert_allclose(m[2], [0, 0, 1])
    # pad offset (170-160)//2 = 5, crop offset random in [0, 170-144]
    assert m[0, 2] == 5 - geo.crop_offset[0] and m[1, 2] == 5 - geo.crop_offset[1]
    assert 0 <= geo.crop_offset[0] <= PAD - INPUT
    assert _check_dot_follows(aug, None, 0, np.array([80.0, 70.0]))


def test_flip_keeps_landmark_indices():
    """Two dots of different brightness: after a flip, index 0 is still the bright dot (coordinates mirrored)."""
    aug = Augmentation(AugmentationConfig(random_crop=False))
    pts = np.array([[50.0, 80.0], [110.0, 80.0]])
    img = dot_image(SIZE, SIZE, pts, amplitudes=[1.0, 0.5])
    geo = aug.sample_geometry(np.random.default_rng(0), (SIZE, SIZE), INPUT, PAD, force=("flip",))
    assert geo.flipped
    out = aug.warp(img, geo.transform, INPUT)
    mapped = geo.transform.apply(pts)
    assert mapped[0, 0] > mapped[1, 0]  # the bright dot (index 0) now lies on the right
    bright = find_dot(out)  # global maximum = the amplitude-1 dot
    np.testing.assert_allclose(bright, mapped[0], atol=0.3)


def test_geometry_is_deterministic_given_the_generator():
    aug = Augmentation()
    a = aug.sample_geometry(np.random.default_rng(7), (SIZE, SIZE), INPUT, PAD)
    b = aug.sample_geometry(np.random.default_rng(7), (SIZE, SIZE), INPUT, PAD)
    np.testing.assert_array_equal(a.transform.matrix, b.transform.matrix)


@pytest.mark.parametrize("option", NOISE_OPTIONS)
def test_each_noise_option_keeps_range_and_shape(option):
    aug = Augmentation()
    img = np.full((64, 64), 128.0, np.float32)
    img[20:40, 20:40] = 200.0
    out = aug.apply_noise(img.copy(), option, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    if option == "identity":
        np.testing.assert_array_equal(out, img)


def test_photometric_gamma_cutout_and_seed():
    cfg = AugmentationConfig(noise_p=0.0, gamma_p=1.0, gamma=(2.0, 2.0), cutout_p=1.0, cutout_fraction=0.25)
    aug = Augmentation(cfg)
    img = np.full((40, 40), 64.0, np.float32)
    out = aug.photometric(img, np.random.default_rng(0))
    zeros = out == 0
    assert zeros.sum() == 10 * 10  # one 10x10 cutout square
    np.testing.assert_allclose(out[~zeros], 255.0 * (64 / 255.0) ** 0.5, rtol=1e-5)
    again = aug.photometric(img, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_config_from_dict_rejects_unknown_and_bad_values():
    cfg = AugmentationConfig.from_dict({"rotation_deg": [-15, 15], "cutout_fraction": 0.05})
    assert cfg.rotation_deg == (-15, 15)
    assert AugmentationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        AugmentationConfig.from_dict({"rotaton_deg": [-15, 15]})
    with pytest.raises(ConfigError):
        AugmentationConfig(flip_p=1.5)
    with pytest.raises(ConfigError):
        AugmentationConfig(noise_options=("blur",))


def test_disabled_is_identity_pad_crop():
    aug = Augmentation(AugmentationConfig.disabled())
    geo = aug.sample_geometry(np.random.default_rng(0), (SIZE, SIZE), INPUT, PAD)
    assert geo.steps == ()
    np.testing.assert_allclose(geo.transform.matrix, [[1, 0, -8], [0, 1, -8], [0, 0, 1]])


def test_keep_landmarks_in_view_restricts_the_crop():
    pts = np.array([[55.0, 60.0], [105.0, 110.0], [80.0, 80.0]])
    free = Augmentation(AugmentationConfig(extra_scale_p=1.0, extra_scale=(2.0, 2.0), geometric_p=1.0))
    kept = Augmentation(dataclasses.replace(free.config, keep_landmarks_in_view=True, landmark_margin=0.0))
    outside = feasible = 0
    for seed in range(30):
        a = free.sample_geometry(np.random.default_rng(seed), (SIZE, SIZE), INPUT, PAD, keypoints=pts)
        b = kept.sample_geometry(np.random.default_rng(seed), (SIZE, SIZE), INPUT, PAD, keypoints=pts)
        pa, pb = a.transform.apply(pts), b.transform.apply(pts)
        outside += bool(((pa < -0.5) | (pa > INPUT - 0.5)).any())
        if (pb.max(axis=0) - pb.min(axis=0) < INPUT - 1).all():  # an offset that keeps all in view exists
            feasible += 1
            assert ((pb >= 0) & (pb <= INPUT - 1)).all(), (seed, pb)
    assert feasible >= 20 and outside >= 5  # without the option, many draws lose landmarks
