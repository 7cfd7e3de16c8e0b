"""kneel.io.dicom_writer: what it writes reads back exactly with kneel.io.read_radiograph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kneel.io import read_radiograph
from kneel.io.dicom_writer import DicomWriteError, encode_dicom, write_dicom


@pytest.fixture()
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((96, 128), dtype=np.uint16)
    img[20:70, 30:100] = 3000
    return img + rng.integers(0, 200, img.shape, dtype=np.uint16)


@pytest.mark.parametrize("compression", ["none", "rle", "jpeg2000"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_round_trip(tmp_path: Path, pixels: np.ndarray, compression: str, photometric: str) -> None:
    path = tmp_path / "x.dcm"
    write_dicom(
        path,
        pixels,
        spacing=(0.15, 0.1503),
        spacing_tags=("PixelSpacing",),
        photometric=photometric,
        bits_stored=12,
        compression=compression,
        modality="CR",
        patient_id="9000001",
        sop_instance_uid="1.2.3.4",
        laterality="B",
    )
    rg = read_radiograph(path)
    assert rg.spacing == (0.15, 0.1503) and rg.spacing_source == "PixelSpacing"
    expected = pixels if photometric == "MONOCHROME2" else 4095 - pixels
    np.testing.assert_array_equal(rg.image, expected.astype(np.float32))
    assert rg.meta.bits_stored == 12 and rg.meta.modality == "CR" and rg.meta.sop_instance_uid == "1.2.3.4"


def test_both_spacing_tags_and_determinism(pixels: np.ndarray) -> None:
    kwargs = dict(spacing=(0.102, 0.102), spacing_tags=("ImagerPixelSpacing", "PixelSpacing"), sop_instance_uid="1.2.3")
    assert encode_dicom(pixels, **kwargs) == encode_dicom(pixels, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits_stored": 10},  # 3000 + noise does not fit in 10 bits
        {"photometric": "RGB"},
        {"modality": "MR"},
        {"compression": "lzw"},
        {"spacing": (0.0, 0.1)},
        {"spacing_tags": ("SliceThickness",)},
    ],
)
def test_bad_arguments(pixels: np.ndarray, kwargs: dict) -> None:
    args = {"spacing": (0.15, 0.15), **kwargs}
    with pytest.raises(DicomWriteError):
        encode_dicom(pixels, **args)
