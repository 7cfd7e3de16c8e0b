"""kneel's model-directory format: ``<stage>/fold_<k>/{model.safetensors, config.json}``, loadable with no pickle.

``config.json`` is a :class:`ModelConfig`: the preset and constructor arguments (the folder alone rebuilds the
network) plus everything inference needs to feed it (stage, working spacing, ROI size, pad/crop, mean/std).
Training, the snapshot converter and inference all go through :func:`save_fold` / :func:`load_fold`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from kneel.errors import ConfigError, KneelError, ModelError
from kneel.models._registry import get_preset, list_presets
from kneel.models.blocks import skipping_init
from kneel.models.hourglass import HourglassNet

if TYPE_CHECKING:
    from kneel.models.ensemble import Backend, FoldEnsemble, Precision

__all__ = [
    "ModelConfig",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "save_fold",
    "load_fold",
    "load_stage",
    "build_model",
    "fold_dirs",
    "fold_dir_name",
    "fold_and_member",
    "load_state_dict_into",
    "load_pretrained",
    "read_config",
    "read_weights",
]

_SPACING_RANGE = (0.01, 20.0)
"""Plausible working spacing of a network input (mm per pixel): 0.3 (high-cost) to 3.5 (tiny low-cost)."""
_CROP_RANGE = (8, 4096)
"""Plausible network input side (pixels)."""

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
STAGES = ("lc", "hc")
_FOLD_RE = re.compile(r"^fold_(\d+)(?:_m(\d+))?$")
"""``fold_<k>`` (member 0, the fold's network) or ``fold_<k>_m<j>`` (member ``j`` of a deep ensemble, ``members``)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild one fold model and feed it (saved as ``config.json`` beside the weights).

    Attributes:
        preset: preset name the model was built from (``kneel_hc``, ...); the arguments below take precedence.
        model_args: complete constructor arguments of the network.
        stage: ``"lc"`` (low-cost knee centre) or ``"hc"`` (high-cost landmarks).
        fold: cross-validation fold index.
        spacing_mm: working pixel spacing of the network input (1.0 lc, 0.3 hc).
        roi_size_mm: high-cost ROI side (140 mm); ``None`` for lc.
        pad: side of the zero-padded square (520).
        crop: network input side, centre crop at inference (450).
        mean: channel means of the 0-255 input.
        std: channel standard deviations of the 0-255 input.
        extra: free-form provenance (source snapshot, training run, epoch, metrics, ...).
    """

    preset: str
    model_args: dict[str, Any]
    stage: str
    fold: int = 0
    spacing_mm: float = 0.3
    roi_size_mm: float | None = 140.0
    pad: int = 520
    crop: int = 450
    mean: list[float] = field(default_factory=lambda: [128.0, 128.0, 128.0])
    std: list[float] = field(default_factory=lambda: [64.0, 64.0, 64.0])
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, not {self.stage!r}")
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"mean and std need 3 values each, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ConfigError(f"std values must be positive, got {self.std}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ConfigError(f"mean and std must be finite, got {self.mean} and {self.std}")
        self.fold = int(self.fold)
        self.spacing_mm = float(self.spacing_mm)
        self.roi_size_mm = None if self.roi_size_mm is None else float(self.roi_size_mm)
        self.pad, self.crop = int(self.pad), int(self.crop)
        self.model_args = dict(self.model_args)
        # Checked here, when a model folder is loaded, not per file at inference (nor as a huge allocation).
        if not (math.isfinite(self.spacing_mm) and _SPACING_RANGE[0] <= self.spacing_mm <= _SPACING_RANGE[1]):
            raise ConfigError(f"spacing_mm {self.spacing_mm} outside {_SPACING_RANGE[0]}-{_SPACING_RANGE[1]} mm")
        if not _CROP_RANGE[0] <= self.crop <= _CROP_RANGE[1]:
            raise ConfigError(f"crop {self.crop} outside {_CROP_RANGE[0]}-{_CROP_RANGE[1]} pixels")
        if self.pad < self.crop:
            raise ConfigError(f"pad {self.pad} is smaller than crop {self.crop}")
        if self.stage == "hc" and self.roi_size_mm is None:
            raise ConfigError("a high-cost model needs roi_size_mm")
        if self.roi_size_mm is not None and not (math.isfinite(self.roi_size_mm) and 0 < self.roi_size_mm <= 1000):
            raise ConfigError(f"roi_size_mm {self.roi_size_mm} outside 0-1000 mm")
        if self.fold < 0:
            raise ConfigError(f"fold must be >= 0, got {self.fold}")

    @classmethod
    def from_preset(
        cls,
        preset: str,
        *,
        fold: int = 0,
        mean: list[float] | tuple[float, ...] | None = None,
        std: list[float] | tuple[float, ...] | None = None,
        model_args: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ModelConfig:
        """The configuration of a preset (geometry and default statistics), with the given fold/mean/std/args."""
        p = get_preset(preset)
        return cls(
            preset=preset,
            model_args={**p.model_args, **(model_args or {})},
            stage=p.stage,
            fold=fold,
            spacing_mm=p.spacing_mm,
            roi_size_mm=p.roi_size_mm,
            pad=p.pad,
            crop=p.crop,
            mean=list(p.mean if mean is None else mean),
            std=list(p.std if std is None else std),
            extra=dict(extra or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        missing = sorted({"preset", "model_args", "stage"} - set(data))
        if missing:
            raise ConfigError(f"model config lacks {', '.join(missing)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("model config must be a JSON object")
        return cls.from_dict(data)


def build_model(config: ModelConfig) -> HourglassNet:
    """A freshly initialised network for ``config`` (its ``model_args`` on top of the preset's)."""
    base = get_preset(config.preset).model_args if config.preset in list_presets() else {}
    try:
        return HourglassNet(**{**base, **config.model_args})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build a network from model_args {config.model_args}: {exc}") from exc


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        from kneel.io.atomic import atomic_write_bytes
    except ImportError:  # partial install: same temp-file-then-replace protocol
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    atomic_write_bytes(path, data)


def save_fold(model: nn.Module, config: ModelConfig, fold_dir: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``fold_dir`` atomically; returns the folder.

    The constructor arguments recorded in ``config.model_args`` are taken from the model itself
    (``model.init_args``), so the folder always rebuilds exactly this network. A BatchNorm-folded (inference
    optimised) model cannot be saved: its weights no longer match the architecture.
    """
    net = getattr(model, "module", model)  # DataParallel / DDP
    net = getattr(net, "_orig_mod", net)  # torch.compile
    if getattr(net, "bn_folded", False):
        raise ModelError("refusing to save a BatchNorm-folded model; save the original", fold_dir)
    if isinstance(net, HourglassNet):
        config.model_args = dict(net.init_args)
    out = Path(fold_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": "kneel", "preset": config.preset, "stage": config.stage, "fold": str(config.fold)}
    _write_bytes(out / WEIGHTS_NAME, safetensors.torch.save(state, metadata=metadata))
    _write_bytes(out / CONFIG_NAME, config.to_json().encode("utf-8"))
    return out


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """Strict load with a readable ``ModelError`` naming the first missing/unexpected/mis-shaped keys."""
    problems = _state_mismatch(model, state)
    if problems:
        raise ModelError("weights do not match the architecture; " + problems, source)
    model.load_state_dict(state, strict=True)


def _state_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """The first missing, unexpected and mis-shaped keys of ``state`` for ``model`` ("" when they match)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def read_config(fold_dir: str | os.PathLike[str]) -> ModelConfig:
    """The ``config.json`` of a fold folder."""
    path = Path(fold_dir) / CONFIG_NAME
    try:
        return ModelConfig.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"no {CONFIG_NAME} (not a kneel model folder)", path) from None
    except KneelError as exc:
        raise ModelError(exc.reason, path) from exc


def read_weights(fold_dir: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict stored in ``fold_dir`` (on CPU) and its file; a clear :class:`ModelError` if missing or
    unreadable."""
    path = Path(fold_dir) / WEIGHTS_NAME
    try:
        # Read, not memory-mapped: the tensors of a mapped file keep the whole mapping alive (and BatchNorm folding
        # copies its pages on write), which held ~16 MB per paper-size fold beside the optimised weights; reading
        # gives each tensor its own memory (ten folds: 356 -> 212 MB resident after optimisation, and faster).
        return safetensors.torch.load(path.read_bytes()), path
    except FileNotFoundError:
        raise ModelError(f"no {WEIGHTS_NAME}", path) from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"unreadable weights: {exc}", path) from exc


def load_fold(fold_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[HourglassNet, ModelConfig]:
    """Rebuild and load one fold model (eval mode) from ``fold_dir``; no pickle involved.

    The network ``config.json`` describes is first built on PyTorch's meta device (shapes, no memory) and checked
    against the stored weights, so a wrong or hostile config (``base_width: 20000``: 14 GB) is a :class:`ModelError`
    naming the file, not an allocation failure.
    """
    config = read_config(fold_dir)
    state, path = read_weights(fold_dir)
    with torch.device("meta"), skipping_init():  # every tensor comes from the file: no random initialisation
        skeleton = build_model(config)
    problems = _state_mismatch(skeleton, state)
    if problems:
        raise ModelError(f"{CONFIG_NAME} does not describe these weights (model_args {config.model_args}); "
                         f"{problems}", Path(fold_dir))  # fmt: skip
    # The checked skeleton takes the loaded tensors themselves (no second, randomly initialised build: start-up).
    skeleton.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in (*skeleton.named_parameters(), *skeleton.named_buffers()) if t.is_meta]
    if left:  # every tensor of the network is stored in the file (the check above), so this cannot happen
        raise ModelError(f"weights leave {', '.join(left[:3])} unset", path)
    return skeleton.to(device).eval(), config


def load_pretrained(
    model: nn.Module, fold_dir: str | os.PathLike[str], *, exclude: tuple[str, ...] = ("out_block.",)
) -> list[str]:
    """Initialise ``model`` from a saved fold except the keys starting with ``exclude`` (transfer learning).

    The reference initialises each high-cost fold from the low-cost model of the same fold, dropping the output
    convolution (KNEEL_REFERENCE 5.8); BatchNorm statistics are transferred too. Every other key must exist in both
    with the same shape. Returns the loaded keys.
    """
    source, path = read_weights(fold_dir)
    keep = {k: v for k, v in source.items() if not k.startswith(exclude)}
    # The excluded entries keep the model's own values; everything else must match exactly (strict, same shapes).
    own = {k: v for k, v in model.state_dict().items() if k.startswith(exclude)}
    load_state_dict_into(model, {**own, **keep}, path)
    return sorted(keep)


def fold_dir_name(fold: int, member: int = 0) -> str:
    """The folder of one trained network: ``fold_<k>``, or ``fold_<k>_m<j>`` for member ``j >= 1`` of the fold."""
    return f"fold_{fold}" if member == 0 else f"fold_{fold}_m{member}"


def fold_and_member(name: str) -> tuple[int, int] | None:
    """``(fold, member)`` of a network folder's name (:func:`fold_dir_name`), ``None`` for any other name."""
    m = _FOLD_RE.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def fold_dirs(stage_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``fold_<k>`` (and member ``fold_<k>_m<j>``) sub-folders holding a model, sorted by fold, then member."""
    root = Path(stage_dir)
    if not root.is_dir():
        raise ModelError("model stage folder not found", root)
    found = []
    for child in root.iterdir():
        key = fold_and_member(child.name)
        if key and child.is_dir() and (child / CONFIG_NAME).is_file():
            found.append((*key, child))
    if not found:
        raise ModelError(f"no fold_<k>/{CONFIG_NAME} folders", root)
    return [p for _, _, p in sorted(found)]


def load_stage(
    stage_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    precision: Precision = "fp32",
    optimize: bool = True,
    chunk_size: int | None = None,
    backend: Backend = "torch",
    calibration: Any = None,
    int8_graphs: Any = None,
) -> FoldEnsemble:
    """All folds of one stage (``MODEL/lc`` or ``MODEL/hc``) as a :class:`FoldEnsemble` ready for inference.

    Args:
        stage_dir: folder holding ``fold_<k>/``.
        device: where the models run.
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast, ``"int8"`` (CPU; needs ``calibration``).
        optimize: fold BatchNorm into the convolutions, channels-last, fused convolutions (same numbers, faster).
        chunk_size: images per forward call (see :class:`FoldEnsemble`).
        backend: ``"torch"`` or ``"onnxruntime"`` (see :class:`FoldEnsemble`).
        calibration: int8 only: the 0-255 network inputs the quantisation ranges come from (see
            :class:`FoldEnsemble`).
        int8_graphs: int8 only, instead of ``calibration``: the folds' quantised graphs (see :class:`FoldEnsemble`).
    """
    from kneel.models.ensemble import FoldEnsemble

    loaded = [load_fold(d, "cpu") for d in fold_dirs(stage_dir)]
    models = [m for m, _ in loaded]
    configs = [c for _, c in loaded]
    ensemble = FoldEnsemble(
        models,
        configs,
        precision=precision,
        optimize=optimize,
        chunk_size=chunk_size,
        backend=backend,
        calibration=calibration,
        int8_graphs=int8_graphs,
        optimize_inplace=True,  # the models were loaded here for this ensemble alone
    )
    return ensemble.to(device)
