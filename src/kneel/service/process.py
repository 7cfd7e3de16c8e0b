"""``kneel serve`` in a child process on a free local port, for tests and benchmarks that talk to a real server.

:func:`start_server` launches ``python -m kneel serve`` and returns once ``/health`` answers (or raises with the tail
of the server's log); :func:`stop_server` ends it. Standard library only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["free_port", "start_server", "stop_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    model: str | os.PathLike[str], log: str | os.PathLike[str], *args: str, timeout_s: float = 90.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``kneel serve --model MODEL --port <free> --log-level warning ARGS...`` with its output in ``log``.

    Returns the process and its base URL once ``GET /health`` answers 200; kills the process and raises
    ``RuntimeError`` with the log's tail when it exits or is not ready within ``timeout_s``.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "kneel", "serve", "--model", str(model), "--port", str(port),
           "--log-level", "warning", *args]  # fmt: skip
    with open(log, "wb") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"server did not start: {Path(log).read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return proc, url


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Terminate the server, killing it if it does not end within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
