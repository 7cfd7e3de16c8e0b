"""Fixtures for kneel.io tests: DICOM files written with pydicom into tmp_path, and pydicom's own test files.

Everything lives here (no helper module) so the tests work with pytest's default and ``importlib`` import modes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


def find_pydicom_file(name: str) -> Path:
    """A file from pydicom's test data or the pydicom-data package, never downloaded (tests run offline)."""
    found = pydicom.data.get_testdata_file(name, download=False)
    if found is None:
        pytest.skip(f"pydicom test file {name} is not installed (pydicom-data)")
    return Path(str(found))


def build_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    imager_spacing: Any = None,
    pixel_spacing: Any = None,
    slope: float | None = None,
    intercept: float | None = None,
    samples_per_pixel: int = 1,
    frames: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """An uncompressed DX data set holding ``pixels`` exactly (int8..uint16; RGB as (H, W, 3); frames as (F, H, W)).

    A spacing given as ``bytes`` is written verbatim (so invalid text like ``b"abc\\\\1"`` reaches the file).
    """
    arr = np.ascontiguousarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "TEST001"
    ds.ImageLaterality = "B"
    ds.ViewPosition = "PA"
    ds.SamplesPerPixel = samples_per_pixel
    ds.PhotometricInterpretation = photometric
    if samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = arr.shape[-3:-1] if samples_per_pixel > 1 else arr.shape[-2:]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for keyword, value in (("ImagerPixelSpacing", imager_spacing), ("PixelSpacing", pixel_spacing)):
        if value is None:
            continue
        if isinstance(value, bytes):
            tag = Tag(keyword)
            padded = value if len(value) % 2 == 0 else value + b" "
            ds[tag] = RawDataElement(tag, "DS", len(padded), padded, 0, False, True)  # type: ignore[assignment]
        else:
            setattr(ds, keyword, [str(v) for v in value])
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = arr.tobytes()
    return ds


@pytest.fixture
def make_dicom(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_dicom(pixels, name="x.dcm", transfer_syntax=None, preamble=True, **build_dataset kwargs)``."""

    def make(
        pixels: np.ndarray,
        name: str = "image.dcm",
        *,
        transfer_syntax: str | None = None,
        preamble: bool = True,
        **kwargs: Any,
    ) -> Path:
        ds = build_dataset(pixels, **kwargs)
        if transfer_syntax is not None:
            ds.compress(transfer_syntax, np.ascontiguousarray(pixels))
        path = tmp_path / name
        if preamble:
            ds.save_as(path, enforce_file_format=True)
        else:
            # A bare data set: no 128-byte preamble, no 'DICM', no file meta (as some old archives hold).
            del ds.file_meta
            ds.save_as(path, implicit_vr=False, little_endian=True)
        return path

    return make


@pytest.fixture(scope="session")
def pydicom_file() -> Callable[[str], Path]:
    """Factory: the path of a pydicom / pydicom-data test file by name (offline; skips if not installed)."""
    return find_pydicom_file
