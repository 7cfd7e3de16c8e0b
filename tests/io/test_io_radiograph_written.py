"""read_radiograph on DICOM files written here with pydicom: photometry, bit depth, spacing tags, rescale,
compression, and every kind of broken file."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from kneel.errors import KneelError
from kneel.io import (
    DecodeError,
    InvalidSpacingError,
    MissingPixelDataError,
    MissingSpacingError,
    NotDicomError,
    RadiographError,
    SpacingError,
    TruncatedFileError,
    UnsupportedImageError,
    read_radiograph,
)

RNG = np.random.default_rng(1234)


def ramp(dtype: type, bits: int, shape: tuple[int, int] = (24, 40), signed: bool = False) -> np.ndarray:
    """Values spanning the whole storable range (both extremes present), in a non-trivial layout."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = RNG.integers(lo, hi + 1, size=shape, dtype=np.int64)
    values.flat[0], values.flat[-1] = lo, hi
    return values.astype(dtype)


# ---------------------------------------------------------------------------------------------------------------
# photometry and bit depth


@pytest.mark.parametrize(
    ("dtype", "bits", "signed"),
    [
        (np.uint8, 8, False),
        (np.uint16, 12, False),
        (np.uint16, 16, False),
        (np.int16, 12, True),
        (np.int16, 16, True),
    ],
)
def test_monochrome2_values_exact(make_dicom, dtype, bits, signed):
    pixels = ramp(dtype, bits, signed=signed)
    path = make_dicom(pixels, bits_stored=bits, imager_spacing=(0.15, 0.15))
    rg = read_radiograph(path)
    assert rg.image.dtype == np.float32
    assert rg.image.shape == pixels.shape
    np.testing.assert_array_equal(rg.image, pixels.astype(np.float32))
    assert rg.meta.bits_stored == bits
    assert rg.meta.pixel_representation == int(signed)
    assert rg.meta.photometric_interpretation == "MONOCHROME2"
    assert not rg.meta.inverted


@pytest.mark.parametrize(
    ("dtype", "bits", "signed"),
    [(np.uint8, 8, False), (np.uint16, 12, False), (np.uint16, 16, False), (np.int16, 16, True)],
)
def test_monochrome1_inverted_within_storable_range(make_dicom, dtype, bits, signed):
    pixels = ramp(dtype, bits, signed=signed)
    path = make_dicom(pixels, photometric="MONOCHROME1", bits_stored=bits, imager_spacing=(0.15, 0.15))
    rg = read_radiograph(path)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    np.testing.assert_array_equal(rg.image, (lo + hi - pixels.astype(np.float64)).astype(np.float32))
    assert rg.meta.inverted
    # bright stays bright: the darkest stored value (most attenuation in MONOCHROME1) becomes the maximum
    assert rg.image.flat[0] == hi and rg.image.flat[-1] == lo


def test_monochrome1_and_2_of_the_same_scene_agree(make_dicom):
    bone_bright = ramp(np.uint16, 12)
    m2 = read_radiograph(make_dicom(bone_bright, "m2.dcm", bits_stored=12, imager_spacing=(0.2, 0.2)))
    m1 = read_radiograph(
        make_dicom(4095 - bone_bright, "m1.dcm", photometric="MONOCHROME1", bits_stored=12, imager_spacing=(0.2, 0.2))
    )
    np.testing.assert_array_equal(m1.image, m2.image)


def test_rescale_slope_intercept_applied(make_dicom):
    pixels = ramp(np.uint16, 12)
    path = make_dicom(pixels, bits_stored=12, imager_spacing=(0.1, 0.1), slope=0.5, intercept=-100)
    rg = read_radiograph(path)
    np.testing.assert_allclose(rg.image, pixels * 0.5 - 100, rtol=0, atol=1e-4)
    assert rg.meta.rescale_slope == 0.5 and rg.meta.rescale_intercept == -100


def test_rescale_then_monochrome1_inversion(make_dicom):
    pixels = ramp(np.uint16, 10)
    path = make_dicom(
        pixels, photometric="MONOCHROME1", bits_stored=10, imager_spacing=(0.1, 0.1), slope=2.0, intercept=10
    )
    rg = read_radiograph(path)
    # modality range [10, 2*1023+10]; reflected: v -> 10 + 2056 - v
    np.testing.assert_allclose(rg.image, 10 + (2 * 1023 + 10) - (2.0 * pixels + 10), atol=1e-4)


