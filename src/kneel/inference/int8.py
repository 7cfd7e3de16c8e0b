"""Calibration images for the int8 networks: the ROIs the pipeline itself feeds the networks.

The int8 graphs (:mod:`kneel.models.int8`) take their activation ranges from calibration images. So that calibration
sees exactly what inference sees, :func:`calibration_rois` runs the float32 pipeline on radiographs and records every
network input of both stages (low-cost whole-image inputs, high-cost ROIs of the first and the refinement pass).

Where the radiographs come from: the ones given (``Predictor(..., precision="int8", int8_calibration=FILES)``), or
by default 16 synthetic training-split films generated on the fly (``kneel synth --n 16 --seed 5 --split train
--layout flat``; a pure function of the seed, so the default int8 networks are reproducible). Synthetic films suit
the models trained on synthetic data; for a model trained on real radiographs give some of its training films.
Building the int8 ensembles this way costs about a minute on 2 CPU cores for small models and several minutes for
the paper-size ones (films, float32 pass, quantisation); the graphs are therefore cached on disk
(:mod:`kneel.inference.int8_cache`) and later starts with the same weights and calibration films load them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneel.errors import ConfigError

__all__ = ["CALIBRATION_FILMS", "CALIBRATION_SEED", "calibration_rois", "load_int8_stages"]

CALIBRATION_FILMS = 16
CALIBRATION_SEED = 5


class _Recorder:
    """Delegates to a float32 ensemble and keeps a copy of every input it is given."""

    def __init__(self, ensemble: Any) -> None:
        self._ensemble = ensemble
        self.seen: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ensemble, name)

    def __len__(self) -> int:
        return len(self._ensemble)

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(images.detach().cpu().float().numpy())
        return self._ensemble.predict(images)

    def predict_with_heatmap_radius(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.seen.append(images.detach().cpu().float().numpy())
        return self._ensemble.predict_with_heatmap_radius(images)


def calibration_rois(
    lc: Any, hc: Any, films: Sequence[str | os.PathLike[str]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The network inputs ``(N, 1, H, W)`` 0-255 of the low-cost and the high-cost stage for ``films``.

    Args:
        lc, hc: float32 :class:`~kneel.models.FoldEnsemble` of each stage.
        films: radiographs (files, folders, glob patterns, as ``kneel predict`` takes them); default: the 16
            synthetic training films of seed 5 (see the module docstring).
    """
    from kneel.inference.discovery import find_inputs
    from kneel.inference.pipeline import Predictor

    rec_lc, rec_hc = _Recorder(lc), _Recorder(hc)
    predictor = Predictor.from_ensembles(rec_lc, rec_hc, force=True)
    with tempfile.TemporaryDirectory(prefix="kneel-int8-films-") as tmp:
        if films is None:
            from kneel.synth import generate_cohort

            generate_cohort(
                tmp, CALIBRATION_FILMS, seed=CALIBRATION_SEED, layout="flat", split="train", workers=1, progress=False
            )
            films = [tmp]
        found, _ = find_inputs(films)
        if not found:
            raise ConfigError(f"no radiograph among the int8 calibration inputs {[os.fspath(f) for f in films]}")
        for item in found:
            predictor.predict(Path(item.path))
    if not rec_lc.seen or not rec_hc.seen:
        raise ConfigError("the int8 calibration radiographs gave no network input (no knee found in any)")
    return np.concatenate(rec_lc.seen), np.concatenate(rec_hc.seen)


def load_int8_stages(
    lc_dir: str | os.PathLike[str],
    hc_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    films: Sequence[str | os.PathLike[str]] | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """The int8 :class:`~kneel.models.FoldEnsemble` of both stages, calibrated on the ROIs of ``films``.

    Args:
        lc_dir, hc_dir: the stage folders (``fold_<k>/`` inside).
        device: must be the CPU.
        films: calibration radiographs (default: the 16 synthetic training films, see the module docstring).
        cache: reuse the graphs of an earlier start with the same weights and calibration films, and keep new ones
            (:mod:`kneel.inference.int8_cache`); False always calibrates and quantises, and writes nothing.
        cache_dir: the cache root (default: ``$KNEEL_CACHE``, ``$XDG_CACHE_HOME/kneel`` or ``~/.cache/kneel``).

    Raises:
        ModelError: ``device`` is not the CPU (int8 runs in ONNX Runtime on CPU), before any work is done.
    """
    from kneel.errors import ModelError
    from kneel.inference.int8_cache import int8_cache_key, load_cached_graphs, store_graphs
    from kneel.models import load_stage
    from kneel.models.int8 import FLOAT_MODULES
    from kneel.models.weights import fold_dirs

    if torch.device(device).type != "cpu":
        raise ModelError(f"int8 runs on the CPU only (ONNX Runtime), not on {device}; use fp32, bf16 or fp16 there")
    stages = {"lc": lc_dir, "hc": hc_dir}
    key = int8_cache_key(list(stages.values()), films, FLOAT_MODULES) if cache else ""
    counts = {stage: len(fold_dirs(path)) for stage, path in stages.items()}
    graphs = load_cached_graphs(key, counts, cache_dir) if cache else None
    if graphs is not None:
        return tuple(  # type: ignore[return-value]
            load_stage(path, device, precision="int8", int8_graphs=graphs[stage]) for stage, path in stages.items()
        )
    lc_rois, hc_rois = calibration_rois(load_stage(lc_dir), load_stage(hc_dir), films)
    lc = load_stage(lc_dir, device, precision="int8", calibration=lc_rois)
    hc = load_stage(hc_dir, device, precision="int8", calibration=hc_rois)
    if cache:
        store_graphs(key, {"lc": lc.int8_graphs, "hc": hc.int8_graphs}, cache_dir)
    return lc, hc
