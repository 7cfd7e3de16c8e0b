"""Reading knee radiographs: DICOM (any common transfer syntax) or PNG/TIFF/JPEG with an explicit spacing.

``read_radiograph`` returns a ``Radiograph``: the image as float32 with bone bright, the pixel spacing in mm as
``(row_mm, col_mm)`` (anisotropic spacing kept exact) and where that spacing came from, plus the metadata later
stages and reports need. Every way a file can be unusable raises a typed ``RadiographError`` (see
``kneel.io.errors``) naming the file and the cause; no exception from pydicom, OpenCV or numpy escapes.

Intensity handling (DICOM):

1. Pixels are decoded by pydicom (with the pylibjpeg plugins: uncompressed, RLE, JPEG baseline/extended/lossless,
   JPEG-LS, JPEG 2000).
2. The modality LUT is applied: RescaleSlope/RescaleIntercept (or a Modality LUT Sequence), so values are in the
   modality's units.
3. ``MONOCHROME1`` (bright = low values) is inverted so that bone is bright, by reflecting every value within the
   range the stored bits can represent: ``v -> lo + hi - v`` with ``lo``/``hi`` the modality-LUT images of the
   smallest and largest storable values (for unsigned data without rescale: ``(2**BitsStored - 1) - v``). The
   result stays in the same range and does not depend on the image content (the reference used ``max(img) - img``).
4. The VOI LUT (WindowCenter/WindowWidth or a VOI LUT Sequence) is **not** applied: the window is stored in
   ``meta.window_center``/``meta.window_width`` for display only. kneel's own intensity normalisation is
   ``normalize_intensity`` (the reference's 5th-99th percentile windowing), applied by the later stages.

Spacing: ``ImagerPixelSpacing`` first (the reference's choice; detector pitch), then ``PixelSpacing``; if the first
tag present is unusable (zero, negative, unparsable) the other one is used when it is valid, otherwise the error
names the tag. An explicit ``spacing=`` (a float, or ``(row_mm, col_mm)``) always wins and is recorded as
``"override"``; the file's own spacing (or why it was unusable) stays in ``meta.file_spacing``/``file_spacing_error``.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneel.errors import option
from kneel.io.errors import (
    DecodeError,
    InvalidSpacingError,
    MissingPixelDataError,
    MissingSpacingError,
    NotDicomError,
    SpacingError,
    TruncatedFileError,
    UnsupportedImageError,
)
from kneel.io.limits import check_size, spacing_problem

__all__ = [
    "Radiograph",
    "RadiographMeta",
    "read_radiograph",
    "quiet_reader_warnings",
    "special_file",
    "normalize_intensity",
    "parse_spacing",
    "SPACING_TAGS",
    "IMAGE_SUFFIXES",
]

SPACING_TAGS: tuple[str, ...] = ("ImagerPixelSpacing", "PixelSpacing")
"""DICOM spacing attributes in order of preference."""

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""Plain image formats accepted when ``spacing=`` is given (recognised by content, not only by suffix)."""

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GREY = ("MONOCHROME1", "MONOCHROME2")
# Interpreter-level exceptions are never turned into "bad file" errors (PanicException from Rust codecs is).
_NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)
# A force-read file counts as DICOM only if pydicom found at least one of these (garbage parses as random tags).
_DICOM_EVIDENCE = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality", "Rows", "PixelData")


