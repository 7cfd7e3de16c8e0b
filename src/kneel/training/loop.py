"""Cross-validated training of one stage: the fold loop, the epoch loop, validation in mm, checkpoints, OOF tables.

:func:`train` is what ``kneel train`` calls. For each fold it builds the datasets from ``DATA/folds.csv``, computes
the normalisation statistics on the fold's un-augmented training images, initialises the network (from the fold's
low-cost model for a fine-tuned high-cost stage), trains with the config's recipe, keeps the best epoch by
validation loss (``fold_<k>/model.safetensors`` + ``config.json``) and the last one (``fold_<k>/last.pt``), and
finally predicts its validation knees with the best weights (out-of-fold predictions).

Every random choice of an epoch is seeded from ``(seed, fold, epoch, rank)`` at the epoch's start, so a run resumed
from the checkpoint of epoch ``e`` is bit-identical on CPU to one that never stopped.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from kneel.errors import ConfigError, KneelError, option
from kneel.io.atomic import atomic_write_text
from kneel.landmarks import CENTRE_LANDMARK, LANDMARKS
from kneel.models.mirroring import MIRROR_KEY, augment_mirrors
from kneel.training.checkpoint import (
    LAST_CHECKPOINT,
    check_resume_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from kneel.training.config import TrainConfig, apply_overrides, dump_config, load_config, member_config
from kneel.training.cv import (
    OOF_GROUND_TRUTH,
    OOF_PREDICTIONS,
    check_transfer_folds,
    find_transfer_source,
    load_fold_table,
    merge_oof_tables,
    split_subjects,
    transfer_weights,
)
from kneel.training.ddp import DistributedContext, init_distributed, maybe_no_sync
from kneel.training.ema import ModelEma
from kneel.training.losses import SpreadPenalty, create_loss
from kneel.training.mixup import draw_mixup, mixup_terms
from kneel.training.normalization import compute_mean_std
from kneel.training.run_log import MetricsLog
from kneel.training.swa import WeightAverage

__all__ = ["train", "TrainResult", "FoldResult", "TrainingError", "Geometry", "resolve_geometry", "lr_at"]

REFERENCE_INPUT = 450
"""The paper's network input side; other input sizes keep its field of view unless ``input_spacing_mm`` is set."""
THRESHOLDS_MM = (1.0, 1.5, 2.0, 2.5)
RESOLVED_CONFIG = "config.resolved.yaml"


class TrainingError(KneelError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class FoldResult:
    """What one fold's training produced (one network: the fold's, or one member of its ensemble)."""

    fold: int
    fold_dir: Path
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    member: int = 0

    @property
    def best(self) -> dict[str, Any]:
        """The metrics row of the best epoch."""
        return next((r for r in self.history if r["epoch"] == self.best_epoch), {})


@dataclass
class TrainResult:
    """What :func:`train` produced: the stage folder, the resolved config and each trained fold."""

    stage_dir: Path
    config: TrainConfig
    folds: list[FoldResult]
    oof_predictions: Path | None = None
    oof_ground_truth: Path | None = None


@dataclass(frozen=True)
class Geometry:
    """Network input geometry of a run."""

    input_size: int
    pad: int
    scale: float  # resampling factor of the prepared image (input_size / 450: the paper's field of view)
    input_spacing_mm: float | None  # explicit mm per input pixel (takes precedence over scale)


def resolve_geometry(config: TrainConfig) -> Geometry:
    """Input size and pad from the config or, where unset, from the model preset."""
    from kneel.models import get_preset

    preset = get_preset(config.model)
    if preset.stage != config.stage:
        raise ConfigError(f"model: preset {config.model!r} is a {preset.stage} model but stage is {config.stage!r}")
    size = int(config.input_size or preset.crop)
    if config.pad is not None:
        pad = int(config.pad)
    elif config.input_size is None:
        pad = int(preset.pad)
    else:
        pad = int(round(size * preset.pad / preset.crop))
    if pad < size:
        raise ConfigError(f"pad: {pad} is smaller than input_size {size}")
    return Geometry(size, pad, size / REFERENCE_INPUT, config.input_spacing_mm)


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of (0-based) ``epoch`` under the config's schedule (a pure function: resume-safe)."""
    if config.schedule == "cosine":
        return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * epoch / config.epochs))
    if config.schedule == "step":
        return config.lr * config.lr_gamma ** sum(1 for m in config.lr_milestones if epoch >= m)
    return config.lr


