"""A disk cache of quantised int8 graphs, so that ``--precision int8`` calibrates once per model, not at every start.

Building the int8 networks (:mod:`kneel.inference.int8`) runs the float32 pipeline on the calibration radiographs
and quantises every fold: about a minute for small models, several for the paper-size ones on 2 CPU cores. The
result is a pure function of the weights, the calibration radiographs and the quantisation code, so it is kept under
``<cache root>/int8/<key>/`` (the cache root of :func:`kneel.hub.cache_root`: ``$KNEEL_CACHE``,
``$XDG_CACHE_HOME/kneel`` or ``~/.cache/kneel``) and loaded on the next start.

The key is a SHA-256 over everything that decides the graphs: each fold's files (weights and configuration, by
content), the calibration radiographs (by content; the default synthetic films by their seed, count and the kneel
version that generates them), the float32 modules, and the versions of kneel, ONNX Runtime and PyTorch. A changed
model or calibration set therefore never reuses old graphs. An entry is written to a temporary folder and renamed
into place (atomic); an unreadable or incomplete entry is ignored (rebuilt), and a cache that cannot be written only
costs the time to quantise again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INT8_CACHE_FORMAT", "int8_cache_key", "load_cached_graphs", "store_graphs"]

INT8_CACHE_FORMAT = 1
"""Bump when the quantisation changes in a way the versions below would not show."""

_META = "meta.json"


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    """The file's name and content into ``digest``; a safetensors header canonically (its metadata is written in a
    random order, so the same weights saved twice differ in bytes)."""
    digest.update(path.name.encode() + b"\0")
    with open(path, "rb") as fh:
        if path.suffix == ".safetensors":
            size = fh.read(8)
            header = fh.read(int.from_bytes(size, "little")) if len(size) == 8 else b""
            try:
                digest.update(json.dumps(json.loads(header), sort_keys=True).encode())
            except ValueError:  # not a safetensors file after all: its bytes as they are
                digest.update(size + header)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def int8_cache_key(
    stage_dirs: Sequence[str | os.PathLike[str]],
    films: Sequence[str | os.PathLike[str]] | None,
    float_modules: Sequence[str],
) -> str:
    """The cache key (hex SHA-256) of the int8 graphs of ``stage_dirs`` calibrated on ``films`` (None: default)."""
    import onnxruntime
    import torch

    import kneel
    from kneel.inference.int8 import CALIBRATION_FILMS, CALIBRATION_SEED
    from kneel.models.weights import fold_dirs

    digest = hashlib.sha256()
    header = {
        "format": INT8_CACHE_FORMAT,
        "kneel": kneel.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "float_modules": list(float_modules),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for stage in stage_dirs:
        for fold in fold_dirs(stage):
            digest.update(b"fold\0")
            for path in sorted(p for p in Path(fold).iterdir() if p.is_file()):
                _hash_file(digest, path)
    if films is None:
        digest.update(f"synthetic films: n={CALIBRATION_FILMS} seed={CALIBRATION_SEED}".encode())
    else:
        from kneel.inference.discovery import find_inputs

        found, _ = find_inputs(films)
        for item in sorted(found, key=lambda f: str(f.path)):
            _hash_file(digest, Path(item.path))
    return digest.hexdigest()


def _entry(key: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    from kneel.hub.cache import cache_root

    return cache_root(cache_dir) / "int8" / key[:40]


def load_cached_graphs(
    key: str, counts: dict[str, int], cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, list[bytes]] | None:
    """The cached graphs per stage (``counts``: folds per stage name), or None when the entry is missing or broken."""
    entry = _entry(key, cache_dir)
    try:
        meta = json.loads((entry / _META).read_text())
        if meta.get("key") != key or meta.get("folds") != counts:
            return None
        return {
            stage: [(entry / f"{stage}_fold_{i}.onnx").read_bytes() for i in range(n)] for stage, n in counts.items()
        }
    except (OSError, ValueError):
        return None


def store_graphs(
    key: str, graphs: dict[str, list[bytes]], cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """Write the graphs (per stage) as one cache entry; returns its folder, or None (with a warning) if it failed."""
    entry = _entry(key, cache_dir)
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
        for stage, stage_graphs in graphs.items():
            for i, graph in enumerate(stage_graphs):
                (tmp / f"{stage}_fold_{i}.onnx").write_bytes(graph)
        meta = {"key": key, "folds": {stage: len(g) for stage, g in graphs.items()}}
        (tmp / _META).write_text(json.dumps(meta, indent=1))  # written last: an entry without it is incomplete
        if entry.exists():  # a broken entry (a valid one would have been loaded): replace it
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:
            if load_cached_graphs(key, meta["folds"], cache_dir) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process stored the same entry meanwhile
        return entry
    except OSError as exc:
        warnings.warn(
            f"could not cache the int8 graphs in {entry} ({exc}); the next start quantises again", stacklevel=2
        )
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return None
