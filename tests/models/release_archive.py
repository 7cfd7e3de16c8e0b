"""Test material for ``kneel models fetch``: release archives in the exact layout of KNEEL's
``snapshots_release.tar.xz``, and a local HTTP server that serves them with byte ranges (and can drop a connection).

The weights archive is made from tiny random kneel models by ``shared/reference/baseline/kneel2ref.py`` (kneel model
folder -> the reference's ``session.pkl`` + ``fold_<k>_epoch_<e>.pth`` layout), so its snapshots are what the
reference itself reads.
"""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import socket
import sys
import tarfile
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from kneel.hub.catalog import MODELS

SOURCE = MODELS["kneel-2019"]
LC_FOLDER, HC_FOLDER = dict(SOURCE.stages)["lc"], dict(SOURCE.stages)["hc"]
RELEASE = "snapshots_release"  # the archive's top folder, as the authors' tar -xvf makes it


def tiny_model_folder(root: Path, folds: int = 5) -> Path:
    """``root/{lc,hc}/fold_<k>/`` with the tiny presets and seeded random weights."""
    from kneel.models import ModelConfig, create_model, save_fold

    for stage in ("lc", "hc"):
        for k in range(folds):
            torch.manual_seed(7000 + 100 * (stage == "hc") + k)
            preset = f"kneel_tiny_{stage}"
            save_fold(create_model(preset), ModelConfig.from_preset(preset, fold=k), root / stage / f"fold_{k}")
    return root


def release_folder(model: Path, shared_dir: Path, out: Path) -> Path:
    """``out/snapshots_release/`` as the release holds it: ``mean_std.npy``, the low-cost and the high-cost snapshot
    folders (``session.pkl``, ``fold_<k>_epoch_<e>.pth``) and the ``config.yml`` training wrote beside them."""
    converted = out / "kneel2ref"
    script = shared_dir / "reference" / "baseline" / "kneel2ref.py"
    argv = sys.argv
    sys.argv = [str(script), str(model), str(converted)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")  # a script: run in this process (torch is loaded)
    finally:
        sys.argv = argv
    release = out / RELEASE
    release.mkdir(parents=True)
    (converted / "lc").rename(release / LC_FOLDER)
    (converted / "hc").rename(release / HC_FOLDER)
    (converted / "mean_std.npy").rename(release / "mean_std.npy")
    for folder in (LC_FOLDER, HC_FOLDER):
        (release / folder / "config.yml").write_text("training:\n  n_folds: 5\n", encoding="utf-8")
    return release


def tar_folder(folder: Path, archive: Path, mode: str = "w:xz") -> Path:
    """``archive`` holding ``folder`` under its own name (``snapshots_release/...``), sorted, as ``tar -cJf``."""
    options = {"preset": 0} if mode == "w:xz" else {}
    with tarfile.open(archive, mode, **options) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def fake_release_members(skip: Iterable[str] = ()) -> list[tuple[str, bytes]]:
    """(name, bytes) of a release whose .pth files are placeholders: enough for the checks that come before any
    conversion (layout, safety). Members named in ``skip`` are left out."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([[90.0] * 3, [60.0] * 3], np.float32))
    members = [(f"{RELEASE}/mean_std.npy", buffer.getvalue())]
    for folder in (LC_FOLDER, HC_FOLDER):
        members.append((f"{RELEASE}/{folder}/session.pkl", b"not opened"))
        members += [(f"{RELEASE}/{folder}/fold_{k}_epoch_99.pth", b"placeholder") for k in range(5)]
    return [(name, data) for name, data in members if name not in set(skip)]


def write_tar(archive: Path, members: list[tuple[str, bytes]], extra: Iterable[tarfile.TarInfo] = ()) -> Path:
    """An uncompressed tar of ``members`` (name, bytes) followed by the raw ``extra`` headers (links, devices...)."""
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return archive


class ReleaseServer:
    """A real HTTP server on 127.0.0.1 serving ``payload`` at ``/models/KNEEL/snapshots_release.tar.xz``.

    Supports ``Range: bytes=N-`` (206, or 416 past the end) with an ``ETag`` and ``If-Range``; ``ranges = False``
    makes it ignore ranges (200, the whole file). ``drop_after = n`` makes the next answer stop after ``n`` bytes of
    its body and close the connection (once). ``requests`` records each request's ``Range`` header.
    """

    path = "/models/KNEEL/snapshots_release.tar.xz"

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.etag = '"release-1"'
        self.ranges = True
        self.drop_after: int | None = None
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.headers.get("Range"))
                if self.path != server.path:
                    self.send_error(404)
                    return
                data, start = server.payload, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if_range = self.headers.get("If-Range")
                if match and server.ranges and (if_range is None or if_range == server.etag):
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", server.etag)
                self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
                self.end_headers()
                body = data[start:]
                if server.drop_after is not None:
                    cut, server.drop_after = server.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{self.path}"

    def __enter__(self) -> ReleaseServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
