"""The KNEEL network, its presets, weights on disk, fold ensembles and inference speedups.

* ``create_model(name, **overrides)``: build a preset (``list_presets()``: ``kneel_lc``, ``kneel_hc``, ablations,
  ``kneel_tiny_*``). ``model(x)`` -> normalised ``(x, y)`` (B, K, 2); ``model.heatmaps(x)`` -> logits (B, K, h, w).
* ``ModelConfig``, ``save_fold``, ``load_fold``, ``load_stage``: the ``MODEL/{lc,hc}/fold_<k>/`` format.
* ``FoldEnsemble``: all folds of a stage, mean and spread of their predictions.
* ``optimize_for_inference``: BatchNorm folding + channels-last (exact); ``autocast`` for bf16/fp16.
* ``kneel.models.snapshot``: conversion of the reference snapshots; ``kneel.models.onnx``: ONNX export.
"""

from __future__ import annotations

from kneel.models._registry import Preset, create_model, get_preset, list_presets
from kneel.models.blocks import HourglassResidual, MultiScaleResidual, SqueezeExcitation
from kneel.models.ensemble import Backend, FoldEnsemble
from kneel.models.hourglass import Hourglass, HourglassNet, SoftArgmax2D, heatmap_size
from kneel.models.inference import Precision, autocast, fold_batchnorm, optimize_for_inference
from kneel.models.weights import (
    ModelConfig,
    build_model,
    fold_dir_name,
    fold_dirs,
    load_fold,
    load_pretrained,
    load_stage,
    save_fold,
)

__all__ = [
    "create_model",
    "list_presets",
    "get_preset",
    "Preset",
    "HourglassNet",
    "Hourglass",
    "SoftArgmax2D",
    "MultiScaleResidual",
    "HourglassResidual",
    "SqueezeExcitation",
    "heatmap_size",
    "ModelConfig",
    "build_model",
    "save_fold",
    "load_fold",
    "load_stage",
    "load_pretrained",
    "fold_dirs",
    "fold_dir_name",
    "FoldEnsemble",
    "Backend",
    "Precision",
    "optimize_for_inference",
    "fold_batchnorm",
    "autocast",
]
