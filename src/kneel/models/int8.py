"""int8 fold networks: ONNX Runtime static QDQ quantisation with the accuracy-critical layers kept in float32.

Route chosen by measurement on the 2-core development machine (AVX-512 VNNI, AMX; small trained model, 192 px
high-cost input at 0.625 mm; see docs/models.md): ONNX Runtime's static QDQ quantisation (per-channel int8 weights,
uint8 activations, min-max calibration on real network inputs) ran a fold in about half the time of the float32
ONNX Runtime graph. Quantising every layer moved single-fold landmarks by up to 0.29 mm (mean 0.05 mm) from float32;
almost all of it came from the activations (int8 weights with 16-bit activations: 0.04 mm), spread over every layer.
Keeping the entry blocks (``layer1``, ``layer2``: few channels, where int8 gained no time), the mixer and the output
convolution in float32, and the soft-argmax in PyTorch float32, brought the two-fold ensemble to 0.08 mm (mean 0.02 mm)
on ROIs, but end to end (``kneel predict``, 60 held-out films, 1904 landmarks) to 0.110 mm, over the 0.1 mm bound;
keeping the outermost hourglass level in float32 as well (only the nested levels, at 1/8 resolution and below, run in
int8) brought the end-to-end maximum to 0.075 mm (mean 0.014 mm), keeping only its full-resolution branch to 0.097 mm.
PyTorch 2 export quantisation (``X86InductorQuantizer``) is no longer in ``torch.ao`` from PyTorch 2.13 (it moved to
``torchao``) and OpenVINO is not a dependency: neither was measured.

The quantised graph returns heatmap logits ``(B, K, H/4, W/4)``; :class:`~kneel.models.ensemble.FoldEnsemble` applies
the fold's own float32 soft-argmax, so the heatmap radius (an uncertainty signal) is available as in float32.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kneel.errors import ModelError

__all__ = ["FLOAT_MODULES", "quantize_heatmaps_onnx"]

_TOP_LEVEL = tuple(
    f"hourglass/{name}" for name in ("upper1", "upper2", "upper3", "lower1", "lower2", "lower3", "lower5")
)
FLOAT_MODULES: tuple[str, ...] = ("layer1", "layer2", *_TOP_LEVEL, "mixer", "out_block")
"""Modules of ``HourglassNet`` that stay float32 in the int8 graph: the entry blocks, the outermost hourglass level
(all its blocks but the nested levels ``hourglass/lower4``), the mixer and the output convolution (see the module
docstring)."""


class _Heatmaps(nn.Module):
    """``model.heatmaps`` as a module's forward, for export (no soft-argmax in the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.heatmaps(x)


def _excluded(names: Sequence[str], modules: Sequence[str]) -> list[str]:
    return [n for n in names if any(f"/{m}/" in f"{n}/" for m in modules)]


def quantize_heatmaps_onnx(
    model: nn.Module,
    calibration: np.ndarray,
    *,
    float_modules: Sequence[str] = FLOAT_MODULES,
) -> bytes:
    """The int8 ONNX graph of ``model.heatmaps``, calibrated on ``calibration``.

    Args:
        model: a float32 ``HourglassNet`` (not an inference-optimised copy; not modified).
        calibration: normalised network inputs ``(N, 3, H, W)`` float32 (``(x - mean) / std``), the images the
            quantisation ranges are taken from (min-max over all of them, one image per calibration step).
        float_modules: top-level modules whose nodes stay float32.

    Returns:
        The serialised QDQ model: input ``image`` (B, 3, H, W) float32, one output: the heatmap logits
        (B, K, H/4, W/4) float32.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from kneel.models.export import INPUT_NAME, _export_bytes, _onnx_modules

    onnx, _ = _onnx_modules()
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or calibration.shape[0] == 0 or calibration.shape[1] != 3:
        raise ModelError(f"int8 calibration needs normalised images (N >= 1, 3, H, W), got {calibration.shape}")
    was_training = model.training
    model.eval()
    try:
        example = torch.from_numpy(calibration[:2].copy())
        data = _export_bytes(_Heatmaps(model), example, "torchscript", None)
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(data)
    exclude = _excluded([n.name for n in proto.graph.node], float_modules)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._next = iter(range(calibration.shape[0]))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self._next, None)
            return None if i is None else {INPUT_NAME: calibration[i : i + 1]}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static warns to pre-process the model (shape inference); not needed here
    try:
        with tempfile.TemporaryDirectory(prefix="kneel-int8-") as tmp:
            src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(data)
            quantize_static(
                str(src),
                str(dst),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=exclude,
            )
            out = dst.read_bytes()
    finally:
        root.setLevel(level)
    quantized = onnx.load_from_string(out)
    if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
        raise ModelError("int8 quantisation left no quantised node (every layer excluded?)")
    return out
