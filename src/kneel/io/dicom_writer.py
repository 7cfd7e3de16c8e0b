"""Writing grey-level radiographs as DICOM files (DX or CR), uncompressed or losslessly compressed.

Used by the synthetic generator and by tests that need real DICOM files with a known spacing, photometric
interpretation, bit depth and transfer syntax. The file is complete and standard: file meta information, patient,
study, series and image modules, the spacing in ``ImagerPixelSpacing`` and/or ``PixelSpacing``. Nothing depends on
the clock: with ``sop_instance_uid`` (and ``study_instance_uid``/``series_instance_uid`` in ``extra``) given, the
same call writes the same bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from kneel.errors import KneelError
from kneel.io.atomic import atomic_write_bytes

__all__ = ["write_dicom", "encode_dicom", "COMPRESSIONS", "SOP_CLASSES", "DicomWriteError"]

SOP_CLASSES: dict[str, str] = {
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
}
COMPRESSIONS: dict[str, UID] = {
    "none": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg-ls": JPEGLSLossless,
}
"""Accepted ``compression`` values and their transfer syntaxes (all lossless). ``jpeg-ls`` needs pyjpegls."""

_SPACING_TAGS = ("ImagerPixelSpacing", "PixelSpacing")


class DicomWriteError(KneelError):
    """A DICOM file cannot be written: bad arguments or no encoder for the requested compression."""


def write_dicom(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    spacing: Sequence[float],
    spacing_tags: Sequence[str] = ("ImagerPixelSpacing",),
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    compression: str = "none",
    modality: str = "DX",
    patient_id: str = "ANONYMOUS",
    sop_instance_uid: str | None = None,
    laterality: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``pixels`` (uint8 or uint16, HxW) as a DICOM file, atomically.

    Args:
        path: Destination (any name; OAI-style files have no extension).
        pixels: Stored values exactly as they should appear in the file (for ``MONOCHROME1`` bone is dark).
        spacing: ``(row_mm, col_mm)`` written to every tag in ``spacing_tags`` as ``[row, col]``.
        spacing_tags: ``ImagerPixelSpacing``, ``PixelSpacing`` or both (empty: no spacing, for error tests).
        photometric: ``MONOCHROME2`` (high = bright) or ``MONOCHROME1`` (high = dark).
        bits_stored: 8-16; defaults to the dtype's width. Values must fit in it.
        compression: ``none``, ``rle``, ``jpeg2000`` or ``jpeg-ls`` (lossless; see ``COMPRESSIONS``).
        modality: ``DX`` or ``CR`` (sets the SOP class).
        patient_id: PatientID (also used as PatientName).
        sop_instance_uid: SOPInstanceUID; a random one when None (pass one for reproducible files).
        laterality: ImageLaterality (``R``, ``L``, ``B`` for both, ``U``) or None.
        extra: More attributes by keyword (e.g. ``StudyInstanceUID``, ``SeriesDescription``, ``ViewPosition``).
    """
    data = encode_dicom(
        pixels,
        spacing=spacing,
        spacing_tags=spacing_tags,
        photometric=photometric,
        bits_stored=bits_stored,
        compression=compression,
        modality=modality,
        patient_id=patient_id,
        sop_instance_uid=sop_instance_uid,
        laterality=laterality,
        extra=extra,
        path=path,
    )
    atomic_write_bytes(path, data)


def encode_dicom(
    pixels: np.ndarray,
    *,
    spacing: Sequence[float],
    spacing_tags: Sequence[str] = ("ImagerPixelSpacing",),
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    compression: str = "none",
    modality: str = "DX",
    patient_id: str = "ANONYMOUS",
    sop_instance_uid: str | None = None,
    laterality: str | None = None,
    extra: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> bytes:
    """The bytes of the DICOM file ``write_dicom`` would write (same arguments)."""
    arr = np.ascontiguousarray(pixels)
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise DicomWriteError(f"pixels must be a 2-D uint8 or uint16 array, got {arr.dtype} {arr.shape}", path)
    bits_allocated = 8 * arr.dtype.itemsize
    bits = bits_allocated if bits_stored is None else int(bits_stored)
    if not 8 <= bits <= bits_allocated:
        raise DicomWriteError(f"bits_stored {bits} does not fit {arr.dtype}", path)
    if arr.size and int(arr.max()) >= 2**bits:
        raise DicomWriteError(f"pixel value {int(arr.max())} does not fit in {bits} stored bits", path)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomWriteError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}", path)
    if modality not in SOP_CLASSES:
        raise DicomWriteError(f"modality must be one of {sorted(SOP_CLASSES)}, not {modality!r}", path)
    if compression not in COMPRESSIONS:
        raise DicomWriteError(f"compression must be one of {sorted(COMPRESSIONS)}, not {compression!r}", path)
    row_mm, col_mm = (float(v) for v in spacing)
    if not (row_mm > 0 and col_mm > 0):
        raise DicomWriteError(f"spacing must be positive, got {spacing!r}", path)
    unknown = [t for t in spacing_tags if t not in _SPACING_TAGS]
    if unknown:
        raise DicomWriteError(f"unknown spacing tags {unknown}; use {_SPACING_TAGS}", path)

    sop_uid = sop_instance_uid or generate_uid()
    sop_class = SOP_CLASSES[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    meta.ImplementationVersionName = "KNEEL_SYNTH_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientID = str(patient_id)
    ds.PatientName = str(patient_id)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[sop_uid, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[sop_uid, "series"])
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "KNEE"
    ds.ViewPosition = "PA"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if laterality is not None:
        ds.ImageLaterality = laterality
    for tag in spacing_tags:
        setattr(ds, tag, [_ds_number(row_mm), _ds_number(col_mm)])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(v) for v in arr.shape)
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    if compression == "none":
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    else:
        try:
            ds.compress(COMPRESSIONS[compression], arr, generate_instance_uid=False)
        except Exception as exc:  # the encoder plugins raise many types; report one
            raise DicomWriteError(f"cannot encode as {compression}: {exc}", path) from exc
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _ds_number(value: float) -> str:
    """A Decimal String of at most 16 characters that reads back as (nearly) the same float."""
    text = repr(float(value))
    if len(text) > 16:
        text = f"{value:.10g}"
    return text