def _epoch_seed(seed: int, fold: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, fold, epoch, rank]).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _workers(config: TrainConfig) -> int:
    """Loader workers: the config's, at most the CPUs this process may use (results do not depend on it)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(config.num_workers, cpus)


def _set_determinism(config: TrainConfig, device: torch.device) -> None:
    if not config.deterministic:
        torch.backends.cudnn.benchmark = device.type == "cuda"
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # Some CUDA kernels (bilinear upsampling backward) have no deterministic version: warn, do not fail.
    torch.use_deterministic_algorithms(True, warn_only=True)


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type == "cpu" and config.amp == "bf16":
        # Asked for explicitly: bfloat16 autocast on CPU (AVX512-BF16/AMX: tiny steps about 1.35x faster).
        return torch.bfloat16
    if device.type != "cuda" or config.amp == "none":
        return None
    if config.amp == "fp16":
        return torch.float16
    if config.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


# ---------------------------------------------------------------------------------------------------------- epochs
class _Runner:
    """The per-fold training state: model, loss, optimiser, EMA, AMP, normalisation, device."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistributedContext,
        model: nn.Module,
        criterion: nn.Module,
        mean: list[float],
        std: list[float],
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.device = ctx.device
        self.model = model
        self.criterion = criterion
        self.channels_last = config.channels_last
        self.amp_dtype = _amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.optimizer = _make_optimizer(config, list(model.parameters()) + list(criterion.parameters()))
        self.ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None
        self.swa = WeightAverage(model, config.swa_start, config.swa_freq) if config.swa else None
        self.steps = 0
        self.set_normalisation(mean, std)
        self.net: nn.Module = model
        if ctx.distributed:
            ids = [ctx.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def set_normalisation(self, mean: list[float], std: list[float]) -> None:
        self.mean_values, self.std_values = list(mean), list(std)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @property
    def eval_model(self) -> nn.Module:
        if self.ema is not None:
            return self.ema.module
        if self.swa is not None and self.swa.active:
            return self.swa.module
        return self.model

    def step_lr(self, epoch_lr: float) -> float:
        """The learning rate of the next optimiser step (SWA switches to ``swa_lr`` once averaging starts)."""
        lr = self.config.swa_lr if self.swa is not None and self.steps >= self.config.swa_start else epoch_lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    @torch.no_grad()
    def refresh_swa_bn(self, loader: DataLoader) -> None:
        """Re-estimate the averaged model's BatchNorm statistics on one pass over ``loader``."""
        if self.swa is None or not self.swa.active:
            return
        batches = (self._inputs(batch)[0] for batch in loader)
        self.swa.update_bn(batches, lambda net, x: self._forward(net, x))

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        images = (images - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, batch["keypoints"].to(self.device, non_blocking=True)

    def _forward(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Network output in float32 (the loss is always computed in float32, also under autocast)."""
        if self.amp_dtype is None:
            return net(images)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return net(images).float()

    def train_epoch(
        self, loader: DataLoader, rng: np.random.Generator, desc: str, progress: bool, epoch_lr: float
    ) -> float:
        """One pass over ``loader``; returns the mean training loss (over all processes)."""
        self.net.train()
        self.criterion.train()
        total = torch.zeros(2, dtype=torch.float64)
        bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress and self.ctx.is_main))
        loss_params = [p for p in self.criterion.parameters() if p.requires_grad]
        for batch in bar:
            images, targets = self._inputs(batch)
            draw = None
            if self.config.mixup != "none":
                draw = draw_mixup(images.shape[0], self.config.mixup_alpha, rng)
            self.optimizer.zero_grad(set_to_none=True)
            self.step_lr(epoch_lr)
            terms = mixup_terms(
                self.config.mixup, lambda x: self._forward(self.net, x), self.criterion, images, targets, draw
            )
            batch_loss = 0.0
            for i, term in enumerate(terms):
                with maybe_no_sync(self.net, skip=i < len(terms) - 1):
                    loss = term()
                    self.scaler.scale(loss).backward()
                batch_loss += float(loss.detach())
            if not math.isfinite(batch_loss):
                raise TrainingError(f"training loss is {batch_loss} ({desc}); lower lr or check the data")
            if self.ctx.distributed and loss_params:
                for p in loss_params:
                    if p.grad is not None:
                        self.ctx.all_reduce_sum(p.grad)
                        p.grad /= self.ctx.world_size
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.steps += 1
            if self.ema is not None:
                self.ema.update(self.model)
            if self.swa is not None:
                self.swa.step(self.model, self.steps)
            total += torch.tensor([batch_loss * images.shape[0], images.shape[0]], dtype=torch.float64)
            bar.set_postfix(loss=f"{batch_loss:.4f}")
        bar.close()
        self.ctx.all_reduce_sum(total)
        return float(total[0] / total[1]) if total[1] > 0 else float("nan")

    @torch.no_grad()
    def predict(self, loader: DataLoader, net: nn.Module | None = None) -> tuple[float, np.ndarray, list[int]]:
        """Validation loss (mean over items), normalised predictions (N, K, 2) and dataset indices, in order."""
        net = self.eval_model if net is None else net
        net.eval()
        self.criterion.eval()
        loss_sum, count, preds, indices = 0.0, 0, [], []
        for batch in loader:
            images, targets = self._inputs(batch)
            pred = self._forward(net, images)
            loss_sum += float(self.criterion(pred, targets)) * images.shape[0]
            count += images.shape[0]
            preds.append(pred.cpu().numpy())
            indices.extend(int(i) for i in batch["index"])
        pred_all = np.concatenate(preds) if preds else np.zeros((0, 1, 2), np.float32)
        return loss_sum / max(count, 1), pred_all, indices

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else {k: v.cpu() for k, v in self.ema.state_dict().items()},
            "swa": None if self.swa is None else self.swa.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.swa is not None and state.get("swa") is not None:
            self.swa.load_state_dict(state["swa"])
        self.steps = int(state.get("steps", 0))


def _errors_mm(dataset: Any, pred_norm: np.ndarray, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions mapped back to the prepared images (exact inverse of the input transform) and errors in mm."""
    from kneel.evaluation.metrics import landmark_errors_mm

    size = dataset.input_size
    pred_prepared = np.empty(pred_norm.shape, dtype=np.float64)
    true_prepared = np.empty(pred_norm.shape, dtype=np.float64)
    for row, index in enumerate(indices):
        back = dataset.input_transform(index).inverse()
        pred_prepared[row] = back.apply(pred_norm[row].astype(np.float64) * size)
        true_prepared[row] = dataset.keypoints_prepared(index)
    errors = landmark_errors_mm(pred_prepared, true_prepared, dataset.prepared_spacing)
    return pred_prepared, errors


def _validates(config: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: the first, the last, and from epoch ``val_from`` (1-based) on
    every ``val_every``-th."""
    if epoch == 0 or epoch + 1 == config.epochs:
        return True
    return epoch + 1 >= config.val_from and (epoch + 1) % config.val_every == 0


def _metrics(errors: np.ndarray) -> dict[str, float]:
    from kneel.evaluation.metrics import recall_at

    finite = errors[np.isfinite(errors)]
    recall = recall_at(errors.ravel(), THRESHOLDS_MM)
    out = {
        "val_mean_mm": float(finite.mean()) if finite.size else float("nan"),
        "val_median_mm": float(np.median(finite)) if finite.size else float("nan"),
    }
    for t in THRESHOLDS_MM:
        out[f"recall_{t:g}mm"] = recall[float(t)]
    return out


def _landmark_ids(stage: str, k: int) -> list[int]:
    return [CENTRE_LANDMARK] if stage == "lc" else list(range(k))


def _oof_tables(
    dataset: Any, pred_prepared: np.ndarray, indices: Sequence[int], fold: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long landmark tables (prepared image frame) of predictions and ground truth."""
    spacing = float(dataset.prepared_spacing)
    ids = _landmark_ids(dataset.stage, pred_prepared.shape[1])
    pred_rows, gt_rows = [], []
    for row, index in enumerate(indices):
        meta = dataset.row(index)
        subject, side = int(meta["subject_id"]), str(meta["side"])
        file = f"{subject}_{side}"
        truth = dataset.keypoints_prepared(index)
        for j, lm in enumerate(ids):
            px, py = (float(v) for v in pred_prepared[row, j])
            tx, ty = (float(v) for v in truth[j])
            common = {"file": file, "side": side, "landmark": lm, "name": LANDMARKS[lm].name}
            pred_rows.append(
                {
                    **common,
                    "x_px": px,
                    "y_px": py,
                    "x_mm": px * spacing,
                    "y_mm": py * spacing,
                    "fold": fold,
                    "subject_id": subject,
                }
            )
            gt_rows.append(
                {
                    **common,
                    "x_px": tx,
                    "y_px": ty,
                    "x_mm": tx * spacing,
                    "y_mm": ty * spacing,
                    "kl": int(meta["kl"]),
                    "subject_id": subject,
                }
            )
    return pd.DataFrame(pred_rows), pd.DataFrame(gt_rows)


def _write_table(table: pd.DataFrame, path: Path) -> None:
    """Write a long landmark table (validated, sorted, exact floats, atomic) with :mod:`kneel.io.landmark_table`."""
    from kneel.io.landmark_table import write_landmark_table

    write_landmark_table(table, path)


# ---------------------------------------------------------------------------------------------------------- folds
def _train_fold(
    ctx: DistributedContext,
    config: TrainConfig,
    geometry: Geometry,
    data: Path,
    stage_dir: Path,
    fold: int,
    subjects: tuple[list[int], list[int]],
    transfer_src: Path | None,
    resume: bool,
    progress: bool,
    member: int = 0,
) -> FoldResult:
    from kneel.data.augment import Augmentation, AugmentationConfig
    from kneel.data.datasets import LandmarkDataset
    from kneel.models import ModelConfig, create_model, fold_dir_name, load_fold, save_fold

    config = member_config(config, member)
    fold_dir = stage_dir / fold_dir_name(fold, member)
    member_tag = f" member {member}" if member else ""
    ckpt_path = fold_dir / LAST_CHECKPOINT
    state = load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None
    if state is not None:
        check_resume_config(state.get("config"), config.to_dict(), ckpt_path)

    augment = None if config.augment is None else Augmentation(AugmentationConfig.from_dict(config.augment))
    spacing_kw: dict[str, float] = (
        {"input_spacing": geometry.input_spacing_mm} if geometry.input_spacing_mm else {"scale": geometry.scale}
    )

    image_store: dict[str, np.ndarray] | bool = {} if config.cache_images else False

    def dataset(subj: list[int], aug: Any) -> LandmarkDataset:
        return LandmarkDataset(
            data,
            config.stage,
            subj,
            aug,
            geometry.input_size,
            geometry.pad,
            config.seed,
            cache=image_store,
            **spacing_kw,
        )

    train_subjects, val_subjects = subjects
    train_ds, val_ds = dataset(train_subjects, augment), dataset(val_subjects, None)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ConfigError(f"fold {fold}: {len(train_ds)} training and {len(val_ds)} validation knees", data)
    per_step = config.batch_size * ctx.world_size
    if config.drop_last and len(train_ds) < per_step:
        raise ConfigError(
            f"batch_size: {config.batch_size} x {ctx.world_size} process(es) exceeds the {len(train_ds)} training "
            f"knees of fold {fold} (lower batch_size or set drop_last=false)"
        )

    if state is not None:
        mean, std = state["mean"], state["std"]
    else:
        mean, std = compute_mean_std(
            dataset(train_subjects, None),
            max_images=config.norm_max_images,
            batch_size=config.val_batch_size,
            num_workers=_workers(config),
            ctx=ctx,
        )

    torch.manual_seed(_epoch_seed(config.seed, fold, 2**31 - 1, 0))  # initial weights
    model = create_model(config.model, **config.model_args)
    n_out = getattr(model, "n_outputs", None)
    if n_out is not None and n_out != train_ds.num_keypoints:
        raise ConfigError(
            f"model: {config.model} has {n_out} outputs but the {config.stage} data has "
            f"{train_ds.num_keypoints} landmarks"
        )
    transferred_from = None
    if transfer_src is not None:
        transfer_weights(model, transfer_src / f"fold_{fold}", config.transfer_exclude)
        transferred_from = str(transfer_src / f"fold_{fold}")
    if ctx.distributed and config.sync_batchnorm:
        if ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif ctx.is_main:
            warnings.warn("sync_batchnorm needs CUDA (PyTorch has no CPU SyncBatchNorm); ignored", stacklevel=2)
    model = model.to(ctx.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = create_loss(config, train_ds.num_keypoints)
    if config.spread_weight > 0:
        criterion = SpreadPenalty(criterion, model, config.spread_weight)
    criterion = criterion.to(ctx.device)
    runner = _Runner(config, ctx, model, criterion, mean, std)

    start_epoch, history = 0, []
    best_val_loss, best_epoch = float("inf"), 0
    if state is not None:
        runner.load_state_dict(state)
        start_epoch = int(state["epoch"])
        history = [dict(r) for r in state["history"]]
        best_val_loss, best_epoch = float(state["best_val_loss"]), int(state["best_epoch"])

    log = MetricsLog(
        fold_dir / "metrics.csv",
        stage_dir / "tensorboard" / fold_dir.name if config.tensorboard else None,
        enabled=ctx.is_main,
        purge_step=start_epoch + 1 if state is not None else None,
    )
    val_loader = DataLoader(val_ds, batch_size=config.val_batch_size, shuffle=False, num_workers=_workers(config))
    pin = ctx.device.type == "cuda"
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            lr = lr_at(config, epoch)
            seed = _epoch_seed(config.seed, fold, epoch, ctx.rank)
            _seed_everything(seed)
            train_ds.set_epoch(epoch)
            generator = torch.Generator().manual_seed(seed)
            if ctx.distributed:
                sampler: Any = DistributedSampler(
                    train_ds, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed + fold, drop_last=True
                )
                sampler.set_epoch(epoch)
            else:
                sampler = RandomSampler(train_ds, generator=generator)
            loader = DataLoader(
                train_ds,
                batch_size=config.batch_size,
                sampler=sampler,
                num_workers=_workers(config),
                drop_last=config.drop_last,
                pin_memory=pin,
                worker_init_fn=_worker_init,
                generator=generator,
            )
            desc = f"{config.stage} fold {fold}{member_tag} epoch {epoch + 1}/{config.epochs}"
            train_loss = runner.train_epoch(loader, np.random.default_rng(seed), desc, progress, lr)
            lr = runner.optimizer.param_groups[0]["lr"]
            if runner.swa is not None:
                runner.refresh_swa_bn(loader)
            if _validates(config, epoch):
                val_loss, pred, indices = runner.predict(val_loader)
                _, errors = _errors_mm(val_ds, pred, indices)
                val_loss = float(ctx.broadcast(torch.tensor([val_loss], dtype=torch.float64))[0])
            else:  # skipped (val_every): no numbers, never the kept epoch
                val_loss, errors = float("nan"), np.full((1, 1), np.nan)
            is_best = val_loss < best_val_loss
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": train_loss,
                "val_loss": val_loss,
                **({k: float("nan") for k in _metrics(errors)} if math.isnan(val_loss) else _metrics(errors)),
                "best": is_best,
                "epoch_time_s": time.perf_counter() - started,
            }
            history.append(row)
            if is_best:
                best_val_loss, best_epoch = val_loss, epoch + 1
            if ctx.is_main:
                if is_best:
                    model_config = ModelConfig.from_preset(
                        config.model, fold=fold, mean=mean, std=std, model_args=config.model_args
                    )
                    model_config.spacing_mm = float(val_ds.input_spacing)
                    model_config.pad, model_config.crop = geometry.pad, geometry.input_size
                    model_config.extra = {
                        "trained_by": "kneel train",
                        "experiment": config.name,
                        "epoch": epoch + 1,
                        "val_loss": val_loss,
                        "val_mean_mm": row["val_mean_mm"],
                        "transferred_from": transferred_from,
                        MIRROR_KEY: augment_mirrors(config.augment),
                        **({"member": member, "seed": config.seed} if config.members > 1 else {}),
                    }
                    save_fold(runner.eval_model, model_config, fold_dir)
                save_checkpoint(
                    ckpt_path,
                    {
                        **runner.state_dict(),
                        "experiment": config.name,
                        "config": config.to_dict(),
                        "epoch": epoch + 1,
                        "best_val_loss": best_val_loss,
                        "best_epoch": best_epoch,
                        "history": history,
                        "mean": list(mean),
                        "std": list(std),
                        "rng": rng_state(),
                    },
                )
                log.write(history)
                tqdm.write(
                    f"{desc}: train {train_loss:.4f} val {val_loss:.4f} mean {row['val_mean_mm']:.2f} mm "
                    f"({row['epoch_time_s']:.1f} s)" + (" *" if is_best else "")
                )
            ctx.barrier()
    finally:
        log.close()

    if ctx.is_main:
        best_model, _ = load_fold(fold_dir, ctx.device)
        _, pred, indices = runner.predict(val_loader, best_model)
        pred_prepared, _ = _errors_mm(val_ds, pred, indices)
        oof_pred, oof_gt = _oof_tables(val_ds, pred_prepared, indices, fold)
        _write_table(oof_pred, fold_dir / OOF_PREDICTIONS)
        _write_table(oof_gt, fold_dir / OOF_GROUND_TRUTH)
    ctx.barrier()
    return FoldResult(fold, fold_dir, best_epoch, best_val_loss, history, member)


def _fold_process(
    config: TrainConfig,
    geometry: Geometry,
    data: Path,
    stage_dir: Path,
    fold: int,
    subjects: tuple[list[int], list[int]],
    transfer_src: Path | None,
    resume: bool,
    threads: int,
    member: int = 0,
) -> FoldResult:
    """One fold (member) in a child process of :func:`_train_folds_in_processes` (CPU, no process group)."""
    torch.set_num_threads(threads)
    _set_determinism(config, torch.device("cpu"))
    ctx = DistributedContext(device=torch.device("cpu"))
    return _train_fold(ctx, config, geometry, data, stage_dir, fold, subjects, transfer_src, resume, False, member)


def _train_folds_in_processes(
    processes: int,
    config: TrainConfig,
    geometry: Geometry,
    data: Path,
    stage_dir: Path,
    jobs: list[tuple[int, int, tuple[list[int], list[int]]]],
    transfer_src: Path | None,
    resume: bool,
) -> list[FoldResult]:
    """Train ``jobs`` (fold, member, subjects) ``processes`` at a time in fresh (spawned) processes; order kept."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = config.num_threads or max(1, (os.cpu_count() or 1) // processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [
            pool.submit(
                _fold_process, config, geometry, data, stage_dir, fold, subjects, transfer_src, resume, threads, member
            )
            for fold, member, subjects in jobs
        ]
        return [f.result() for f in futures]


def _warn_about_stale_members(stage_dir: Path, folds: Sequence[int], members: int) -> None:
    """Warn about member folders of these folds beyond ``members`` (an earlier run's): prediction loads every network
    of the stage, so they would join the ensemble."""
    from kneel.models.weights import fold_and_member, fold_dirs

    try:
        found = fold_dirs(stage_dir)
    except KneelError:
        return
    for path in found:
        fold, member = fold_and_member(path.name) or (-1, 0)
        if fold in folds and member >= members:
            warnings.warn(
                f"{path}: a member of an earlier run (members={members} now); prediction loads every network of "
                "the stage, so remove it unless it belongs to this ensemble",
                stacklevel=3,
            )


# ---------------------------------------------------------------------------------------------------------- entry
def train(
    config: TrainConfig | str | Path,
    data: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    folds: Sequence[int] | None = None,
    init_from: str | Path | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train every (or the selected) cross-validation fold of one stage into ``out/<stage>/``.

    Args:
        config: a :class:`TrainConfig` or the path of a YAML config.
        data: the prepared-data folder (``kneel prepare``).
        out: the model folder; this stage goes to ``out/lc`` or ``out/hc``.
        overrides: ``key=value`` strings applied on top of the config.
        folds: train only these folds (default: all ``config.folds``); the OOF tables cover the folds present.
        init_from: low-cost model (or stage) folder to initialise the high-cost folds from (transfer learning).
        resume: continue each fold from its ``last.pt`` (folds already finished are only re-predicted).
        device: ``cpu``, ``cuda`` or ``None`` (CUDA when available). Under ``torchrun`` each rank takes its GPU.
        progress: show progress bars.
    """
    if isinstance(config, TrainConfig):
        config = apply_overrides(config, overrides) if overrides else config
    else:
        config = load_config(config, overrides)
    data, out = Path(data), Path(out)
    ctx = init_distributed(device)
    try:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        _set_determinism(config, ctx.device)
        geometry = resolve_geometry(config)
        config = apply_overrides(config, {"input_size": geometry.input_size, "pad": geometry.pad})
        stage_dir = out / config.stage
        table = load_fold_table(data, config.folds)
        selected = list(range(config.folds)) if folds is None else sorted({int(f) for f in folds})
        bad = [f for f in selected if not 0 <= f < config.folds]
        if bad:
            raise ConfigError(f"{option('folds')} {bad} outside 0..{config.folds - 1}")
        if config.stage == "lc" and (config.init_from is not None or init_from is not None):
            raise ConfigError("init_from: transfer learning initialises the high-cost stage; the lc stage has none")
        transfer_src = find_transfer_source(config.init_from, out, init_from)
        if transfer_src is not None:
            check_transfer_folds(transfer_src, table, selected)
        from kneel.models import fold_dir_name

        jobs = [(fold, member, split_subjects(table, fold)) for fold in selected for member in range(config.members)]
        _warn_about_stale_members(stage_dir, selected, config.members)
        if resume:  # every fold's checkpoint, before anything (the resolved config too) is overwritten
            for fold, member, _ in jobs:
                ckpt = stage_dir / fold_dir_name(fold, member) / LAST_CHECKPOINT
                if ckpt.is_file():
                    check_resume_config(
                        load_checkpoint(ckpt).get("config"), member_config(config, member).to_dict(), ckpt
                    )
        if ctx.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(stage_dir / RESOLVED_CONFIG, dump_config(config))
            atomic_write_text(stage_dir / "folds.csv", table.to_csv(index=False))
        ctx.barrier()
        processes = min(config.fold_processes, len(jobs))
        if processes > 1 and not ctx.distributed and ctx.device.type == "cpu":
            results = _train_folds_in_processes(
                processes, config, geometry, data, stage_dir, jobs, transfer_src, resume
            )
        else:
            results = [
                _train_fold(
                    ctx, config, geometry, data, stage_dir, fold, subjects, transfer_src, resume, progress, member
                )
                for fold, member, subjects in jobs
            ]
        result = TrainResult(stage_dir, config, results)
        if ctx.is_main:
            preds, gts = merge_oof_tables(stage_dir)
            if not preds.empty:
                result.oof_predictions = stage_dir / OOF_PREDICTIONS
                result.oof_ground_truth = stage_dir / OOF_GROUND_TRUTH
                _write_table(preds, result.oof_predictions)
                _write_table(gts, result.oof_ground_truth)
        ctx.barrier()
        return result
    finally:
        ctx.close()