def test_window_is_stored_not_applied(make_dicom):
    pixels = ramp(np.uint16, 12)
    path = make_dicom(
        pixels, bits_stored=12, imager_spacing=(0.1, 0.1), extra={"WindowCenter": "2048", "WindowWidth": "1000"}
    )
    rg = read_radiograph(path)
    assert rg.meta.window_center == 2048.0 and rg.meta.window_width == 1000.0
    np.testing.assert_array_equal(rg.image, pixels.astype(np.float32))


def test_metadata(make_dicom):
    path = make_dicom(
        ramp(np.uint16, 12),
        bits_stored=12,
        imager_spacing=(0.1, 0.1),
        extra={"PatientID": "9000798", "ViewPosition": "PA", "ImageLaterality": "L"},
    )
    rg = read_radiograph(path)
    m = rg.meta
    assert (m.rows, m.columns) == (24, 40)
    assert m.patient_id == "9000798" and m.view_position == "PA" and m.laterality == "L" and m.modality == "DX"
    assert m.transfer_syntax_uid == "1.2.840.10008.1.2.1" and m.transfer_syntax_name == "Explicit VR Little Endian"
    assert m.sop_instance_uid and m.file_size == path.stat().st_size and m.file_format == "dicom"
    assert rg.path == path


# ---------------------------------------------------------------------------------------------------------------
# spacing


@pytest.mark.parametrize(
    ("imager", "pixel", "expected", "source"),
    [
        ((0.15, 0.15), None, (0.15, 0.15), "ImagerPixelSpacing"),
        (None, (0.17, 0.17), (0.17, 0.17), "PixelSpacing"),
        ((0.1, 0.1), (0.2, 0.2), (0.1, 0.1), "ImagerPixelSpacing"),
        ((0.1, 0.125), None, (0.1, 0.125), "ImagerPixelSpacing"),
        (None, (0.143, 0.0997), (0.143, 0.0997), "PixelSpacing"),
        (b"0\\0", (0.2, 0.3), (0.2, 0.3), "PixelSpacing"),  # unusable first choice: the other tag
    ],
)
def test_spacing_tags(make_dicom, imager, pixel, expected, source):
    path = make_dicom(ramp(np.uint8, 8), imager_spacing=imager, pixel_spacing=pixel)
    rg = read_radiograph(path)
    assert rg.spacing == expected  # exact, anisotropy kept (row, col)
    assert rg.spacing_source == source
    assert rg.meta.file_spacing == expected


@pytest.mark.parametrize(
    ("imager", "pixel", "error", "tag", "words"),
    [
        (None, b"0.000\\0.000", InvalidSpacingError, "PixelSpacing", "zero"),
        (b"-0.1\\0.1", None, InvalidSpacingError, "ImagerPixelSpacing", "negative"),
        (None, b"abc\\0.1", InvalidSpacingError, "PixelSpacing", "not a number"),
        (b"0.1\\0.1\\0.1", None, InvalidSpacingError, "ImagerPixelSpacing", "1 or 2 values"),
        (b"nan\\nan", None, InvalidSpacingError, "ImagerPixelSpacing", "not finite"),
        (None, None, MissingSpacingError, "ImagerPixelSpacing/PixelSpacing", "no pixel spacing"),
        (b"", None, MissingSpacingError, "ImagerPixelSpacing", "empty"),
    ],
)
def test_bad_spacing_is_a_clear_error_unless_overridden(make_dicom, imager, pixel, error, tag, words):
    path = make_dicom(ramp(np.uint8, 8), imager_spacing=imager, pixel_spacing=pixel)
    with pytest.raises(error) as info:
        read_radiograph(path)
    exc = info.value
    assert isinstance(exc, SpacingError) and isinstance(exc, RadiographError) and isinstance(exc, KneelError)
    assert exc.tag == tag and exc.path == path
    assert words in exc.reason and "spacing=" in exc.reason
    assert str(path) in str(exc)
    # the override always wins and remembers why the file's own value was unusable
    rg = read_radiograph(path, spacing=(0.12, 0.14))
    assert rg.spacing == (0.12, 0.14) and rg.spacing_source == "override"
    assert rg.meta.file_spacing is None and words in rg.meta.file_spacing_error


def test_single_spacing_value_means_square_pixels(make_dicom):
    path = make_dicom(ramp(np.uint8, 8), pixel_spacing=b"0.2")
    assert read_radiograph(path).spacing == (0.2, 0.2)


