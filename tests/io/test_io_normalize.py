"""normalize_intensity: the fast histogram/lookup-table paths give exactly the reference windowing."""

from __future__ import annotations

import numpy as np
import pytest

from kneel.io import normalize_intensity
from kneel.io.radiograph import _histogram_u16, _normalize_integer_valued, _window_values

RNG = np.random.default_rng(7)


def reference_windowing(image: np.ndarray, low: float = 5.0, high: float = 99.0) -> np.ndarray:
    """The reference's definition, computed the slow way (float64 percentiles over the whole image)."""
    values = np.asarray(image, dtype=np.float64)
    lo, hi = (float(v) for v in np.nanpercentile(values, [low, high]))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return _window_values(values, lo, hi)


def film_like(dtype: type, lo: int, hi: int, shape: tuple[int, int] = (301, 407)) -> np.ndarray:
    """Skewed values (a dark background and a bright tail) with both extremes present."""
    values = lo + (hi - lo) * RNG.beta(2.0, 5.0, size=shape)
    values = np.round(values)
    values.flat[0], values.flat[-1] = lo, hi
    return values.astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"),
    [
        (np.uint16, 0, 4095),  # 12-bit film as stored
        (np.uint16, 0, 65535),  # the whole 16-bit range
        (np.float32, 37, 4095),  # what read_radiograph returns for a 12-bit film
        (np.float32, 0, 65535),
        (np.float32, -1024, 3071),  # integer rescale intercept: negative values
        (np.int16, -32768, 32767),
        (np.uint8, 0, 255),
        (np.float64, 100, 60000),
        (np.int32, -50000, 150000),  # range above 2**16: the wide path
        (np.float32, 0, 300000),
    ],
)
@pytest.mark.parametrize(("low", "high"), [(5.0, 99.0), (0.0, 100.0), (1.5, 97.25)])
def test_integer_valued_images_match_the_reference(dtype, lo, hi, low, high):
    image = film_like(dtype, lo, hi)
    assert _normalize_integer_valued(image, low, high) is not None  # the fast path is the one under test
    np.testing.assert_array_equal(normalize_intensity(image, low, high), reference_windowing(image, low, high))


def test_fractional_values_take_the_general_path():
    image = film_like(np.float32, 0, 4095) + np.float32(0.25)
    image[5, 5] = 17.5
    assert _normalize_integer_valued(image, 5.0, 99.0) is None
    np.testing.assert_array_equal(normalize_intensity(image), reference_windowing(image))
    almost = film_like(np.float32, -40000, 20000).astype(np.float64)
    almost[3, 3] += 1e-9  # a tiny fraction must not be taken for an integer
    assert _normalize_integer_valued(almost, 5.0, 99.0) is None
    np.testing.assert_array_equal(normalize_intensity(almost), reference_windowing(almost))


def test_nan_ignored_and_flat_image_gives_zeros():
    image = film_like(np.float32, 0, 4095)
    image[10:20, 10:20] = np.nan
    np.testing.assert_array_equal(normalize_intensity(image), reference_windowing(image))
    assert not normalize_intensity(np.full((20, 30), 812, dtype=np.uint16)).any()
    assert normalize_intensity(np.zeros((0, 5), dtype=np.float32)).shape == (0, 5)


def test_histogram_exact_beyond_float32_counts():
    """More than 2**24 pixels of one value: OpenCV's float32 counts would round; the chunked histogram does not."""
    image = np.full((4200, 4200), 1000, dtype=np.uint16)  # 17.6 Mpixel, 16.9 M of one value
    image[:176] = RNG.integers(0, 4096, size=(176, 4200), dtype=np.uint16)
    image[-1, -1] = 65535
    np.testing.assert_array_equal(_histogram_u16(image), np.bincount(image.ravel(), minlength=1 << 16))
    out = normalize_intensity(image)
    assert out.max() == 255 and (out > 0).any()
    np.testing.assert_array_equal(out, reference_windowing(image))
