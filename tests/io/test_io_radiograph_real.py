"""read_radiograph on real radiographs and codec test files shipped by pydicom and pydicom-data (offline)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest

from kneel.io import (
    DecodeError,
    InvalidSpacingError,
    MissingPixelDataError,
    MissingSpacingError,
    Radiograph,
    TruncatedFileError,
    UnsupportedImageError,
    normalize_intensity,
    read_radiograph,
)

OVERRIDE = (0.143, 0.143)


@cache
def _read(path: Path) -> Radiograph:
    return read_radiograph(path, spacing=OVERRIDE)


@cache
def _stored(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


@pytest.mark.parametrize("film", ["RG1", "RG3"])
def test_lossless_and_uncompressed_decode_identically(film, pydicom_file):
    lossless, uncompressed = _read(pydicom_file(f"{film}_J2KR.dcm")), _read(pydicom_file(f"{film}_UNCR.dcm"))
    assert lossless.meta.transfer_syntax_name == "JPEG 2000 Image Compression (Lossless Only)"
    assert uncompressed.meta.transfer_syntax_name == "Explicit VR Little Endian"
    assert lossless.image.dtype == np.float32 and lossless.image.shape == uncompressed.image.shape
    np.testing.assert_array_equal(lossless.image, uncompressed.image)


@pytest.mark.parametrize("film", ["RG1", "RG3"])
def test_lossy_close_but_not_identical(film, pydicom_file):
    lossy, uncompressed = _read(pydicom_file(f"{film}_J2KI.dcm")), _read(pydicom_file(f"{film}_UNCR.dcm"))
    assert lossy.meta.transfer_syntax_name == "JPEG 2000 Image Compression"
    diff = np.abs(lossy.image.astype(np.float64) - uncompressed.image)
    assert diff.max() > 0  # really lossy
    value_range = 2.0**uncompressed.meta.bits_stored
    assert diff.mean() < 0.01 * value_range


@pytest.mark.parametrize(("film", "bits"), [("RG1", 15), ("RG3", 10)])
def test_monochrome1_inverted_so_bone_is_bright(film, bits, pydicom_file):
    rg = _read(pydicom_file(f"{film}_UNCR.dcm"))
    stored = _stored(pydicom_file(f"{film}_UNCR.dcm"))
    assert rg.meta.photometric_interpretation == "MONOCHROME1" and rg.meta.inverted
    assert rg.meta.bits_stored == bits
    np.testing.assert_array_equal(rg.image, ((2**bits - 1) - stored.astype(np.float64)).astype(np.float32))
    # bone (high attenuation) is bright: the image's bright pixels were the stored dark ones
    assert np.corrcoef(rg.image.ravel()[::97], stored.ravel()[::97])[0, 1] == pytest.approx(-1.0)


@pytest.mark.parametrize("kind", ["J2KR", "J2KI", "UNCR"])
def test_rg1_zero_pixel_spacing(kind, pydicom_file):
    path = pydicom_file(f"RG1_{kind}.dcm")
    with pytest.raises(InvalidSpacingError) as info:
        read_radiograph(path)
    assert info.value.tag == "PixelSpacing" and "zero" in info.value.reason and str(path) in str(info.value)
    rg = _read(pydicom_file(f"RG1_{kind}.dcm"))
    assert rg.spacing == OVERRIDE and rg.spacing_source == "override"
    assert "zero" in rg.meta.file_spacing_error


@pytest.mark.parametrize("kind", ["J2KR", "J2KI", "UNCR"])
def test_rg3_missing_spacing(kind, pydicom_file):
    path = pydicom_file(f"RG3_{kind}.dcm")
    with pytest.raises(MissingSpacingError) as info:
        read_radiograph(path)
    assert "ImagerPixelSpacing" in info.value.reason and "PixelSpacing" in info.value.reason
    rg = _read(pydicom_file(f"RG3_{kind}.dcm"))
    assert rg.spacing == OVERRIDE and rg.meta.modality == "CR" and rg.meta.laterality == "R"


def test_real_film_normalises_like_the_reference(pydicom_file):
    rg = _read(pydicom_file("RG3_UNCR.dcm"))
    out = normalize_intensity(rg.image)
    img = rg.image.astype(np.float64)
    lo, hi = np.percentile(img, [5, 99])
    ref = ((np.clip(img, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)  # the reference's process_xray
    np.testing.assert_array_equal(out, ref)
    assert out.max() == 255 and out.min() == 0


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_implicit.dcm",  # implicit VR little endian
    ],
)
def test_transfer_syntaxes_decode_to_the_uncompressed_pixels(name, pydicom_file):
    ours = read_radiograph(pydicom_file(name))
    plain = read_radiograph(pydicom_file("MR_small.dcm"))
    np.testing.assert_array_equal(ours.image, plain.image)
    assert ours.spacing == plain.spacing == (0.3125, 0.3125)


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70"),  # JPEG lossless, process 14 SV1
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", "1.2.840.10008.1.2.4.70"),
        ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51"),  # JPEG extended (12 bit)
        ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81"),  # JPEG-LS near lossless
        ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    ],
)
def test_jpeg_family_decodes(name, syntax, pydicom_file):
    rg = read_radiograph(pydicom_file(name), spacing=0.2)
    assert rg.meta.transfer_syntax_uid == syntax
    stored = pydicom.dcmread(pydicom_file(name)).pixel_array
    assert rg.image.shape == stored.shape and np.isfinite(rg.image).all()
    assert rg.image.std() > 0


def test_jpeg2000_matches_its_uncompressed_twin(pydicom_file):
    ours = read_radiograph(pydicom_file("JPEG2000.dcm"))
    plain = read_radiograph(pydicom_file("JPEG2000_UNC.dcm"))
    np.testing.assert_array_equal(ours.image, plain.image)
    assert ours.meta.pixel_representation == 1 and ours.image.min() < 0  # signed data stays signed


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("SC_rgb.dcm", UnsupportedImageError),
        ("SC_rgb_rle.dcm", UnsupportedImageError),
        ("emri_small.dcm", UnsupportedImageError),  # 10 frames
        ("rtplan.dcm", MissingPixelDataError),
        ("MR_truncated.dcm", TruncatedFileError),
        ("rtplan_truncated.dcm", TruncatedFileError),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", TruncatedFileError),
        ("JPEG-lossy.dcm", DecodeError),  # a known-bad JPEG stream libjpeg refuses
    ],
)
def test_pydicom_problem_files(name, error, pydicom_file):
    path = pydicom_file(name)
    with pytest.raises(error) as info:
        read_radiograph(path, spacing=0.2)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_codec_panic_becomes_decode_error(tmp_path, pydicom_file):
    # one corrupt byte in this RLE stream makes pylibjpeg-rle (Rust) panic: pyo3's PanicException is a
    # BaseException, not an Exception; it must still come out as a DecodeError naming the file
    data = bytearray(pydicom_file("MR_small_RLE.dcm").read_bytes())
    data[1975] = 211
    path = tmp_path / "corrupt_rle.dcm"
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="RLE") as info:
        read_radiograph(path)
    assert str(path) in str(info.value)
