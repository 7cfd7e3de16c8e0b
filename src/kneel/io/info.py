"""What ``kneel info`` reports about radiographs: size, spacing and its source, photometry, bits, transfer syntax.

``describe_radiograph`` reads one file completely (pixels included, so a file that cannot be decoded is reported as
such) and returns a ``RadiographInfo``; a file that cannot be used gives an info whose ``error`` says why.
``info`` runs over files and folders and prints one line (or one JSON object) per file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from kneel.io.errors import RadiographError
from kneel.io.radiograph import read_radiograph

__all__ = ["RadiographInfo", "describe_radiograph", "expand_paths", "format_info", "info"]


@dataclass(frozen=True)
class RadiographInfo:
    """One file's summary (``error`` set, and the rest mostly None, when the file cannot be used)."""

    path: str
    file_size: int | None = None
    file_format: str | None = None
    rows: int | None = None
    columns: int | None = None
    spacing: tuple[float, float] | None = None
    spacing_source: str | None = None
    file_spacing: tuple[float, float] | None = None
    file_spacing_source: str | None = None
    file_spacing_error: str | None = None
    photometric_interpretation: str | None = None
    inverted: bool | None = None
    bits_stored: int | None = None
    transfer_syntax_uid: str | None = None
    transfer_syntax_name: str | None = None
    modality: str | None = None
    laterality: str | None = None
    view_position: str | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def describe_radiograph(path: str | os.PathLike[str], spacing: float | Sequence[float] | None = None) -> RadiographInfo:
    """Read ``path`` (see ``read_radiograph``) and summarise it; errors are captured, never raised."""
    try:
        size: int | None = Path(path).stat().st_size
    except OSError:
        size = None
    try:
        rg = read_radiograph(path, spacing=spacing)
    except RadiographError as exc:
        return RadiographInfo(str(path), file_size=size, error=exc.reason, error_type=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a reader bug must not stop a batch; the line says it is one
        reason = " ".join(f"unexpected {type(exc).__name__} (please report): {exc}".split())
        return RadiographInfo(str(path), file_size=size, error=reason, error_type="InternalError")
    m = rg.meta
    return RadiographInfo(
        path=str(path),
        file_size=m.file_size,
        file_format=m.file_format,
        rows=rg.shape[0],
        columns=rg.shape[1],
        spacing=rg.spacing,
        spacing_source=rg.spacing_source,
        file_spacing=m.file_spacing,
        file_spacing_source=m.file_spacing_source,
        file_spacing_error=m.file_spacing_error,
        photometric_interpretation=m.photometric_interpretation,
        inverted=m.inverted,
        bits_stored=m.bits_stored,
        transfer_syntax_uid=m.transfer_syntax_uid,
        transfer_syntax_name=m.transfer_syntax_name,
        modality=m.modality,
        laterality=m.laterality,
        view_position=m.view_position,
    )


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders replaced by the files below them (sorted, hidden files skipped)."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts))
            )
        else:
            out.append(p)
    return out


def _size_text(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


def format_info(item: RadiographInfo) -> str:
    """One line: ``PATH: ROWSxCOLS px, spacing R x C mm (SOURCE), PHOTOMETRIC, N bits, SYNTAX, MODALITY, SIZE``."""
    if item.error is not None:
        return f"{item.path}: ERROR {item.error_type}: {item.error}"
    assert item.spacing is not None
    spacing = f"spacing {item.spacing[0]:g} x {item.spacing[1]:g} mm ({item.spacing_source}"
    if item.spacing_source == "override":
        if item.file_spacing is not None:
            spacing += f"; file {item.file_spacing[0]:g} x {item.file_spacing[1]:g} mm in {item.file_spacing_source}"
        elif item.file_spacing_error:
            spacing += f"; file: {item.file_spacing_error.split(';')[0]}"
    spacing += ")"
    photometric = f"{item.photometric_interpretation}{' (inverted)' if item.inverted else ''}"
    syntax = item.transfer_syntax_name or item.transfer_syntax_uid or (item.file_format or "?").upper()
    parts = [
        f"{item.rows}x{item.columns} px",
        spacing,
        photometric,
        f"{item.bits_stored} bits",
        syntax,
    ]
    if item.modality:
        parts.append(item.modality)
    if item.laterality:
        parts.append(f"laterality {item.laterality}")
    parts.append(_size_text(item.file_size))
    return f"{item.path}: " + ", ".join(parts)


def info(
    files: Iterable[str | os.PathLike[str]],
    spacing: float | Sequence[float] | None = None,
    json_output: bool = False,
    stream: TextIO | None = None,
) -> int:
    """Print one line (or, with ``json_output``, a JSON list) describing each file; 1 if any failed, else 0."""
    stream = sys.stdout if stream is None else stream
    paths = expand_paths(files)
    failed = 0
    items = []
    for path in paths:
        item = describe_radiograph(path, spacing=spacing)
        failed += not item.ok
        if json_output:
            items.append(asdict(item))
        else:
            print(format_info(item), file=stream, flush=True)
    if json_output:
        json.dump(items, stream, indent=2)
        stream.write("\n")
    return 1 if failed or not paths else 0
