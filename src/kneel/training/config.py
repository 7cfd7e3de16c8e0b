"""Training configuration: one typed dataclass, loaded from YAML, with ``key=value`` overrides.

A config file is a flat YAML mapping whose keys are the fields of :class:`TrainConfig`; the two mapping-valued fields
(``model_args`` for the network constructor, ``augment`` for the data augmentation) take dotted overrides such as
``augment.cutout=0.1``. Values of overrides are parsed as YAML (``epochs=2``, ``mixup=none``, ``lr=5e-4``,
``lr_milestones=[30,60]``). Any key that is not a field raises :class:`~kneel.errors.ConfigError` naming the key, so
a typo never silently trains the wrong experiment. The resolved config is written next to the trained model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kneel.errors import ConfigError

__all__ = [
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "member_config",
    "config_from_dict",
    "dump_config",
    "parse_override",
]

_CHOICES: dict[str, tuple[str, ...]] = {
    "stage": ("lc", "hc"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("none", "cosine", "step"),
    "loss": ("wing", "l1", "l2", "elastic", "robust"),
    "mixup": ("none", "two_pass", "standard"),
    "amp": ("auto", "bf16", "fp16", "none"),
}


@dataclass
class TrainConfig:
    """Everything that defines one training experiment (defaults: the paper's final high-cost recipe).

    Attributes:
        name: experiment name (used for output folder names by ``kneel experiments``).
        description: one line saying what the experiment tests.
        stage: ``lc`` (low-cost knee centre, 1 mm/px) or ``hc`` (high-cost 16 landmarks, 0.3 mm/px ROI).
        model: model preset of :func:`kneel.models.create_model`.
        model_args: constructor overrides for the preset (e.g. ``base_width: 8``).
        input_size: network input side (crop); ``None`` takes the preset's.
        pad: side of the zero-padded square the crop is taken from; ``None`` takes the preset's.
        input_spacing_mm: mm per network-input pixel; ``None`` keeps the paper's field of view at any input size
            (prepared spacing x 450 / input_size: 0.3 mm hc and 1 mm lc at 450 px).
        epochs: training epochs per fold.
        batch_size: training batch size (per process under DDP).
        val_batch_size: validation batch size.
        lr: learning rate.
        weight_decay: weight decay (0 in the paper's final recipe).
        optimizer: ``adam`` (paper), ``adamw`` or ``sgd`` (momentum ``momentum``).
        momentum: SGD momentum.
        schedule: learning-rate schedule per epoch: ``none`` (paper), ``cosine`` (to ``min_lr``) or ``step``.
        lr_milestones: epochs at which ``step`` multiplies the rate by ``lr_gamma``.
        lr_gamma: step factor.
        min_lr: final rate of ``cosine``.
        ema_decay: exponential moving average of the weights (validated and saved instead of the raw weights);
            0 switches it off.
        swa: stochastic weight averaging (reference ablations): from optimiser step ``swa_start`` on, learning rate
            ``swa_lr`` and an average of the weights every ``swa_freq`` steps, validated with re-estimated BatchNorm.
        swa_start: optimiser steps before averaging starts (reference 20).
        swa_freq: optimiser steps between averaged snapshots (reference 5).
        swa_lr: learning rate once averaging has started (reference 5e-4).
        loss: ``wing`` (paper), ``l1``, ``l2``, ``elastic`` or ``robust`` (Barron's adaptive loss).
        wing_width: wing loss ``w``.
        wing_curvature: wing loss ``epsilon``.
        spread_weight: weight of a penalty on the RMS radius of each soft-argmax heatmap (normalised units, 0.41 for
            a flat map), added to the training loss only; it asks for one sharp peak where a coordinate loss alone
            accepts a broad blob whose mean happens to land right. 0 (the paper) switches it off.
        elastic_weight: weight of the L2 term of the elastic loss.
        robust_alpha_init: initial shape of the adaptive robust loss.
        robust_scale_init: initial scale of the adaptive robust loss.
        mixup: ``two_pass`` (the reference's variant), ``standard`` or ``none``.
        mixup_alpha: Beta(alpha, alpha) parameter of the mixing weight.
        augment: augmentation settings (fields of ``kneel.data.augment.AugmentationConfig``); ``None`` trains on
            un-augmented images.
        folds: number of cross-validation folds; the fold file's folds are merged (fold % folds) when it has more.
        seed: seed of every random choice (shuffling, augmentation, mixup, dropout, initialisation).
        members: networks trained per fold, each on the fold's training knees with its own seed (member ``j``
            trains with ``seed + j``; member 0 is the fold's usual network): a deep ensemble. Prediction averages
            every network of the stage, and their spread is the uncertainty signal that ranks errors best; with 2
            folds the spread of two networks is one noisy distance, and more members make it a better estimate
            (docs/inference.md: on the demo's held-out knees 1 -> 3 members per fold raised the knee-level rank
            correlation of the calibrated radius with the error from 0.52 to 0.62). Costs ``members`` times the
            training and the high-cost prediction time.
        num_workers: data-loading worker processes.
        num_threads: torch CPU threads (0: torch's default). One thread is often faster for tiny models on a
            busy machine, and the thread count is part of what makes CPU runs bit-reproducible.
        drop_last: drop the last incomplete training batch (as the reference).
        norm_max_images: compute the normalisation statistics on at most this many training images (0: all).
        fold_processes: train this many folds at the same time, each in its own process (CPU only, not under
            ``torchrun``). On a small CPU two single-threaded folds side by side train about 1.4x faster than one
            fold on two threads (a tiny network's convolutions scale poorly across threads). Each process uses
            ``num_threads`` threads (0: the CPUs divided among the processes). Results are the same as training the
            folds one after the other with that many threads.
        val_every: validate every this many epochs (and always after the first and the last); only validated
            epochs can be kept as the best. Validation of a 2-fold split costs about a quarter of an epoch.
        val_from: validate (every ``val_every``-th epoch) only from this 1-based epoch on, besides the first and the
            last: with a cosine schedule the kept epoch comes late (the demo's tiny models keep epochs 17-20 of 20),
            so earlier validations only cost time. Training itself does not depend on it (validation draws no
            random numbers), so the result is the same as long as the best epoch is at or after ``val_from``.
        cache_images: keep the decoded prepared images in memory (per process) instead of reading and decoding each
            PNG again every epoch (decoding costs 2-4 ms per image on a CPU, about 10 % of a tiny model's training
            step). Memory: about 220 kB per high-cost ROI and 150 kB per low-cost image (off by default, for
            OAI-sized data; on for the tiny configs).
        init_from: transfer learning: ``None`` (from scratch), ``auto`` (the low-cost models in the same output or
            ``--init-from``), or a model/stage folder.
        transfer_exclude: parameter names containing any of these are not transferred (``out_block``).
        amp: mixed precision: ``none`` (float32, the default: reproducing the paper must not depend on reduced
            precision), or opt in with ``bf16``, ``fp16`` (with loss scaling) or ``auto`` (bf16 where supported, else
            fp16) on CUDA; on CPU only an explicit ``bf16`` applies (bfloat16 autocast).
        channels_last: channels-last memory format (CUDA and CPU: about 18 % faster training steps for the tiny models
            on a 2-core CPU).
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP.
        deterministic: ask PyTorch for deterministic kernels.
        tensorboard: write TensorBoard event files.
    """

    name: str = "experiment"
    description: str = ""
    stage: str = "hc"
    model: str = "kneel_hc"
    model_args: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None
    pad: int | None = None
    input_spacing_mm: float | None = None
    epochs: int = 100
    batch_size: int = 16
    val_batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "none"
    lr_milestones: list[int] = field(default_factory=lambda: [50, 80])
    lr_gamma: float = 0.1
    min_lr: float = 0.0
    ema_decay: float = 0.0
    swa: bool = False
    swa_start: int = 20
    swa_freq: int = 5
    swa_lr: float = 5e-4
    loss: str = "wing"
    wing_width: float = 15.0
    wing_curvature: float = 3.0
    spread_weight: float = 0.0
    elastic_weight: float = 0.5
    robust_alpha_init: float = 1.0
    robust_scale_init: float = 0.01
    mixup: str = "two_pass"
    mixup_alpha: float = 0.75
    augment: dict[str, Any] | None = field(default_factory=dict)
    folds: int = 5
    seed: int = 42
    members: int = 1
    num_workers: int = 0
    num_threads: int = 0
    drop_last: bool = True
    norm_max_images: int = 0
    cache_images: bool = False
    fold_processes: int = 1
    val_every: int = 1
    val_from: int = 1
    init_from: str | None = None
    transfer_exclude: list[str] = field(default_factory=lambda: ["out_block"])
    amp: str = "none"
    channels_last: bool = True
    sync_batchnorm: bool = False
    deterministic: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check choices and ranges; raises ``ConfigError`` naming the offending key."""
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {', '.join(choices)}")
        positive = ("epochs", "batch_size", "val_batch_size", "folds", "members")
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.swa and self.ema_decay > 0:
            raise ConfigError("swa and ema_decay are alternatives; switch one off")
        if self.swa and (self.swa_start < 0 or self.swa_freq < 1 or self.swa_lr <= 0):
            raise ConfigError("swa_start must be >= 0, swa_freq >= 1 and swa_lr > 0")
        if self.mixup != "none" and self.mixup_alpha <= 0:
            raise ConfigError(f"mixup_alpha: must be > 0, got {self.mixup_alpha}")
        if self.val_every < 1:
            raise ConfigError(f"val_every: must be >= 1, got {self.val_every}")
        if self.val_from < 1:
            raise ConfigError(f"val_from: must be >= 1, got {self.val_from}")
        if self.fold_processes < 1:
            raise ConfigError(f"fold_processes: must be >= 1, got {self.fold_processes}")
        if self.num_workers < 0 or self.norm_max_images < 0 or self.num_threads < 0:
            raise ConfigError("num_workers, num_threads and norm_max_images must be >= 0")
        if self.input_size is not None and self.pad is not None and self.pad < self.input_size:
            raise ConfigError(f"pad: {self.pad} is smaller than input_size {self.input_size}")
        if self.augment is not None:
            from kneel.data.augment import AugmentationConfig

            try:
                AugmentationConfig.from_dict(self.augment)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"augment: {exc}") from None
            except ConfigError as exc:
                raise ConfigError(f"augment: {exc.reason}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
_MAPPING_FIELDS = ("model_args", "augment")


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's type hint (ints accepted for floats); raise ConfigError otherwise."""
    hint = _HINTS[key]
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: may not be null")
    base = [a for a in args if a is not type(None)][0] if isinstance(hint, types.UnionType) else hint
    origin = typing.get_origin(base) or base
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is float and isinstance(value, str):  # PyYAML reads '1e-3' (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if origin is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if origin is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if origin in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if origin is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, origin):
        raise ConfigError(f"{key}: expected {getattr(origin, '__name__', origin)}, got {value!r}")
    if origin is dict:
        return dict(value)
    return value


def config_from_dict(values: Mapping[str, Any], source: str | Path | None = None) -> TrainConfig:
    """Build a config from a mapping, rejecting unknown keys (the message names the key and the file)."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r}", source)
        kwargs[key] = _coerce(key, value)
    try:
        return TrainConfig(**kwargs)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with the value parsed as YAML (so ``2`` is an int, ``none`` a string)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key, value


def apply_overrides(config: TrainConfig, overrides: Iterable[str] | Mapping[str, Any]) -> TrainConfig:
    """A new config with ``key=value`` overrides applied (dotted keys reach into ``model_args`` and ``augment``)."""
    values = config.to_dict()
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
    for key, value in items:
        head, _, tail = key.partition(".")
        if head not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r}")
        if tail:
            if head not in _MAPPING_FIELDS:
                raise ConfigError(f"unknown config key {key!r}: only {', '.join(_MAPPING_FIELDS)} take dotted keys")
            section = dict(values.get(head) or {})
            section[tail] = value
            values[head] = section
        else:
            values[head] = value
    return config_from_dict(values)


def member_config(config: TrainConfig, member: int) -> TrainConfig:
    """The config member ``member`` of a fold trains with (``members``): the same, with ``seed + member``."""
    if not 0 <= member < config.members:
        raise ConfigError(f"member {member} outside 0..{config.members - 1} (members: {config.members})")
    return config if member == 0 else apply_overrides(config, {"seed": config.seed + member})


def load_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Read a YAML config file and apply overrides; the experiment name defaults to the file's stem.

    A path that does not exist may name a config shipped with kneel (``tiny_lc.yaml``, ``paper/<name>.yaml``, also
    as ``configs/...``; see :func:`kneel.resources.packaged_config`), so they work from any folder and from a wheel.
    """
    path = Path(path)
    if not path.exists():
        from kneel.resources import packaged_config

        path = packaged_config(path) or path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config file not found", path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("a config file must be a mapping of key: value", path)
    raw.setdefault("name", path.stem)
    config = config_from_dict(raw, source=path)
    return apply_overrides(config, overrides)


def dump_config(config: TrainConfig) -> str:
    """The config as YAML text (keys in field order), loadable by :func:`load_config`."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
