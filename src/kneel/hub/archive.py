"""Safe reading of a release archive: check every member, find the release's files, extract only those.

Every member is checked before anything is written: no absolute path, no ``..``, no link that points outside the
archive, no device or other special file, at most ``MAX_MEMBERS`` members, none above ``MAX_MEMBER_BYTES``, together
at most ``MAX_TOTAL_BYTES``; one bad member refuses the whole archive. The release's files (``mean_std.npy`` and the
``fold_<k>_epoch_<e>.pth`` of each snapshot folder, at the top or in one top folder such as ``snapshots_release/``)
must be regular files; only they are extracted, with Python's ``tarfile`` data filter on top of these checks.
"""

from __future__ import annotations

import lzma
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kneel.hub.catalog import ModelSource
from kneel.hub.errors import ArchiveError

__all__ = ["MAX_MEMBERS", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "Release", "extract_release"]

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 2 << 30  # a paper-size fold is ~50 MB with its optimizer state
MAX_TOTAL_BYTES = 8 << 30

_PTH_RE = re.compile(r"^fold_(\d+)_epoch_(\d+)\.pth$")
_READ_ERRORS = (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError, ValueError)


@dataclass(frozen=True)
class Release:
    """The extracted release: its ``mean_std.npy`` and one snapshot folder per stage."""

    mean_std: Path
    stages: dict[str, Path]


def _clean_name(name: str) -> str:
    """The member name without ``./`` prefixes and trailing slashes (POSIX form)."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be in a release archive, or ``None``."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        return "has an absolute or Windows path"
    if ".." in PurePosixPath(name).parts:
        return "climbs out of the archive with '..'"
    if "\0" in name:
        return "has a NUL byte in its name"
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
            return f"is a link to the absolute path {target!r}"
        base = PurePosixPath(_clean_name(name)).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts:
            depth = depth - 1 if part == ".." else depth + (part not in ("", "."))
            if depth < 0:
                return f"is a link to {target!r}, outside the archive"
        return None
    if not (member.isreg() or member.isdir()):
        return "is a device, FIFO or other special file"
    if member.size > MAX_MEMBER_BYTES:
        return f"is {member.size / 1e9:.1f} GB, above the {MAX_MEMBER_BYTES / 1e9:.1f} GB limit for one file"
    return None


def _members(tar: tarfile.TarFile, archive: Path) -> dict[str, tarfile.TarInfo]:
    """Every member, checked; name (cleaned) -> member."""
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    try:
        for member in tar:
            reason = _unsafe(member)
            if reason is not None:
                raise ArchiveError(f"unsafe archive: member {member.name!r} {reason}; nothing extracted", archive)
            total += member.size if member.isreg() else 0
            if total > MAX_TOTAL_BYTES:
                raise ArchiveError(f"unsafe archive: more than {MAX_TOTAL_BYTES / 1e9:.0f} GB unpacked", archive)
            if len(members) >= MAX_MEMBERS:
                raise ArchiveError(f"unsafe archive: more than {MAX_MEMBERS} members", archive)
            members[_clean_name(member.name)] = member
    except ArchiveError:
        raise
    except _READ_ERRORS as exc:
        raise ArchiveError(f"corrupt or truncated archive ({_describe(exc)}); nothing extracted", archive) from exc
    return members


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _release_prefix(members: dict[str, tarfile.TarInfo], source: ModelSource, archive: Path) -> str:
    """``""`` when the release's files are at the top of the archive, ``"<folder>/"`` when in one top folder."""
    top = [name for name in members if name == source.mean_std or name.endswith("/" + source.mean_std)]
    candidates = sorted(n[: -len(source.mean_std)] for n in top if n[: -len(source.mean_std)].count("/") <= 1)
    for prefix in candidates:
        if any(m.startswith(prefix + folder + "/") for _, folder in source.stages for m in members):
            return prefix
    if candidates:
        return candidates[0]
    folders = ", ".join(folder for _, folder in source.stages)
    raise ArchiveError(
        f"not the {source.name} release: missing member snapshots_release/{source.mean_std} (expected "
        f"{source.mean_std} and the snapshot folders {folders}, at the top or in one folder)",
        archive,
    )


def _needed(
    members: dict[str, tarfile.TarInfo], prefix: str, source: ModelSource, archive: Path
) -> dict[str, list[tarfile.TarInfo]]:
    """stage -> the members to extract for it (the latest epoch of each fold); ``""`` -> [mean_std]."""
    wanted: dict[str, list[tarfile.TarInfo]] = {"": [members[prefix + source.mean_std]]}
    missing: list[str] = []
    for stage, folder in source.stages:
        latest: dict[int, tuple[int, tarfile.TarInfo]] = {}
        for name, member in members.items():
            path = PurePosixPath(name)
            match = _PTH_RE.match(path.name)
            if match and str(path.parent) == prefix + folder:
                fold, epoch = int(match.group(1)), int(match.group(2))
                if fold not in latest or epoch > latest[fold][0]:
                    latest[fold] = (epoch, member)
        for fold in source.folds:
            if fold not in latest:
                missing.append(f"{prefix}{folder}/fold_{fold}_epoch_<e>.pth")
        wanted[stage] = [latest[k][1] for k in sorted(latest) if k in source.folds]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ArchiveError(
            f"not the complete {source.name} release: missing member {', '.join(missing[:3])}{more}", archive
        )
    for member in (m for ms in wanted.values() for m in ms):
        if not member.isreg():
            raise ArchiveError(f"member {member.name!r} is not a regular file", archive)
    return wanted


def extract_release(archive: str | os.PathLike[str], source: ModelSource, dest: str | os.PathLike[str]) -> Release:
    """Check ``archive`` (any tar: .tar.xz, .tar.gz, .tar) and extract the release's files of ``source`` into
    ``dest``.

    Raises:
        ArchiveError: unreadable or truncated, unsafe (the member and the reason are named), or a file of the
            release is missing.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise ArchiveError("archive not found", archive)
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with below)
    except _READ_ERRORS as exc:
        raise ArchiveError(f"not a readable tar archive ({_describe(exc)})", archive) from exc
    with tar:
        members = _members(tar, archive)
        prefix = _release_prefix(members, source, archive)
        wanted = _needed(members, prefix, source, archive)
        chosen = [m for ms in wanted.values() for m in ms]
        dest.mkdir(parents=True, exist_ok=True)
        options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        try:
            tar.extractall(dest, members=chosen, **options)  # noqa: S202 (members checked above, data filter)
        except getattr(tarfile, "FilterError", ()) as exc:
            raise ArchiveError(f"unsafe archive: {_describe(exc)}; nothing installed", archive) from exc
        except _READ_ERRORS as exc:
            raise ArchiveError(f"corrupt or truncated archive ({_describe(exc)}); nothing installed", archive) from exc
    for member in chosen:
        out = dest / _clean_name(member.name)
        if not out.is_file() or out.stat().st_size != member.size:
            raise ArchiveError(f"member {member.name!r} was not extracted whole", archive)
    root = dest / prefix if prefix else dest
    return Release(mean_std=root / source.mean_std, stages={stage: root / folder for stage, folder in source.stages})
