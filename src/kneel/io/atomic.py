"""Atomic file writes: a half-written output never replaces a good one.

Everything kneel writes (tables, models, images, reports) goes through these helpers: the data is written to a
temporary file in the destination folder, flushed to disk, then moved over the destination with ``os.replace``
(atomic on POSIX and Windows within one file system). If anything fails, the destination is untouched and the
temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_writer", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, on an exception it is deleted.

    Args:
        path: Destination file. Its folder is created if missing.
        mode: ``"w"`` (text, UTF-8 by default) or ``"wb"`` (binary).
        encoding: Text encoding (text mode only); defaults to UTF-8.
        newline: Passed to ``open`` in text mode (``""`` for the ``csv`` module).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_writer supports modes 'w' and 'wb', not {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        if "b" in mode:
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates files readable only by the owner; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (no newline translation: the text is written as given)."""
    with atomic_writer(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