@dataclass(frozen=True)
class RadiographMeta:
    """What the file says about the image (``None`` where the file does not say).

    Attributes:
        rows, columns: Image size in pixels.
        bits_stored: Bits per pixel actually used (DICOM BitsStored; 8 or 16 for plain images).
        photometric_interpretation: ``MONOCHROME1``/``MONOCHROME2`` (plain images report ``MONOCHROME2``).
        transfer_syntax_uid, transfer_syntax_name: DICOM transfer syntax (``None`` for plain images).
        modality: DICOM Modality (DX, CR, ...).
        body_part: DICOM BodyPartExamined (KNEE, LEG, ...).
        laterality: ImageLaterality, else Laterality (``R``/``L``/``B``...).
        view_position: ViewPosition (PA, AP, ...).
        sop_instance_uid, patient_id: Identifiers, carried into prediction tables.
        file_format: ``"dicom"``, ``"png"``, ``"tiff"`` or ``"jpeg"``.
        file_size: Size of the file in bytes.
        pixel_representation: 0 unsigned, 1 signed (DICOM).
        rescale_slope, rescale_intercept: The modality rescale applied (1, 0 when absent).
        window_center, window_width: First VOI window of the file (stored, never applied).
        inverted: Whether the image was inverted (MONOCHROME1).
        file_spacing: The spacing the file itself gives, ``(row_mm, col_mm)``, or ``None``.
        file_spacing_source: The tag ``file_spacing`` came from.
        file_spacing_error: Why the file's spacing is unusable (when an override made it irrelevant).
    """

    rows: int
    columns: int
    bits_stored: int | None = None
    photometric_interpretation: str = "MONOCHROME2"
    transfer_syntax_uid: str | None = None
    transfer_syntax_name: str | None = None
    modality: str | None = None
    body_part: str | None = None
    laterality: str | None = None
    view_position: str | None = None
    sop_instance_uid: str | None = None
    patient_id: str | None = None
    file_format: str = "dicom"
    file_size: int = 0
    pixel_representation: int | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window_center: float | None = None
    window_width: float | None = None
    inverted: bool = False
    file_spacing: tuple[float, float] | None = None
    file_spacing_source: str | None = None
    file_spacing_error: str | None = None


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One radiograph ready for kneel (compared by identity: it holds an array).

    Attributes:
        image: float32 array (rows, columns), bone bright, in modality units (not windowed).
        spacing: Pixel spacing in mm, ``(row_mm, col_mm)``, exact (anisotropic spacing is kept).
        spacing_source: ``"ImagerPixelSpacing"``, ``"PixelSpacing"`` or ``"override"``.
        path: The file read.
        meta: Metadata (see ``RadiographMeta``).
    """

    image: np.ndarray
    spacing: tuple[float, float]
    spacing_source: str
    path: Path
    meta: RadiographMeta

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)``."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def size_mm(self) -> tuple[float, float]:
        """Physical size ``(height_mm, width_mm)``."""
        return (self.image.shape[0] * self.spacing[0], self.image.shape[1] * self.spacing[1])


# ----------------------------------------------------------------------------------------------------------------
# public functions


def read_radiograph(path: str | os.PathLike[str], spacing: float | Sequence[float] | None = None) -> Radiograph:
    """Read a DICOM file (with or without ``.dcm`` suffix or preamble) or a PNG/TIFF/JPEG image.

    Args:
        path: The file. DICOM is recognised by its ``DICM`` marker (or, without preamble, by its first tag); plain
            images by their magic bytes.
        spacing: Pixel spacing override in mm: one number (square pixels) or ``(row_mm, col_mm)``. Always wins over
            the file's tags; required for plain images.

    Returns:
        The radiograph (float32 image with bone bright, spacing, metadata).

    Raises:
        RadiographError: A subclass naming the file and the cause (see ``kneel.io.errors``).
    """
    path = Path(path)
    override = None if spacing is None else parse_spacing(spacing, path=path, tag="spacing=")
    head = _read_head(path)
    kind = _sniff(head)
    if kind in ("png", "tiff", "jpeg"):
        return _read_plain_image(path, kind, override)
    # DICOM with preamble, or possibly a preamble-less data set: pydicom's force read, then a sanity check.
    return _read_dicom(path, override, force=kind != "dicom")


def quiet_reader_warnings() -> None:
    """Hide, for the rest of this process, the warnings pydicom gives about odd values while kneel reads files.

    The typed errors say what matters; the rest is noise in a batch run or a server log. kneel's own entry points
    (the ``kneel`` command, its DataLoader workers, ``kneel serve``) call this once at start-up: the warning filters
    are global state, which a reader running in many threads at once must never change per call.
    """
    for module in (r"pydicom(\..*)?$", r"kneel\.io\.radiograph$"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


def normalize_intensity(image: np.ndarray, low: float = 5.0, high: float = 99.0) -> np.ndarray:
    """Window an image to uint8 like the reference: clip to the ``low``-``high`` percentiles, scale to 0-255.

    ``out = floor((clip(x, p_low, p_high) - p_low) / (p_high - p_low) * 255)`` (the reference truncates with
    ``astype(uint8)``, so does this). Percentiles are taken over the whole image, ignoring NaN. A flat image (``p_high
    == p_low``) gives zeros.

    Args:
        image: 2-D array (any real dtype), bone bright.
        low, high: Percentiles (0-100) mapped to 0 and 255.

    Returns:
        uint8 array of the same shape.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    arr = np.asarray(image)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lut_result = _normalize_integer_valued(arr, low, high)
    if lut_result is not None:
        return lut_result
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = (float(v) for v in np.nanpercentile(arr, [low, high]))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return _window_values(arr, lo, hi)


