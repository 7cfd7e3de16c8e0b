"""Run a grid of training experiments: one ``kneel train`` process per experiment, one experiment per GPU at a time.

Each config trains into ``OUT/<config stem>/`` (a model folder with its ``lc/`` or ``hc/`` stage) and logs to
``OUT/<config stem>/train.log``. Low-cost experiments run first; a high-cost config with ``init_from: auto`` is
initialised from the low-cost experiment of the same grid (the first one, or the one named by ``init_from``) and
waits for it. Without ``--gpus`` the experiments run one at a time on the default device (CUDA when available, else
the CPU). One failing experiment does not stop the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kneel.errors import ConfigError
from kneel.training.config import load_config

__all__ = ["Experiment", "ExperimentOutcome", "plan_experiments", "run_experiments"]


@dataclass
class Experiment:
    """One config of the grid and where it goes."""

    config_path: Path
    name: str
    stage: str
    out: Path
    depends_on: str | None = None
    init_from: Path | None = None


@dataclass
class ExperimentOutcome:
    """How an experiment ended."""

    name: str
    returncode: int
    seconds: float
    out: Path
    log: Path


def plan_experiments(configs: Sequence[str | Path], out: str | Path) -> list[Experiment]:
    """Read every config (validating it and its overrides-free keys), order LC before HC, resolve transfer sources."""
    out = Path(out)
    experiments = []
    for path in configs:
        config = load_config(path)
        stem = Path(path).stem
        experiments.append(Experiment(Path(path), stem, config.stage, out / stem))
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"two configs share a file name: {sorted(n for n in names if names.count(n) > 1)}")
    lc = [e for e in experiments if e.stage == "lc"]
    for exp in experiments:
        if exp.stage != "hc":
            continue
        init = load_config(exp.config_path).init_from
        if init is None:
            continue
        if init == "auto":
            if not lc:
                raise ConfigError("init_from: auto but the grid has no low-cost experiment", exp.config_path)
            source = lc[0]
        else:
            source = next((e for e in lc if e.name == Path(init).name), None)
            if source is None:
                exp.init_from = Path(init)
                continue
        exp.depends_on = source.name
        exp.init_from = source.out
    return sorted(experiments, key=lambda e: e.stage != "lc")


def _command(exp: Experiment, data: Path, device: str | None, overrides: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "kneel", "train", "--config", str(exp.config_path), "--data", str(data)]
    cmd += ["--out", str(exp.out), "--no-progress"] + (["--device", device] if device else [])
    if exp.init_from is not None:
        cmd += ["--init-from", str(exp.init_from)]
    return cmd + list(overrides)


def run_experiments(
    configs: Sequence[str | Path],
    data: str | Path,
    out: str | Path,
    *,
    gpus: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    poll_s: float = 1.0,
) -> list[ExperimentOutcome]:
    """Train every config; with ``gpus`` run one experiment per GPU concurrently, else one after another on CPU."""
    data, out = Path(data), Path(out)
    plan = plan_experiments(configs, out)
    if gpus:
        import torch

        if not torch.cuda.is_available():
            print("--gpus given but CUDA is not available: running the experiments in turn on the CPU", flush=True)
            gpus = None
    slots: list[str | None] = [str(g) for g in gpus] if gpus else [None]
    pending = list(plan)
    running: dict[str, tuple[subprocess.Popen, Experiment, float, object]] = {}  # slot -> process
    outcomes: dict[str, ExperimentOutcome] = {}
    print(f"{len(plan)} experiment(s) {'on GPUs ' + ','.join(slots) if gpus else 'in turn'} -> {out}", flush=True)
    while pending or running:
        for slot, (proc, exp, started, handle) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.close()
            outcomes[exp.name] = ExperimentOutcome(
                exp.name, proc.returncode, time.perf_counter() - started, exp.out, exp.out / "train.log"
            )
            state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {exp.out / 'train.log'})"
            print(f"[{exp.name}] {state} in {outcomes[exp.name].seconds:.0f} s", flush=True)
            del running[slot]
        free = [s for s in slots if str(s) not in running]
        for slot in free:
            ready = next(
                (e for e in pending if e.depends_on is None or e.depends_on in outcomes),
                None,
            )
            if ready is None:
                break
            pending.remove(ready)
            if ready.depends_on and outcomes[ready.depends_on].returncode != 0:
                outcomes[ready.name] = ExperimentOutcome(ready.name, -1, 0.0, ready.out, ready.out / "train.log")
                print(f"[{ready.name}] skipped: {ready.depends_on} failed", flush=True)
                continue
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            device = "cuda" if slot is not None else None  # no --gpus: the default device, one run at a time
            ready.out.mkdir(parents=True, exist_ok=True)
            handle = open(ready.out / "train.log", "w", encoding="utf-8")  # noqa: SIM115 - closed when it ends
            proc = subprocess.Popen(
                _command(ready, data, device, overrides), stdout=handle, stderr=subprocess.STDOUT, env=env
            )
            running[str(slot)] = (proc, ready, time.perf_counter(), handle)
            print(f"[{ready.name}] started" + (f" on GPU {slot}" if slot is not None else ""), flush=True)
        if running:
            time.sleep(poll_s)
        elif pending and not any(e.depends_on is None or e.depends_on in outcomes for e in pending):
            raise ConfigError(f"unresolvable experiment dependencies: {[e.name for e in pending]}")
    return [outcomes[e.name] for e in plan]