@pytest.mark.parametrize("override", [0.25, (0.25, 0.25), [0.25, 0.3], "0.25\\0.3"])
def test_override_wins_over_valid_tags(make_dicom, override):
    path = make_dicom(ramp(np.uint8, 8), imager_spacing=(0.1, 0.1), pixel_spacing=(0.2, 0.2))
    rg = read_radiograph(path, spacing=override)
    assert rg.spacing_source == "override"
    assert rg.spacing[0] == 0.25 and rg.spacing[1] in (0.25, 0.3)
    assert rg.meta.file_spacing == (0.1, 0.1) and rg.meta.file_spacing_source == "ImagerPixelSpacing"


@pytest.mark.parametrize("override", [0, -0.1, (0.1, 0.0), float("nan"), (0.1, 0.1, 0.1), "x"])
def test_invalid_override_rejected(make_dicom, override):
    path = make_dicom(ramp(np.uint8, 8), imager_spacing=(0.1, 0.1))
    with pytest.raises(InvalidSpacingError):
        read_radiograph(path, spacing=override)


# ---------------------------------------------------------------------------------------------------------------
# file naming, preamble, compression


def test_dicom_without_extension_and_without_preamble(make_dicom):
    pixels = ramp(np.uint16, 12)
    named = read_radiograph(make_dicom(pixels, "001", bits_stored=12, imager_spacing=(0.1, 0.1)))
    bare_path = make_dicom(pixels, "bare", preamble=False, bits_stored=12, imager_spacing=(0.1, 0.1))
    assert bare_path.read_bytes()[128:132] != b"DICM"
    bare = read_radiograph(bare_path)
    np.testing.assert_array_equal(named.image, pixels.astype(np.float32))
    np.testing.assert_array_equal(bare.image, named.image)
    assert bare.spacing == (0.1, 0.1)
    assert bare.meta.transfer_syntax_name == "Explicit VR Little Endian"  # as parsed: the file does not say


@pytest.mark.parametrize(
    ("syntax", "dtype", "bits"),
    [
        (RLELossless, np.uint16, 12),
        (RLELossless, np.uint8, 8),
        (RLELossless, np.int16, 16),
        (JPEG2000Lossless, np.uint16, 12),
        (JPEG2000Lossless, np.uint16, 16),
        (JPEG2000Lossless, np.uint8, 8),
    ],
)
def test_lossless_compression_decodes_to_identical_pixels(make_dicom, syntax, dtype, bits):
    # JPEG-LS is not here: pydicom needs pyjpegls to encode it; decoding is tested on pydicom's JPEG-LS files.
    pixels = ramp(dtype, bits, shape=(64, 48), signed=dtype is np.int16)  # J2K needs >= 32 px per side
    path = make_dicom(pixels, transfer_syntax=syntax, bits_stored=bits, imager_spacing=(0.1, 0.1))
    rg = read_radiograph(path)
    assert rg.meta.transfer_syntax_uid == syntax
    np.testing.assert_array_equal(rg.image, pixels.astype(np.float32))


