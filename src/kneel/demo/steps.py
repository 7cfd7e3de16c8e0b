"""Resumable steps: each finished step leaves a stamp, so running the demo again reuses what is done.

A stamp (``<out>/.steps/<name>.json``) records the step's parameters, the runs of the steps it depends on, its
outputs and its timing. A step is skipped when its stamp exists, its key (a hash of its parameters and of the run ids
of its upstream steps) matches and its outputs are still there; otherwise its output folder is cleared and it runs
again with a new run id, so everything downstream runs again too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneel.io.atomic import atomic_write_text

__all__ = ["StepResult", "StepRunner"]


@dataclass
class StepResult:
    """What one step returned (JSON-serialisable ``info``) and whether it ran now or came from its stamp."""

    name: str
    key: str
    info: dict[str, Any]
    seconds: float
    reused: bool
    run_id: str = ""


@dataclass
class StepRunner:
    """Runs named steps in order with stamps under ``out/.steps``; prints one progress line per step."""

    out: Path
    total: int
    stream: Any = field(default_factory=lambda: sys.stdout)
    results: dict[str, StepResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.start = time.perf_counter()

    def _stamp(self, name: str) -> Path:
        return self.out / ".steps" / f"{name}.json"

    def _say(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        print(f"[demo {elapsed:6.1f}s] {text}", file=self.stream, flush=True)

    def run(
        self,
        name: str,
        title: str,
        params: dict[str, Any],
        fn: Callable[[], dict[str, Any]],
        *,
        outputs: Sequence[Path] = (),
        clear: Sequence[Path] = (),
        after: Sequence[str] = (),
    ) -> StepResult:
        """Run ``fn`` unless a matching stamp exists; ``fn`` returns a JSON-serialisable info dict.

        Args:
            name: stamp name (unique per step).
            title: what the progress line says.
            params: everything that changes the step's result (cohort sizes, epochs, seeds, file hashes...).
            fn: the work.
            outputs: files or folders that must exist for the stamp to count.
            clear: folders removed before the step runs again (stale partial outputs).
            after: names of the steps this one depends on (their run ids enter this key).
        """
        upstream = {dep: self.results[dep].run_id for dep in after}
        blob = json.dumps({"params": params, "upstream": upstream}, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        index = len(self.results) + 1
        stamp = self._stamp(name)
        if stamp.is_file():
            try:
                saved = json.loads(stamp.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            if saved.get("key") == key and all(Path(p).exists() for p in outputs):
                result = StepResult(
                    name, key, saved.get("info", {}), float(saved.get("seconds", 0.0)), True, saved.get("run_id", "")
                )
                self.results[name] = result
                self._say(f"step {index}/{self.total} {title}: done before ({result.seconds:.0f}s then), reused")
                return result
        for folder in clear:
            if Path(folder).exists() and Path(folder).resolve().is_relative_to(self.out.resolve()):
                shutil.rmtree(folder) if Path(folder).is_dir() else Path(folder).unlink()
        stamp.unlink(missing_ok=True)
        self._say(f"step {index}/{self.total} {title} ...")
        t0 = time.perf_counter()
        info = fn() or {}
        seconds = time.perf_counter() - t0
        run_id = f"{key}-{time.time_ns()}"
        record = {
            "name": name,
            "key": key,
            "run_id": run_id,
            "params": params,
            "upstream": upstream,
            "info": info,
            "seconds": seconds,
        }
        atomic_write_text(stamp, json.dumps(record, indent=2, sort_keys=True, default=str))
        result = StepResult(name, key, info, seconds, False, run_id)
        self.results[name] = result
        self._say(f"step {index}/{self.total} {title}: finished in {seconds:.1f}s")
        return result

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
