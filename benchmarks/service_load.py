"""The HTTP service under load: latency and the server's peak memory as the number of clients grows.

Starts a real ``kneel serve`` (uvicorn) on a free localhost port with tiny random-weight models (``--force``, so every
request runs the whole pipeline) and posts one synthetic bilateral film (``kneel.synth``, about 2500 x 2800 px at
0.15 mm: a 14 MB DICOM, 19 MB of JSON) to ``/v1/predict`` from N client threads at once, each sending the same number
of requests one after the other. A client answered 503 waits the ``Retry-After`` seconds and tries again, as a
well-behaved client does; its latency runs from its first attempt to the answer.

Per number of clients: requests answered 200, 503 answers (retries), p50/p95 latency, requests/s, and the server's
peak resident memory during that level (``VmHWM`` after resetting it through ``/proc/PID/clear_refs``; Linux).
``--uncapped`` runs a second server with no effective limit (``--max-active 1000``), which is how the service behaved
before the bounded queue: memory then grows with the number of clients. Both servers are started first and the
levels alternate between them, so that a busy shared machine slows both alike.

Usage: ``python benchmarks/service_load.py [--clients 1,8,32] [--requests 2] [--uncapped] [--quick]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kneel.service.process import start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]


def make_models(root: Path, folds: int = 2) -> Path:
    """``root/{lc,hc}/fold_<k>`` with the tiny presets and seeded random weights."""
    import torch

    from kneel.models import ModelConfig, create_model, save_fold

    for stage in ("lc", "hc"):
        for k in range(folds):
            torch.manual_seed(100 * k + (50 if stage == "hc" else 0))
            preset = f"kneel_tiny_{stage}"
            save_fold(create_model(preset), ModelConfig.from_preset(preset, fold=k), root / stage / f"fold_{k}")
    return root


def make_film(root: Path, quick: bool) -> Path:
    """One synthetic bilateral DICOM film (a plain test film of the same size if the generator is missing)."""
    if not quick:
        try:
            from kneel.synth import generate_cohort

            generate_cohort(root, n=1, seed=11, layout="flat", single_knee_fraction=0.0, workers=1, progress=False)
            films = sorted(root.rglob("*.dcm"))
            if films:
                return films[0]
        except ImportError:
            pass
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    from inference_helpers import knee_film, write_dicom

    from kneel.landmarks import KneeSide

    shape = (1400, 1250) if quick else (2800, 2500)
    spacing = (0.3, 0.3) if quick else (0.15, 0.15)
    knees = ((KneeSide.R, (shape[1] * 0.25, shape[0] * 0.5)), (KneeSide.L, (shape[1] * 0.75, shape[0] * 0.5)))
    return write_dicom(root / "film.dcm", knee_film(shape, spacing, knees), spacing)


class Server:
    """A ``kneel serve`` subprocess; ``peak_rss_mb`` reads (and ``reset_peak`` resets) its peak resident memory."""

    def __init__(self, model: Path, log: Path, *extra: str) -> None:
        self.proc, self.url = start_server(model, log, "--force", *extra, timeout_s=180)

    def _status(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_rss_mb(self) -> float:
        return self._status("VmHWM")

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def stop(self) -> None:
        stop_server(self.proc, timeout_s=30)


def _client(url: str, body: bytes, requests: int, out: list[dict[str, Any]], lock: threading.Lock) -> None:
    import httpx

    with httpx.Client(timeout=600) as client:
        for _ in range(requests):
            start = time.perf_counter()
            busy = 0
            while True:
                response = client.post(url, content=body, headers={"Content-Type": "application/json"})
                if response.status_code != 503:
                    break
                busy += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
            with lock:
                out.append({"status": response.status_code, "seconds": time.perf_counter() - start, "busy": busy})


def run_level(server: Server, body: bytes, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads posting ``requests`` each; latency percentiles, 503 count, peak server memory."""
    exact_peak = server.reset_peak()
    polled = [server.rss_mb()]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_client, args=(f"{server.url}/v1/predict", body, requests, results, lock))
               for _ in range(clients)]  # fmt: skip
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        polled.append(server.rss_mb())
        time.sleep(0.05)
    wall = time.perf_counter() - start
    ok = sorted(r["seconds"] for r in results if r["status"] == 200)
    quantiles = statistics.quantiles(ok, n=20, method="inclusive") if len(ok) >= 2 else ok * 19
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "busy_503": sum(r["busy"] for r in results),
        "p50_s": statistics.median(ok) if ok else float("nan"),
        "p95_s": quantiles[18] if ok else float("nan"),
        "per_s": len(ok) / wall,
        "peak_rss_mb": server.peak_rss_mb() if exact_peak else max(polled),
    }


def _table(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, "| clients | requests | 200 | 503 (retried) | p50 (s) | p95 (s) | requests/s | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['busy_503']} | {r['p50_s']:.2f} | {r['p95_s']:.2f} "
            f"| {r['per_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32", help="numbers of concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--uncapped", action="store_true", help="also measure a server without the bounded queue")
    parser.add_argument("--quick", action="store_true", help="a smaller film (1400 x 1250 px); levels 1,4")
    parser.add_argument("--json", help="write the rows to this JSON file too")
    args = parser.parse_args()
    levels = [1, 4] if args.quick else [int(v) for v in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="kneel-service-load-") as tmp:
        root = Path(tmp)
        model = make_models(root / "model")
        film = make_film(root / "film", args.quick)
        body = json.dumps({"dicom": base64.b64encode(film.read_bytes()).decode("ascii")}).encode()
        print(f"film {film.stat().st_size / 1e6:.1f} MB, request {len(body) / 1e6:.1f} MB; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)  # fmt: skip
        configs = [("bounded queue (defaults: --max-active 2 --max-queue 16)", ())]
        if args.uncapped:
            configs.append(("uncapped (--max-active 1000 --max-queue 0: no bound, as before)", ("--max-active", "1000",
                            "--max-queue", "0", "--max-request-mb", "64")))  # fmt: skip
        servers: list[tuple[str, Server]] = []
        report: dict[str, list[dict[str, Any]]] = {title: [] for title, _ in configs}
        try:
            for i, (title, extra) in enumerate(configs):
                servers.append((title, Server(model, root / f"server{i}.log", *extra)))
            idle = {title: server.rss_mb() for title, server in servers}
            for clients in levels:
                for title, server in servers:
                    report[title].append(run_level(server, body, clients, args.requests))
                    print(f"  {title}: {clients} clients done (load average {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            for _, server in servers:
                server.stop()
        for title, rows in report.items():
            print(_table(f"\n{title}; idle RSS {idle[title]:.0f} MB", rows), flush=True)
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
