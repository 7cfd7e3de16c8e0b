"""ONNX export of a fold model: soft-argmax inside the graph, dynamic batch, checked against ONNX Runtime.

The graph takes the *normalised* image ``(B, 3, crop, crop)`` float32 (``(x - mean) / std`` per channel, the values
being in the model's ``config.json`` and also stored in the ONNX metadata) and returns normalised ``(x, y)``
``(B, K, 2)``. Two exporters exist in PyTorch: the ``torch.export``-based one (``"dynamo"``, needs ``onnxscript``)
and the legacy TorchScript one (``"torchscript"``); ``"auto"`` takes the first when ``onnxscript`` is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from kneel.errors import ModelError, option
from kneel.models.weights import CONFIG_NAME, ModelConfig, _write_bytes, fold_dirs, load_fold

__all__ = ["Exporter", "export_onnx", "export_model_onnx", "onnx_model_bytes", "onnx_session", "resolve_fold_dir"]

Exporter = Literal["auto", "dynamo", "torchscript"]
INPUT_NAME = "image"
OUTPUT_NAME = "landmarks"


def _onnx_modules():  # noqa: ANN202 - optional heavy imports, with a clear message when missing
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"ONNX export needs {', '.join(missing)}: pip install 'kneel[onnx]'")
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def resolve_fold_dir(model_dir: str | os.PathLike[str], fold: int | None = None) -> Path:
    """``model_dir`` itself when it is a fold folder, else its ``fold_<fold>`` (default: the lowest fold)."""
    root = Path(model_dir)
    if (root / CONFIG_NAME).is_file():
        if fold is not None and root.name != f"fold_{fold}":
            raise ModelError(f"{option('fold', str(fold))} given but this is the fold folder {root.name}", root)
        return root
    dirs = fold_dirs(root)
    if fold is None:
        return dirs[0]
    for d in dirs:
        if d.name == f"fold_{fold}":
            return d
    raise ModelError(f"no fold_{fold} (found {', '.join(d.name for d in dirs)})", root)


def _export_bytes(model: nn.Module, example: torch.Tensor, exporter: str, opset: int | None) -> bytes:
    if exporter == "auto":
        exporter = "dynamo" if importlib.util.find_spec("onnxscript") is not None else "torchscript"
    if exporter == "dynamo":
        if importlib.util.find_spec("onnxscript") is None:
            raise ModelError("the dynamo ONNX exporter needs onnxscript: pip install 'kneel[onnx]'")
        # The exporter logs one warning per torchvision operator it cannot register; kneel uses none of them.
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            stack.callback(quiet.setLevel, level)
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                opset_version=opset,
                verbose=False,
                optimize=True,
            )
        buffer = io.BytesIO()
        program.save(buffer)  # type: ignore[union-attr]
        return buffer.getvalue()
    if exporter == "torchscript":
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset or 17,
                do_constant_folding=True,
            )
        return buffer.getvalue()
    raise ModelError(f"unknown exporter {exporter!r}; expected auto, dynamo or torchscript")


def onnx_session(path_or_bytes: str | os.PathLike[str] | bytes, threads: int | None = None):  # noqa: ANN201
    """An ONNX Runtime CPU session (``threads`` intra-op threads; default: runtime's choice).

    Without ONNX Runtime's CPU memory arena: an ensemble holds one session per fold, and each arena keeps the peak
    activation memory of its own session, so ten paper-size int8 folds held 1.7 GB where they need 0.86 GB, at the
    same speed (measured on the 2-core development machine, 5-fold stages, 450-px ROIs).
    """
    _, ort = _onnx_modules()
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    if threads:
        options.intra_op_num_threads = threads
    source = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_model_bytes(
    model: nn.Module,
    *,
    input_size: int,
    config: ModelConfig | None = None,
    exporter: Exporter = "auto",
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> bytes:
    """The serialised ONNX model of ``model``; optionally checked with ONNX Runtime against PyTorch.

    Args:
        model: the network (exported in eval mode; not modified). Not an inference-optimised copy: its fused
            oneDNN convolutions have no ONNX equivalent.
        input_size: side of the square example input (the batch dimension is dynamic).
        config: model configuration stored as ``kneel_config`` metadata (mean/std, geometry).
        exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset (exporter default when ``None``).
        check: compare ONNX Runtime with PyTorch at batch 2 (max abs difference ``<= atol``).
        atol: tolerance of that check on the normalised coordinates.
    """
    onnx, _ = _onnx_modules()
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(2, 3, input_size, input_size, generator=gen)
        data = _export_bytes(model, example, exporter, opset)
        proto = onnx.load_from_string(data)
        if config is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = "kneel_config", config.to_json()
        entry = proto.metadata_props.add()
        io_doc = {"input": f"{INPUT_NAME}: (B, 3, H, W) float32, (x - mean) / std", "output": f"{OUTPUT_NAME}: (B,K,2)"}
        entry.key, entry.value = "kneel_io", json.dumps(io_doc)
        data = proto.SerializeToString()
        if check:
            with torch.no_grad():
                expected = model(example).numpy()
            got = onnx_session(data).run(None, {INPUT_NAME: example.numpy()})[0]
            err = float(np.abs(got - expected).max())
            if not np.isfinite(err) or err > atol:
                raise ModelError(f"ONNX Runtime differs from PyTorch by {err:.3g} (> {atol})")
    finally:
        model.train(was_training)
    return data


def export_model_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    input_size: int,
    config: ModelConfig | None = None,
    exporter: Exporter = "auto",
    opset: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Export ``model`` to the file ``out`` (atomic write); arguments as :func:`onnx_model_bytes`."""
    try:
        data = onnx_model_bytes(
            model, input_size=input_size, config=config, exporter=exporter, opset=opset, check=check, atol=atol
        )
    except ModelError as exc:
        raise ModelError(exc.reason, out) from exc
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes(path, data)
    return path


def export_onnx(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fold: int | None = None,
    exporter: Exporter = "auto",
    opset: int | None = None,
    check: bool = True,
) -> Path:
    """Export one fold of a kneel model folder (a ``fold_<k>`` folder or a stage folder) to ONNX.

    Args:
        model_dir: ``MODEL/hc/fold_0`` or ``MODEL/hc`` (then ``fold`` picks the fold, default the lowest).
        out: destination ``.onnx`` file.
        fold: fold index when ``model_dir`` is a stage folder.
        exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"``.
        opset: ONNX opset.
        check: verify ONNX Runtime against PyTorch (max abs difference <= 1e-4).
    """
    fold_dir = resolve_fold_dir(model_dir, fold)
    model, config = load_fold(fold_dir)
    return export_model_onnx(
        model, out, input_size=config.crop, config=config, exporter=exporter, opset=opset, check=check
    )
