"""Resumable HTTP download of a release archive, standard library only (plus tqdm for the progress bar).

The bytes go to ``DEST.part``; ``DEST.part.json`` records the address and the server's validators (ETag,
Last-Modified). A later call continues where the last one stopped with an HTTP ``Range`` request (``If-Range`` makes
a server whose file changed send it whole again); a server that ignores ranges sends the whole file, which then
replaces the part. The part becomes ``DEST`` only once complete. A connection that drops after some bytes arrived is
retried at once from where it stopped (``retries`` times); one that cannot be made at all fails at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kneel import __version__
from kneel.hub.errors import FetchError

__all__ = ["MAX_DOWNLOAD_BYTES", "download"]

MAX_DOWNLOAD_BYTES = 8 << 30  # the same bound as the unpacked archive (kneel.hub.archive.MAX_TOTAL_BYTES)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_CHUNK = 1 << 20


class _Interrupted(Exception):
    """One attempt ended early; ``received``: the bytes it added to the part."""

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.received = received


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        if not isinstance(exc, BaseException):
            return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _read_meta(meta: Path) -> dict:
    try:
        value = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}"


def _attempt(url: str, part: Path, meta_path: Path, timeout: float, progress: bool, label: str, max_bytes: int) -> int:
    """One request that appends to ``part`` (or restarts it); returns the part's size once it is complete.

    Raises:
        _Interrupted: the connection ended before the announced size, or the server's range did not fit the part.
    """
    from tqdm import tqdm

    meta = _read_meta(meta_path)
    offset = part.stat().st_size if part.is_file() else 0
    if offset and meta.get("url") != url:
        offset = 0  # a part of another address: start afresh
    headers = {"User-Agent": f"kneel/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only, checked by caller)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            match = _CONTENT_RANGE.match(exc.headers.get("Content-Range", "") or "")
            if match and match.group(3) not in (None, "*") and int(match.group(3)) == offset:
                return offset  # the part already holds every byte
            part.unlink(missing_ok=True)  # the part is longer than the file: start afresh
            raise _Interrupted("the partial download did not match the file on the server", 1) from None
        raise
    with response:
        status = response.status
        total: int | None = None
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if not match or match.group(1) is None or int(match.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted("the server answered a different byte range", 1)
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        elif status == 200:
            offset = 0  # no range (first request, a server without ranges, or a changed file): the whole file
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise FetchError(f"unexpected HTTP status {status}", url)
        if total is not None and total > max_bytes:
            raise FetchError(f"the server announces {_mb(total)} MB, above the {_mb(max_bytes)} MB limit", url)
        meta = {
            "url": url,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
            "total": total,
        }
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        received = 0
        bar = tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
            disable=not progress, file=sys.stderr, leave=False,
        )  # fmt: skip
        try:
            with bar, open(part, mode) as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Interrupted(_reason(exc), received) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if offset + received > max_bytes:
                        raise FetchError(f"the download exceeds the {_mb(max_bytes)} MB limit", url)
                    bar.update(len(chunk))
        except OSError as exc:
            raise FetchError(f"cannot write the download: {_reason(exc)}", part) from exc
    size = offset + received
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {_mb(size)} of {_mb(total)} MB", received)
    return size


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    hint: str = "",
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Path:
    """Download ``url`` to ``dest`` (through ``dest.part``, resumable); return ``dest``.

    Args:
        url: an ``http://`` or ``https://`` address.
        dest: the file to create; its folder is created if missing. An existing ``dest`` is returned as it is.
        progress: show a progress bar on stderr.
        retries: how many times a connection that dropped after some bytes is resumed at once.
        timeout: seconds without an answer before giving up on a request.
        hint: appended to the message of a failure (what to do instead).
        max_bytes: refuse a file announced, or grown, larger than this.

    Raises:
        FetchError: the server cannot be reached, answers an error, or the download stopped (the part is kept; the
            same call resumes it).
    """
    dest = Path(dest)
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError("only http:// and https:// addresses can be downloaded" + hint, url)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    label = dest.name
    left = max(0, int(retries))
    while True:
        try:
            _attempt(url, part, meta, timeout, progress, label, max_bytes)
            break
        except _Interrupted as exc:
            have = part.stat().st_size if part.is_file() else 0
            if exc.received > 0 and left > 0:
                left -= 1
                time.sleep(0.2)
                continue
            raise FetchError(
                f"download interrupted ({exc.reason}); {_mb(have)} MB kept in {part}: run the same command again to "
                f"resume{hint}",
                url,
            ) from None
        except urllib.error.HTTPError as exc:
            raise FetchError(f"the server answered {_reason(exc)}{hint}", url) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchError(f"cannot download ({_reason(exc)}){hint}", url) from None
    os.replace(part, dest)
    with contextlib.suppress(OSError):
        meta.unlink()
    return dest