def test_jpeg_baseline_grey(make_dicom):
    """8-bit JPEG baseline (process 1) written by OpenCV's encoder and encapsulated by pydicom."""
    import cv2
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    yy, xx = np.mgrid[0:64, 0:80]
    pixels = (128 + 100 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.uint8)
    ok, stream = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    path = make_dicom(pixels, imager_spacing=(0.1, 0.1))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([stream.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    rg = read_radiograph(path)
    assert rg.meta.transfer_syntax_uid == JPEGBaseline8Bit
    reference = cv2.imdecode(stream, cv2.IMREAD_UNCHANGED).astype(np.float32)
    assert np.abs(rg.image - reference).max() <= 2  # decoders may round differently; lossy vs the original:
    assert np.abs(rg.image - pixels.astype(np.float32)).mean() < 2


# ---------------------------------------------------------------------------------------------------------------
# broken and unsupported files


def test_truncated_uncompressed(make_dicom):
    path = make_dicom(ramp(np.uint16, 12, shape=(64, 64)), bits_stored=12, imager_spacing=(0.1, 0.1))
    data = path.read_bytes()
    for cut in (len(data) - 1000, len(data) - 1, 600, 300):
        path.write_bytes(data[:cut])
        with pytest.raises(TruncatedFileError) as info:
            read_radiograph(path)
        assert str(path) in str(info.value)


def test_truncated_compressed(make_dicom):
    pixels = ramp(np.uint16, 12, shape=(64, 64))
    path = make_dicom(pixels, transfer_syntax=RLELossless, bits_stored=12, imager_spacing=(0.1, 0.1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    with pytest.raises(TruncatedFileError):
        read_radiograph(path)


def test_corrupt_compressed_stream_is_a_decode_error(make_dicom):
    pixels = ramp(np.uint16, 12, shape=(64, 64))
    path = make_dicom(pixels, transfer_syntax=JPEG2000Lossless, bits_stored=12, imager_spacing=(0.1, 0.1))
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")  # JPEG 2000 codestream start (SOC, SIZ)
    assert start > 0
    data[start : start + 40] = b"\x00" * 40  # same length: the file is complete, the codestream is not
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError) as info:
        read_radiograph(path)
    assert "JPEG 2000" in info.value.reason


def test_not_dicom(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not an image\n" * 20)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path in (text, empty, noise):
        with pytest.raises(NotDicomError) as info:
            read_radiograph(path)
        assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(NotDicomError, match="not found"):
        read_radiograph(tmp_path / "nope.dcm")
    with pytest.raises(NotDicomError, match="folder"):
        read_radiograph(tmp_path)


def test_no_pixel_data(make_dicom):
    import pydicom

    path = make_dicom(ramp(np.uint8, 8), imager_spacing=(0.1, 0.1))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(MissingPixelDataError):
        read_radiograph(path)


def test_rgb_rejected(make_dicom):
    rgb = RNG.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    path = make_dicom(rgb, photometric="RGB", samples_per_pixel=3, imager_spacing=(0.1, 0.1))
    with pytest.raises(UnsupportedImageError, match="RGB"):
        read_radiograph(path)


def test_multiframe_rejected(make_dicom):
    frames = RNG.integers(0, 4096, size=(3, 16, 20), dtype=np.uint16)
    path = make_dicom(frames, frames=3, bits_stored=12, imager_spacing=(0.1, 0.1))
    with pytest.raises(UnsupportedImageError, match="3 frames"):
        read_radiograph(path, spacing=0.1)


def test_errors_are_one_line():
    # the CLI prints str(exc): no newline even when a library message had one
    from kneel.io.radiograph import _short

    assert "\n" not in _short(ValueError("a\nb  c"))


def test_bits_above_bits_stored_are_ignored(make_dicom):
    # 12 bits stored in 16 allocated: anything in the top 4 bits (old overlay planes) is not part of the value
    stored = np.array([[0xF123, 0x0FFF], [0x1000, 5]], dtype=np.uint16)
    rg = read_radiograph(make_dicom(stored, bits_stored=12, imager_spacing=(0.1, 0.1)))
    np.testing.assert_array_equal(rg.image, [[0x123, 4095], [0, 5]])
    signed = np.array([[0xF800, 0x07FF], [0x0FFF, 5]], dtype=np.uint16).view(np.int16)  # 12-bit two's complement
    rg = read_radiograph(make_dicom(signed, "s.dcm", bits_stored=12, imager_spacing=(0.1, 0.1)))
    np.testing.assert_array_equal(rg.image, [[-2048, 2047], [-1, 5]])


@pytest.mark.parametrize(
    ("dtype", "bits", "signed", "photometric", "rescale"),
    [
        (np.uint8, 8, False, "MONOCHROME2", None),
        (np.uint16, 12, False, "MONOCHROME1", None),
        (np.uint16, 16, False, "MONOCHROME1", (1.0, 0.0)),
        (np.uint16, 12, False, "MONOCHROME2", (1.0, -1024.0)),
        (np.int16, 16, True, "MONOCHROME1", (1.0, 7.0)),
        (np.int16, 12, True, "MONOCHROME2", (0.5, -3.0)),  # not integer-valued: the general path
    ],
)
def test_integer_shortcut_equals_general_modality_path(make_dicom, dtype, bits, signed, photometric, rescale):
    """The float64-free shortcut for integer pixels gives exactly what the general modality-LUT path gives."""
    import pydicom

    from kneel.io.radiograph import _integer_bone_bright, _to_float_bone_bright

    pixels = ramp(dtype, bits, signed=signed)
    kwargs = {} if rescale is None else {"slope": rescale[0], "intercept": rescale[1]}
    path = make_dicom(pixels, photometric=photometric, bits_stored=bits, imager_spacing=(0.1, 0.1), **kwargs)
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    fast, fast_inverted = _to_float_bone_bright(stored, ds, path)
    general, general_inverted = _to_float_bone_bright(stored, ds, path, fast=False)
    assert fast.dtype == general.dtype == np.float32
    np.testing.assert_array_equal(fast, general)
    assert fast_inverted == general_inverted == (photometric == "MONOCHROME1")
    shortcut = _integer_bone_bright(stored, ds, fast_inverted)
    assert (shortcut is None) == (rescale is not None and rescale[0] != 1.0)