def _window_values(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The reference's windowing of values to uint8 (float64, divide then multiply, so ``hi`` maps to 255)."""
    out = (np.clip(values, lo, hi) - lo) / (hi - lo) * 255.0
    out = np.nan_to_num(out, nan=0.0)
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


_MAX_LUT_RANGE = 1 << 20
_HISTOGRAM_ROWS_PIXELS = 1 << 23
"""Pixels per OpenCV histogram call: its float32 counts are exact below 2**24."""


def _normalize_integer_valued(arr: np.ndarray, low: float, high: float) -> np.ndarray | None:
    """Fast exact path for images holding integers over a modest range (every DICOM without fractional rescale).

    The percentiles come from a histogram (the same order statistics and linear interpolation as ``np.percentile``)
    and the windowing is a lookup table over the value range, so a 14-Mpixel film takes about 30 ms instead of a
    second. Ranges below 65536 values (16-bit films) go through 16-bit offsets and OpenCV's histogram, with no 64-bit
    temporaries (whose allocation alone costs tens of milliseconds per film). Returns None when the image is not
    integer-valued, so the caller takes the general path.
    """
    if arr.ndim != 2 or arr.dtype.kind not in "iuf":
        return _normalize_integer_valued_wide(arr, low, high)
    vmin, vmax = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not (np.isfinite(vmin) and np.isfinite(vmax) and float(vmin).is_integer()):
        return None
    vmin, vmax = int(vmin), int(vmax)
    if vmax - vmin >= 1 << 16:
        return _normalize_integer_valued_wide(arr, low, high)
    base = 0 if vmin >= 0 and vmax < 1 << 16 else vmin
    if base == 0:
        offset = arr if arr.dtype == np.uint16 else arr.astype(np.uint16)
    else:
        offset = np.subtract(arr, base, dtype=np.float64 if arr.dtype.kind == "f" else np.int64).astype(np.uint16)
    if arr.dtype.kind == "f":
        # Integer-valued exactly when the truncated offsets give the image back (one comparison pass).
        back = offset if base == 0 else offset.astype(np.float64) + base
        if not np.array_equal(back, arr):
            return None
    counts = _histogram_u16(offset)
    lut = _lut_from_histogram(counts, base, low, high)
    if lut is None:
        return np.zeros(arr.shape, dtype=np.uint8)
    return lut[offset]


def _histogram_u16(values: np.ndarray) -> np.ndarray:
    """Counts of each 16-bit value (65536 int64 bins); OpenCV's histogram in row chunks so its counts stay exact."""
    import cv2

    counts = np.zeros(1 << 16, dtype=np.int64)
    rows = max(1, _HISTOGRAM_ROWS_PIXELS // max(1, values.shape[1]))
    for start in range(0, values.shape[0], rows):
        chunk = np.ascontiguousarray(values[start : start + rows])
        counts += cv2.calcHist([chunk], [0], None, [1 << 16], [0, 1 << 16]).ravel().astype(np.int64)
    return counts


def _lut_from_histogram(counts: np.ndarray, base: int, low: float, high: float) -> np.ndarray | None:
    """The windowing as a lookup table over ``base + index``: percentiles from the histogram's order statistics,
    interpolated linearly as ``np.percentile`` does. None for a flat window (``p_high <= p_low``)."""
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def order_statistic(k: int) -> int:
        """The k-th smallest value (0-based)."""
        return int(np.searchsorted(cumulative, k, side="right")) + base

    def percentile(q: float) -> float:
        position = q / 100.0 * (n - 1)
        below = math.floor(position)
        frac = position - below
        v0 = order_statistic(below)
        v1 = order_statistic(min(below + 1, n - 1))
        return v0 + (v1 - v0) * frac

    lo, hi = percentile(low), percentile(high)
    if hi <= lo:
        return None
    return _window_values(np.arange(base, base + len(counts), dtype=np.float64), lo, hi)


def _normalize_integer_valued_wide(arr: np.ndarray, low: float, high: float) -> np.ndarray | None:
    """:func:`_normalize_integer_valued` for value ranges of 2**16 up to 2**20 (64-bit offsets, NumPy histogram)."""
    if arr.dtype.kind in "iu":
        ints = arr
    elif arr.dtype.kind == "f":
        # Cheap rejection on a sample first, then the exact check on the whole image.
        sample = arr.ravel()[:: max(1, arr.size // 4096)]
        if not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
            return None
        ints = arr.astype(np.int64)
        if not np.array_equal(ints, arr):
            return None
    else:
        return None
    vmin, vmax = int(ints.min()), int(ints.max())
    if vmax - vmin >= _MAX_LUT_RANGE:
        return None
    offset = (ints - vmin).astype(np.intp, copy=False).ravel()
    lut = _lut_from_histogram(np.bincount(offset, minlength=vmax - vmin + 1), vmin, low, high)
    if lut is None:
        return np.zeros(arr.shape, dtype=np.uint8)
    return lut[offset].reshape(arr.shape)


def parse_spacing(
    value: Any, *, path: str | os.PathLike[str] | None = None, tag: str | None = None
) -> tuple[float, float]:
    """Turn a spacing value (number, pair, DICOM multi-value or ``"r\\\\c"`` string) into ``(row_mm, col_mm)``.

    One value means square pixels. Raises ``InvalidSpacingError`` (naming ``tag``) for anything that is not one or
    two finite positive numbers within the plausible range (:data:`kneel.io.limits.MIN_SPACING_MM` to
    :data:`~kneel.io.limits.MAX_SPACING_MM`).
    """
    where = f"{tag} " if tag else "spacing "
    shown = _show(value)
    items: list[Any]
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, str):
        items = [part for part in value.strip().strip("\x00").split("\\")]
    elif isinstance(value, (int, float, np.integer, np.floating)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise InvalidSpacingError(f"{where}is not a number or a pair: {shown}", path, tag) from None
    if len(items) not in (1, 2):
        raise InvalidSpacingError(f"{where}must have 1 or 2 values (row, col), got {len(items)}: {shown}", path, tag)
    numbers = []
    for item in items:
        try:
            number = float(str(item).strip()) if isinstance(item, (str, bytes)) else float(item)
        except (TypeError, ValueError):
            raise InvalidSpacingError(f"{where}is not a number: {shown}", path, tag) from None
        if not math.isfinite(number):
            raise InvalidSpacingError(f"{where}is not finite: {shown}", path, tag)
        if number == 0.0:
            raise InvalidSpacingError(f"{where}is zero: {shown}", path, tag)
        if number < 0.0:
            raise InvalidSpacingError(f"{where}is negative: {shown}", path, tag)
        problem = spacing_problem(number)
        if problem is not None:
            raise InvalidSpacingError(f"{where}{shown}: {problem}", path, tag)
        numbers.append(number)
    row = numbers[0]
    col = numbers[1] if len(numbers) == 2 else numbers[0]
    return (row, col)


def _show(value: Any) -> str:
    """A spacing value as the file holds it: ``'0.000\\0.000'`` for text, ``[0.1, 0.2]`` for numbers."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, str):
        return f"'{value}'"
    try:
        return "[" + ", ".join(str(v) for v in value) + "]"
    except TypeError:
        return str(value)


# ----------------------------------------------------------------------------------------------------------------
# file type


def special_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` must never be opened as a radiograph, or None (a regular file, a folder, or nothing there).

    Opening a FIFO blocks until a writer comes, and a device such as ``/dev/zero`` never ends; links are followed.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: opening it fails at once, with its own message
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return "not a regular file (" + next((name for test, name in kinds if test(mode)), "a special file") + ")"


def _read_head(path: Path) -> bytes:
    special = special_file(path)
    if special is not None:
        raise NotDicomError(special, path)
    try:
        with open(path, "rb") as handle:
            return handle.read(132)
    except FileNotFoundError:
        raise NotDicomError("file not found", path) from None
    except IsADirectoryError:
        raise NotDicomError("is a folder, not a file", path) from None
    except OSError as exc:
        raise NotDicomError(f"cannot open the file: {exc.strerror or exc}", path) from None


def _sniff(head: bytes) -> str:
    """``dicom``, ``dicom-no-preamble``, ``png``, ``tiff``, ``jpeg`` or ``unknown``."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if len(head) >= 8:
        # A DICOM data set without preamble starts with a group 0002 (file meta) or 0008 (identifying) element,
        # little- or big-endian.
        group_le = int.from_bytes(head[0:2], "little")
        group_be = int.from_bytes(head[0:2], "big")
        if group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008):
            return "dicom-no-preamble"
    return "unknown"


# ----------------------------------------------------------------------------------------------------------------
# DICOM


def _read_dicom(path: Path, override: tuple[float, float] | None, *, force: bool) -> Radiograph:
    """Read a DICOM file. No global state is touched (no ``warnings.catch_warnings``, which is not thread-safe), so
    the HTTP service can read in many threads at once; pydicom's own warnings about odd values go to the warnings
    system as usual, and kneel's entry points hide them once per process (:func:`quiet_reader_warnings`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    file_size = path.stat().st_size
    try:
        ds = pydicom.dcmread(path, force=force)
    except InvalidDicomError as exc:
        raise NotDicomError(f"not a valid DICOM file ({_short(exc)})", path) from None
    except BaseException as exc:  # noqa: BLE001 - a force read of a non-DICOM file fails in arbitrary ways
        if isinstance(exc, _NEVER_CAUGHT):
            raise
        if force:
            raise NotDicomError("not a DICOM file (no 'DICM' marker) nor a PNG/TIFF/JPEG image", path) from None
        if isinstance(exc, (EOFError, OSError)):
            raise TruncatedFileError(f"the file ends inside its DICOM header ({_short(exc)})", path) from None
        raise TruncatedFileError(f"corrupt DICOM header: {type(exc).__name__}: {_short(exc)}", path) from None
    if force and not any(_has(ds, keyword) for keyword in _DICOM_EVIDENCE):
        raise NotDicomError(
            "not a DICOM file (no 'DICM' marker and no recognisable DICOM elements) nor a PNG/TIFF/JPEG image", path
        )
    # A file that ends inside an undefined-length value makes pydicom warn "End of file ..." and drop the whole
    # top-level data set (the element generator aborts): _check_complete reports that as truncation.
    _check_complete(ds, path, file_size)
    if getattr(ds, "file_meta", None) is None or _get(ds.file_meta, "TransferSyntaxUID") is None:
        # Preamble-less files often lack file meta: pydicom knows how it parsed them.
        _set_transfer_syntax_from_parse(ds)

    meta_fields = _dicom_meta(ds, path, file_size)
    try:  # before decoding: a file without usable spacing fails fast
        file_spacing, file_source = _dicom_spacing(ds, path)
        file_error = None
    except SpacingError as exc:
        if override is None:
            raise
        file_spacing, file_source, file_error = None, exc.tag, exc.reason
    pixels = _decode(ds, path)
    image, inverted = _to_float_bone_bright(pixels, ds, path)
    meta = RadiographMeta(
        **meta_fields,
        inverted=inverted,
        file_spacing=file_spacing,
        file_spacing_source=file_source,
        file_spacing_error=file_error,
    )
    if override is not None:
        return Radiograph(image, override, "override", path, meta)
    assert file_spacing is not None and file_source is not None
    return Radiograph(image, file_spacing, file_source, path, meta)


def _check_complete(ds: Any, path: Path, file_size: int) -> None:
    """pydicom silently keeps a short last element and stops at a partial element header: find both.

    Top-level elements are in file order, so the one with the highest tag is the last one read. When pydicom kept it
    raw (not a sequence, which is parsed eagerly and loses its offset) with a defined length, it must end exactly at
    the end of the file. Deflated files are skipped (offsets refer to the inflated stream).
    """
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and _get(file_meta, "TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return
    tags = list(ds.keys())  # noqa: SIM118 - tags, without converting elements
    if not tags:
        if file_meta is not None and len(file_meta) > 0:
            raise TruncatedFileError("the file ends in or after its file meta header: no data set (truncated?)", path)
        return
    try:
        elem = ds.get_item(max(tags))
    except Exception:  # noqa: BLE001 - an element that cannot even be fetched is corruption
        raise TruncatedFileError(f"corrupt DICOM element {max(tags)}", path) from None
    tell = getattr(elem, "value_tell", None)
    length = getattr(elem, "length", None)
    if tell is None or length is None or int(length) == 0xFFFFFFFF:
        return  # a sequence or undefined length: pydicom warns itself when its delimiter is missing
    end = int(tell) + int(length)
    if end > file_size:
        raise TruncatedFileError(f"the file is truncated: {file_size} bytes, its last element needs {end}", path)
    if end < file_size:
        raise TruncatedFileError(
            f"{file_size - end} unreadable bytes after the last complete element (truncated or corrupt file)", path
        )


def _has(ds: Any, keyword: str) -> bool:
    try:
        return keyword in ds
    except Exception:  # noqa: BLE001 - garbage data sets can fail even on lookups
        return False


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """An attribute's value, or ``default`` when absent, empty or unreadable (invalid VR content)."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - invalid values in optional attributes must not stop reading
        return default
    if value is None or (isinstance(value, (str, bytes)) and value == ""):
        return default
    return value


def _first_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        if not isinstance(value, (str, bytes, int, float)):
            value = list(value)[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value).strip() or None


def _dicom_meta(ds: Any, path: Path, file_size: int) -> dict[str, Any]:
    file_meta = getattr(ds, "file_meta", None)
    ts = None if file_meta is None else _get(file_meta, "TransferSyntaxUID")
    ts_name = None
    if ts is not None:
        try:
            ts_name = ts.name if ts.name != str(ts) else None
        except Exception:  # noqa: BLE001 - an unknown or malformed UID has no name
            ts_name = None
    rows = _get(ds, "Rows")
    columns = _get(ds, "Columns")
    slope = _first_float(_get(ds, "RescaleSlope"))
    intercept = _first_float(_get(ds, "RescaleIntercept"))
    return {
        "rows": int(rows) if rows is not None else 0,
        "columns": int(columns) if columns is not None else 0,
        "bits_stored": _get(ds, "BitsStored"),
        "photometric_interpretation": str(_get(ds, "PhotometricInterpretation", "")).strip(),
        "transfer_syntax_uid": None if ts is None else str(ts),
        "transfer_syntax_name": ts_name,
        "modality": _opt_str(_get(ds, "Modality")),
        "body_part": _opt_str(_get(ds, "BodyPartExamined")),
        "laterality": _opt_str(_get(ds, "ImageLaterality")) or _opt_str(_get(ds, "Laterality")),
        "view_position": _opt_str(_get(ds, "ViewPosition")),
        "sop_instance_uid": _opt_str(_get(ds, "SOPInstanceUID")),
        "patient_id": _opt_str(_get(ds, "PatientID")),
        "file_format": "dicom",
        "file_size": file_size,
        "pixel_representation": _get(ds, "PixelRepresentation"),
        "rescale_slope": 1.0 if slope is None else slope,
        "rescale_intercept": 0.0 if intercept is None else intercept,
        "window_center": _first_float(_get(ds, "WindowCenter")),
        "window_width": _first_float(_get(ds, "WindowWidth")),
    }


def _decode(ds: Any, path: Path) -> np.ndarray:
    """Check the image is one grey frame, then decode it (typed errors for every failure)."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "Rows" in ds and "Columns" in ds:
            raise MissingPixelDataError("the file describes an image but has no Pixel Data (cut off?)", path)
        raise MissingPixelDataError("the DICOM file has no Pixel Data (not an image)", path)
    photometric = str(_get(ds, "PhotometricInterpretation", "")).strip().upper()
    samples = _get(ds, "SamplesPerPixel", 1)
    if photometric not in _GREY or samples != 1:
        raise UnsupportedImageError(
            f"colour image (PhotometricInterpretation {photometric or 'missing'}, SamplesPerPixel {samples}); "
            "kneel needs a grey-level radiograph (MONOCHROME1/MONOCHROME2)",
            path,
        )
    frames = _get(ds, "NumberOfFrames", 1)
    try:
        n_frames = int(frames)
    except (TypeError, ValueError):
        n_frames = 1
    if n_frames > 1:
        raise UnsupportedImageError(f"multi-frame image ({n_frames} frames); kneel needs a single frame", path)
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if _get(ds, keyword) is None:
            raise UnsupportedImageError(f"the image attribute {keyword} is missing", path)
    check_size(int(_get(ds, "Rows")), int(_get(ds, "Columns")), path)  # before the decoder allocates anything

    try:
        pixels = ds.pixel_array
    except (RuntimeError, NotImplementedError, ImportError) as exc:
        ts = _transfer_syntax_label(ds)
        raise DecodeError(f"cannot decode {ts} pixel data: {_short(exc)}", path) from None
    except ValueError as exc:
        text = str(exc)
        if "less than expected" in text or "doesn't match the expected" in text or "too short" in text:
            reason = f"the pixel data is shorter than the image needs ({_short(exc)})"
            raise TruncatedFileError(reason, path) from None
        raise DecodeError(f"cannot decode the pixel data: {_short(exc)}", path) from None
    except AttributeError as exc:
        raise DecodeError(f"cannot decode the pixel data: {_short(exc)}", path) from None
    except BaseException as exc:  # noqa: BLE001 - codec plugins raise anything, even pyo3's PanicException
        if isinstance(exc, _NEVER_CAUGHT):
            raise
        ts = _transfer_syntax_label(ds)
        raise DecodeError(f"the {ts} codec failed: {type(exc).__name__}: {_short(exc)}", path) from None
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise UnsupportedImageError(f"decoded pixels have shape {pixels.shape}, expected one grey frame", path)
    return pixels


def _set_transfer_syntax_from_parse(ds: Any) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit = getattr(ds, "is_implicit_VR", None)
    little = getattr(ds, "is_little_endian", True)
    if implicit is None:
        implicit = getattr(ds, "original_encoding", (False, True))[0]
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def _transfer_syntax_label(ds: Any) -> str:
    file_meta = getattr(ds, "file_meta", None)
    ts = None if file_meta is None else _get(file_meta, "TransferSyntaxUID")
    if ts is None:
        return "the"
    try:
        return f"{ts.name} ({ts})"
    except Exception:  # noqa: BLE001
        return str(ts)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_float_bone_bright(pixels: np.ndarray, ds: Any, path: Path, *, fast: bool = True) -> tuple[np.ndarray, bool]:
    """Apply the modality LUT (rescale) and invert MONOCHROME1; float32 out.

    ``fast`` allows the integer shortcut (:func:`_integer_bone_bright`, same result); the tests compare both.
    """
    from pydicom.pixels import apply_modality_lut

    inverted = str(_get(ds, "PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    shortcut = _integer_bone_bright(pixels, ds, inverted) if fast else None
    if shortcut is not None:
        return shortcut, inverted
    try:
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - malformed rescale/LUT attributes
        raise DecodeError(f"cannot apply the modality LUT / rescale: {_short(exc)}", path) from None
    if inverted:
        lo, hi = _storable_range(ds, pixels)
        try:
            ends = np.asarray(apply_modality_lut(np.array([lo, hi], dtype=pixels.dtype), ds), dtype=np.float64)
        except Exception:  # noqa: BLE001 - LUT sequences with odd ranges: fall back to the image's own range
            ends = np.array([values.min(), values.max()])
        values = (ends.min() + ends.max()) - values
    if not np.all(np.isfinite(values)):
        raise DecodeError("the image contains non-finite values after rescale", path)
    return values.astype(np.float32), inverted


_FLOAT32_EXACT = 1 << 24
"""Integers up to this magnitude are exact in float32."""


def _integer_bone_bright(pixels: np.ndarray, ds: Any, inverted: bool) -> np.ndarray | None:
    """The common case without float64 temporaries: integer pixels, no modality LUT sequence, no rescale or slope 1
    with an integer intercept; ``inverted`` reflects MONOCHROME1 values. Every value is an integer exact in float32,
    so the result is identical to the general path's (float64, then float32) at a fraction of the memory traffic.
    None when the case does not apply."""
    if pixels.dtype.kind not in "iu" or _get(ds, "ModalityLUTSequence"):
        return None
    intercept = 0.0
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # pydicom rescales only when both are present
        slope, intercept = _first_float(_get(ds, "RescaleSlope")), _first_float(_get(ds, "RescaleIntercept"))
        if slope != 1.0 or intercept is None or not float(intercept).is_integer():
            return None
    lo, hi = _storable_range(ds, pixels)
    if pixels.dtype.itemsize <= 2:  # 8/16-bit pixels are always in range: no pass over the image
        pmin, pmax = int(np.iinfo(pixels.dtype).min), int(np.iinfo(pixels.dtype).max)
    else:
        pmin, pmax = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    if max(abs(v + intercept) for v in (lo, hi, pmin, pmax)) >= _FLOAT32_EXACT:
        return None
    values = pixels.astype(np.float32)
    if intercept:
        values += np.float32(intercept)
    if inverted:
        np.subtract(np.float32(lo + hi + 2 * intercept), values, out=values)
    return values


def _storable_range(ds: Any, pixels: np.ndarray) -> tuple[int, int]:
    """Smallest and largest value the stored bits can hold (BitsStored, PixelRepresentation)."""
    bits = _get(ds, "BitsStored") or _get(ds, "BitsAllocated") or pixels.dtype.itemsize * 8
    bits = int(bits)
    if int(_get(ds, "PixelRepresentation", 0) or 0) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _override_hint() -> str:
    """``pass --spacing MM ...`` on the command line, ``pass spacing=MM ...`` in Python."""
    return f"pass {option('spacing', 'MM')} (mm per pixel) to override"


def without_override_hint(reason: str) -> str:
    """A spacing error's reason without the advice to pass a spacing (for interfaces that take none: HTTP)."""
    return reason.replace(f"; {_override_hint()}", "")


def _dicom_spacing(ds: Any, path: Path) -> tuple[tuple[float, float], str]:
    """Spacing from ImagerPixelSpacing, then PixelSpacing; typed error naming the tag when unusable."""
    errors: list[SpacingError] = []
    for tag in SPACING_TAGS:
        if tag not in ds:
            continue
        try:
            raw = _raw_value(ds, tag)
        except Exception:  # noqa: BLE001
            raw = None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            errors.append(MissingSpacingError(f"{tag} is present but empty", path, tag))
            continue
        try:
            return parse_spacing(raw, path=path, tag=tag), tag
        except InvalidSpacingError as exc:
            errors.append(exc)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            others = "; ".join(e.reason for e in errors[1:])
            raise type(first)(f"{first.reason}; {others}; {_override_hint()}", path, first.tag)
        raise type(first)(f"{first.reason}; {_override_hint()}", path, first.tag)
    raise MissingSpacingError(
        f"no pixel spacing: neither ImagerPixelSpacing nor PixelSpacing is present; {_override_hint()}",
        path,
        "ImagerPixelSpacing/PixelSpacing",
    )


def _raw_value(ds: Any, keyword: str) -> Any:
    """The tag's value without pydicom's DS conversion (which raises on unparsable text)."""
    from pydicom.datadict import tag_for_keyword

    elem = ds.get_item(tag_for_keyword(keyword))
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip("\x00 ")
    return value


# ----------------------------------------------------------------------------------------------------------------
# PNG / TIFF / JPEG


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (e.g. "PNG input buffer is incomplete"): the typed error says it."""
    import cv2

    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:
        yield
        return
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


def _read_plain_image(path: Path, kind: str, override: tuple[float, float] | None) -> Radiograph:
    import cv2

    if override is None:
        raise MissingSpacingError(f"a {kind.upper()} image carries no pixel spacing; {_override_hint()}", path, None)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise NotDicomError(f"cannot read the file: {exc.strerror or exc}", path) from None
    try:
        with _quiet_opencv():
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        image = None
        reason = _short(exc)
    else:
        reason = "OpenCV could not decode it"
    if image is None:
        raise TruncatedFileError(f"corrupt or truncated {kind.upper()} image ({reason})", path)
    if image.ndim == 3:
        channels = image.shape[2]
        colour = image[:, :, :3] if channels >= 3 else image[:, :, :1]
        grey = all(np.array_equal(colour[:, :, 0], colour[:, :, c]) for c in range(colour.shape[2]))
        if channels == 2 or not grey:
            raise UnsupportedImageError(f"colour image ({channels} channels); kneel needs a grey radiograph", path)
        image = colour[:, :, 0]
    if image.ndim != 2:
        raise UnsupportedImageError(f"unexpected image shape {image.shape}", path)
    check_size(image.shape[0], image.shape[1], path)
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        raise UnsupportedImageError(f"unsupported pixel type {image.dtype}", path)
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.int16): 16}.get(image.dtype, 32)
    meta = RadiographMeta(
        rows=int(image.shape[0]),
        columns=int(image.shape[1]),
        bits_stored=bits,
        photometric_interpretation="MONOCHROME2",
        file_format=kind,
        file_size=path.stat().st_size,
    )
    return Radiograph(np.ascontiguousarray(image, dtype=np.float32), override, "override", path, meta)
