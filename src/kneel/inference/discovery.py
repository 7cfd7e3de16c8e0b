"""Turn command-line inputs (files, folders, globs, ``.txt`` lists) into radiographs to process, and shard them.

Each input becomes an :class:`InputFile` with a *key*: the path as given for a file (or a glob match, or a line of a
list), the path relative to the folder for files found in a folder. The key is the ``file`` column of
``landmarks.csv`` and what resume and ``--shard`` are based on, so it must not depend on the working directory when
a folder is given (``kneel predict COHORT`` gives the same keys as the synthetic generator's ``ground_truth.csv``).

Folders are searched recursively; a file is taken when it looks like a DICOM file (``DICM`` marker, or a DICOM
group 0002/0008 tag at the start: files without extension or preamble) or has a DICOM/image suffix. Hidden folders
are skipped. Every other file found in a folder is a :class:`SkippedFile` with the reason (not a radiograph, a
PNG/TIFF/JPEG without a spacing, a hidden file, not a regular file such as a FIFO or a link to a device: those are
never opened, since reading them can block forever), so a run can say what it left out.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kneel.errors import ConfigError, option
from kneel.io.radiograph import special_file

__all__ = [
    "InputFile",
    "SkippedFile",
    "discover_inputs",
    "find_inputs",
    "looks_like_radiograph",
    "parse_shard",
    "in_shard",
    "shard_of",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class InputFile:
    """One radiograph to process: ``key`` names it in outputs, ``path`` is where to read it."""

    key: str
    path: str


@dataclass(frozen=True)
class SkippedFile:
    """A file found in an input folder and left out, with the reason (one line)."""

    path: str
    reason: str


def looks_like_radiograph(path: Path, *, images: bool = False) -> bool:
    """DICOM by content (with or without preamble) or by suffix; PNG/TIFF/JPEG too when ``images``."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or (images and suffix in IMAGE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) >= 8 and suffix == "":
        group_le = int.from_bytes(head[0:2], "little")
        group_be = int.from_bytes(head[0:2], "big")
        return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)
    return False


def _walk(folder: Path, images: bool, skipped: list[SkippedFile]) -> list[Path]:
    found = []
    radiograph_suffixes = DICOM_SUFFIXES + IMAGE_SUFFIXES
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if name.startswith("."):
                if p.suffix.lower() in radiograph_suffixes:  # '.DS_Store' is noise; '...dcm' deserves a word
                    skipped.append(SkippedFile(str(p), "hidden file (the name starts with '.')"))
                continue
            special = special_file(p)
            if special is not None:
                skipped.append(SkippedFile(str(p), special))
            elif looks_like_radiograph(p, images=images):
                found.append(p)
            elif p.suffix.lower() in IMAGE_SUFFIXES:
                kind = p.suffix.lower()[1:].upper()
                skipped.append(SkippedFile(str(p), f"{kind} image: no pixel spacing (pass {option('spacing', 'MM')})"))
            else:
                skipped.append(SkippedFile(str(p), "not a DICOM file (no DICOM marker or suffix)"))
    return found


def _read_list(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        if not p.is_absolute() and not p.exists() and (path.parent / p).exists():
            line = str(path.parent / p)
        lines.append(line)
    return lines


def discover_inputs(inputs: Sequence[str | os.PathLike[str]], *, images: bool = False) -> list[InputFile]:
    """Expand files, folders (recursive), globs and ``.txt`` lists into unique :class:`InputFile` s, in order.

    Args:
        inputs: what the user gave.
        images: also take PNG/TIFF/JPEG files found in folders (they need a spacing override).

    Raises:
        ConfigError: an input matches nothing (a missing path or an empty glob).
    """
    return find_inputs(inputs, images=images)[0]


def find_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, images: bool = False
) -> tuple[list[InputFile], list[SkippedFile]]:
    """:func:`discover_inputs` plus the files found in folders and left out, each with the reason."""
    out: list[InputFile] = []
    skipped: list[SkippedFile] = []
    seen: set[str] = set()

    def add(key: str, path: str) -> None:
        if key in seen:
            return
        seen.add(key)
        out.append(InputFile(key, path))

    folder_hits: list[tuple[Path, list[Path]]] = []
    for raw in inputs:
        text = os.fspath(raw)
        p = Path(text)
        if p.is_dir():
            folder_hits.append((p, _walk(p, images, skipped)))
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for line in _read_list(p):
                add(line, line)
        elif p.is_file() or os.path.exists(p):
            add(text, text)  # a FIFO or a device given by name: the reader refuses it, recorded as a failure
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"no file matches the pattern {text!r}")
            for m in matches:
                if Path(m).is_file():
                    add(m, m)
        else:
            raise ConfigError("no such file or folder", p)
    # Keys relative to the folder; with several folders, prefix by the folder as given only if keys would collide.
    rel = [[f.relative_to(folder).as_posix() for f in files] for folder, files in folder_hits]
    flat = [k for keys in rel for k in keys]
    collide = len(flat) != len(set(flat)) or any(k in seen for k in flat)
    for (folder, files), keys in zip(folder_hits, rel, strict=True):
        for f, k in zip(files, keys, strict=True):
            add(f"{folder.as_posix().rstrip('/')}/{k}" if collide else k, str(f))
    return out, skipped


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (Slurm: ``--shard $SLURM_ARRAY_TASK_ID/$N``)."""
    if text is None:
        return None
    try:
        k_text, n_text = str(text).split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ConfigError(f"{option('shard')} must look like K/N (e.g. 0/4), not {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"{option('shard', str(text))}: need 0 <= K < N")
    return k, n


def shard_of(key: str, n: int) -> int:
    """The shard of a file key: a stable hash (SHA-1 of the key), independent of order, machine and Python."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % n


def in_shard(files: Iterable[InputFile], shard: tuple[int, int] | None) -> list[InputFile]:
    """The files of shard ``K`` of ``N`` (all files when ``shard`` is None)."""
    if shard is None:
        return list(files)
    k, n = shard
    return [f for f in files if shard_of(f.key, n) == k]
