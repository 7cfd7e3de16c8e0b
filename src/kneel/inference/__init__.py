"""Inference: radiographs to 16 landmarks per knee, in original pixels and millimetres, with uncertainty.

* :class:`Predictor` (``Predictor(model_dir, device, precision, refine, knees).predict(path_or_radiograph)``) ->
  :class:`RadiographPrediction` holding a :class:`KneePrediction` per knee found.
* :func:`predict_files`: the batch engine behind ``kneel predict`` (workers, resume, shards, outputs).
* :mod:`kneel.inference.geometry`: one exact affine chain per stage; :mod:`kneel.inference.reference_geometry`: the
  reference's inexact mapping (``--reference-geometry``); :mod:`kneel.inference.presence`: the knee presence rule.
"""

from __future__ import annotations

from kneel.inference.discovery import InputFile, discover_inputs, parse_shard, shard_of
from kneel.inference.engine import RunSummary, predict_files
from kneel.inference.geometry import StageGeometry, hc_transform, lc_transform
from kneel.inference.pipeline import Predictor, PreparedRadiograph, Preparer
from kneel.inference.presence import KneesMode, PresenceRule
from kneel.inference.results import QUALITY_MAX_MM, QUALITY_MEDIAN_MM, KneePrediction, RadiographPrediction

__all__ = [
    "Predictor",
    "Preparer",
    "PreparedRadiograph",
    "KneePrediction",
    "RadiographPrediction",
    "KneesMode",
    "PresenceRule",
    "StageGeometry",
    "lc_transform",
    "hc_transform",
    "predict_files",
    "RunSummary",
    "InputFile",
    "discover_inputs",
    "parse_shard",
    "shard_of",
    "QUALITY_MEDIAN_MM",
    "QUALITY_MAX_MM",
]
