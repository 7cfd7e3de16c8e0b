"""read_radiograph on PNG/TIFF/JPEG files written with OpenCV: need spacing=, grey 8/16 bit, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kneel.io import MissingSpacingError, TruncatedFileError, UnsupportedImageError, read_radiograph

RNG = np.random.default_rng(7)


def _write(path, image):
    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8), (".tiff", np.uint16)],
)
def test_lossless_grey_images_exact(tmp_path, suffix, dtype):
    top = np.iinfo(dtype).max
    pixels = RNG.integers(0, top + 1, size=(30, 50)).astype(dtype)
    path = _write(tmp_path / f"knee{suffix}", pixels)
    rg = read_radiograph(path, spacing=(0.2, 0.25))
    assert rg.image.dtype == np.float32
    np.testing.assert_array_equal(rg.image, pixels.astype(np.float32))
    assert rg.spacing == (0.2, 0.25) and rg.spacing_source == "override"
    assert rg.meta.bits_stored == 8 * np.dtype(dtype).itemsize
    assert rg.meta.photometric_interpretation == "MONOCHROME2" and rg.meta.transfer_syntax_uid is None


def test_jpeg(tmp_path):
    yy, xx = np.mgrid[0:40, 0:60]
    pixels = (120 + 80 * np.sin(xx / 6.0)).astype(np.uint8)
    path = _write(tmp_path / "knee.jpg", pixels)
    rg = read_radiograph(path, spacing=0.1)
    assert rg.meta.file_format == "jpeg"
    assert np.abs(rg.image - pixels).mean() < 2


def test_grey_stored_as_three_identical_channels(tmp_path):
    grey = RNG.integers(0, 256, size=(20, 20), dtype=np.uint8)
    path = _write(tmp_path / "bgr.png", np.dstack([grey, grey, grey]))
    np.testing.assert_array_equal(read_radiograph(path, spacing=0.1).image, grey.astype(np.float32))


def test_colour_rejected(tmp_path):
    colour = RNG.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    path = _write(tmp_path / "colour.png", colour)
    with pytest.raises(UnsupportedImageError):
        read_radiograph(path, spacing=0.1)


def test_spacing_required(tmp_path):
    path = _write(tmp_path / "knee.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(MissingSpacingError) as info:
        read_radiograph(path)
    assert "spacing=" in info.value.reason and str(path) in str(info.value)


def test_detected_by_content_not_suffix(tmp_path):
    pixels = RNG.integers(0, 256, size=(12, 14), dtype=np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    path = tmp_path / "knee.dcm"  # misleading name
    path.write_bytes(data.tobytes())
    rg = read_radiograph(path, spacing=0.3)
    assert rg.meta.file_format == "png"
    np.testing.assert_array_equal(rg.image, pixels.astype(np.float32))


def test_truncated_png(tmp_path):
    pixels = RNG.integers(0, 256, size=(64, 64), dtype=np.uint8)
    path = _write(tmp_path / "knee.png", pixels)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TruncatedFileError) as info:
        read_radiograph(path, spacing=0.1)
    assert str(path) in str(info.value)
