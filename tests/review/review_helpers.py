"""Test material for the review app: a real prediction folder of synthetic films, a real server, plain HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kneel.service.process import free_port


def start_review(pred_dir: Path, log: Path, *args: str, timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """``kneel review PRED_DIR --port <free> ARGS...`` in a child process; returns it and its URL once
    ``/api/health`` answers (kills it and fails with the log's tail otherwise)."""
    port = free_port()
    cmd = [sys.executable, "-m", "kneel", "review", str(pred_dir), "--port", str(port), *args]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if request(url + "/api/health")[0] == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"kneel review did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def request(
    url: str, method: str = "GET", body: Any = None, *, raw: bytes | None = None, headers: dict | None = None
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body or bytes, headers) of one real HTTP request; 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            status, payload, head = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, payload, head = exc.code, exc.read(), dict(exc.headers)
    if head.get("content-type", head.get("Content-Type", "")).startswith("application/json"):
        return status, json.loads(payload), head
    return status, payload, head
