"""The cross-validation fold models of one stage run as one predictor (the reference averages their outputs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from kneel.errors import ModelError
from kneel.models.inference import autocast, optimize_for_inference
from kneel.models.weights import ModelConfig

__all__ = ["FoldEnsemble", "Precision", "Backend", "ENSEMBLE_PRECISIONS"]

Backend = Literal["torch", "onnxruntime"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
ENSEMBLE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")


class _SoftArgmaxOnly(nn.Module):
    """What an int8 ensemble keeps of a float32 fold: its soft-argmax (the heatmaps come from the int8 graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.sagm = model.sagm
        self.eval()


class FoldEnsemble:
    """Runs every fold model on the same images; returns the mean normalised ``(x, y)`` and the folds' spread.

    Each fold normalises the 0-255 input with its own mean/std (they may differ between folds). One-channel input is
    repeated to the three channels the network expects.

    Args:
        models: fold networks (any order; configs give the fold index).
        configs: one :class:`ModelConfig` per model, all of the same stage and input size.
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast, or ``"int8"``: each fold is quantised once,
            here, by :func:`kneel.models.int8.quantize_heatmaps_onnx` (ONNX Runtime static QDQ, per-channel int8
            weights, uint8 activations; entry blocks, outermost hourglass level, mixer, output convolution float32)
            with the ranges of ``calibration``, and run by ONNX Runtime on CPU; the soft-argmax stays float32
            PyTorch. CPU only, inputs of the configured crop size only. Not exact: see docs/models.md for the measured
            deviation.
        optimize: replace each model by its inference-optimised copy (BatchNorm folded, channels-last, fused
            convolutions; exact to about 1e-7).
        optimize_inplace: optimise the given models themselves instead of copies (no deep copy: faster start-up;
            the models can no longer be trained or saved afterwards). For models nobody else holds.
        chunk_size: images per forward call; larger batches are split. Default on CPU: 1 in float32, 2 in
            bfloat16/float16 (measured on the idle 2-core development machine, paper network, 2 threads, ms per image
            in calls of 1 / 2 / 4 / 8: float32 92 / 103 / 110 / -, bfloat16 53 / 47 / 50 / 59; the feature maps of
            one or two images stay in cache); 32 on other devices.
        backend: ``"torch"`` (default) or ``"onnxruntime"``: each fold is exported to ONNX in memory when the
            ensemble is built (seconds per fold at 450 px) and run by ONNX Runtime on CPU, float32 only, for inputs of
            the configured crop size (others, and other devices, use PyTorch). Exact to about 1e-7; on the 2-core
            development machine it was the fastest float32 variant under load (see docs/models.md).
        calibration: int8 only, and required then: the network inputs the quantisation ranges come from,
            ``(N, 1|3, crop, crop)`` 0-255 images exactly as :meth:`predict` receives them (ROIs the pipeline
            prepared; :func:`kneel.inference.int8.calibration_rois` collects them from radiographs). The same images
            give the same int8 networks.
        int8_graphs: int8 only, instead of ``calibration``: the folds' already quantised graphs (serialised ONNX, one
            per model in order, as :attr:`int8_graphs` of an ensemble built from calibration images gives them); how
            :func:`kneel.inference.int8.load_int8_stages` reuses its cache without calibrating again.

    Example:
        >>> ens = load_stage("MODEL/hc")  # doctest: +SKIP
        >>> mean, spread = ens.predict(images)  # (B, 16, 2) normalised, (B, 16) normalised  # doctest: +SKIP
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        configs: Sequence[ModelConfig],
        *,
        precision: Precision = "fp32",
        optimize: bool = True,
        chunk_size: int | None = None,
        backend: Backend = "torch",
        calibration: torch.Tensor | np.ndarray | None = None,
        int8_graphs: Sequence[bytes] | None = None,
        optimize_inplace: bool = False,
    ) -> None:
        if not models or len(models) != len(configs):
            raise ModelError(f"need one config per model, got {len(models)} models and {len(configs)} configs")
        stages = {c.stage for c in configs}
        crops = {c.crop for c in configs}
        if len(stages) > 1 or len(crops) > 1:
            raise ModelError(f"folds disagree on stage {sorted(stages)} or input size {sorted(crops)}")
        if precision not in ENSEMBLE_PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(ENSEMBLE_PRECISIONS)}, not {precision!r}")
        if backend not in ("torch", "onnxruntime"):
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', not {backend!r}")
        if backend == "onnxruntime" and precision == "int8":
            raise ValueError("int8 runs its own ONNX Runtime graphs; leave backend='torch'")
        if backend == "onnxruntime" and precision != "fp32":
            raise ValueError("the onnxruntime backend runs float32 only; use backend='torch' for bf16/fp16")
        if calibration is not None and int8_graphs is not None:
            raise ValueError("give int8 calibration images or quantised int8 graphs, not both")
        if (calibration is not None or int8_graphs is not None) != (precision == "int8"):
            raise ValueError("calibration images (or quantised graphs) are needed for precision='int8' and only for it")
        if int8_graphs is not None and len(int8_graphs) != len(models):
            raise ModelError(f"{len(int8_graphs)} int8 graphs for {len(models)} fold models")
        self.configs = list(configs)
        self.backend: Backend = backend
        self._sessions: list[Any] | None = None
        if backend == "onnxruntime":
            from kneel.models.export import onnx_model_bytes, onnx_session

            threads = torch.get_num_threads()
            self._sessions = [
                onnx_session(onnx_model_bytes(m, input_size=c.crop, exporter="torchscript", check=False), threads)
                for m, c in zip(models, self.configs, strict=True)
            ]
        self._stats = [self._stats_of(c) for c in self.configs]
        self._int8: list[Any] | None = None
        self.int8_graphs: list[bytes] = []
        """int8 only: each fold's quantised ONNX graph (serialised), e.g. to cache them; empty otherwise."""
        if precision == "int8":
            self.int8_graphs = (
                list(int8_graphs) if int8_graphs is not None else self._quantize(models, calibration)  # type: ignore[arg-type]
            )
            from kneel.models.export import onnx_session

            threads = torch.get_num_threads()
            self._int8 = [onnx_session(graph, threads) for graph in self.int8_graphs]
        if precision == "int8":
            # The quantised graphs give the heatmaps; of each float32 fold only its soft-argmax is still used, so the
            # float32 convolutions are let go instead of optimised and kept (ten paper-size folds: ~170 MB, ~0.4 s).
            self.models = [_SoftArgmaxOnly(m) for m in models]
        else:
            self.models = [
                optimize_for_inference(m, inplace=optimize_inplace) if optimize else m.eval() for m in models
            ]
        self.precision: Precision = precision
        self._chunk_size = None if chunk_size is None else max(int(chunk_size), 1)
        self.device = torch.device("cpu")

    def _quantize(self, models: Sequence[nn.Module], calibration: torch.Tensor | np.ndarray) -> list[bytes]:
        """One int8 ONNX graph per fold, calibrated on the fold's normalisation of ``calibration``."""
        from kneel.models.int8 import quantize_heatmaps_onnx

        images = torch.as_tensor(np.asarray(calibration, dtype=np.float32))
        crop = self.config.crop
        if (
            images.ndim != 4
            or images.shape[0] == 0
            or images.shape[1] not in (1, 3)
            or images.shape[-2:] != (crop,) * 2
        ):
            raise ModelError(
                f"int8 calibration needs images (N >= 1, 1 or 3, {crop}, {crop}), got {tuple(images.shape)}"
            )
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return [
            quantize_heatmaps_onnx(model, ((x - mean) / std).contiguous().numpy())
            for model, (mean, std) in zip(models, self._stats, strict=True)
        ]

    @staticmethod
    def _stats_of(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(config.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(config.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        return mean, std

    @property
    def config(self) -> ModelConfig:
        """The first fold's configuration (geometry is shared by all folds)."""
        return self.configs[0]

    @property
    def chunk_size(self) -> int:
        """Images per forward call on the current device."""
        if self._chunk_size is not None:
            return self._chunk_size
        if self.device.type != "cpu":
            return 32
        return 1 if self.precision in ("fp32", "int8") else 2

    @property
    def stage(self) -> str:
        return self.config.stage

    def __len__(self) -> int:
        return len(self.models)

    def to(self, device: str | torch.device) -> FoldEnsemble:
        """Move all fold models to ``device``; returns self. int8 ensembles stay on the CPU (ModelError otherwise)."""
        if self.precision == "int8" and torch.device(device).type != "cpu":
            raise ModelError(f"int8 runs on the CPU only (ONNX Runtime), not on {device}; use fp32, bf16 or fp16 there")
        self.device = torch.device(device)
        self.models = [m.to(self.device) for m in self.models]
        self._stats = [(m.to(self.device), s.to(self.device)) for m, s in self._stats]
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, dtype=torch.float32)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def _int8_heatmaps(self, fold: int, x: torch.Tensor) -> torch.Tensor:
        """Heatmap logits of fold ``fold``'s int8 graph for prepared 0-255 images, in chunks."""
        assert self._int8 is not None
        if x.shape[-2:] != (self.config.crop,) * 2:
            raise ValueError(f"int8 networks take {self.config.crop}x{self.config.crop} inputs, got {tuple(x.shape)}")
        mean, std = self._stats[fold]
        session, parts = self._int8[fold], []
        for start in range(0, x.shape[0], self.chunk_size):
            feed = ((x[start : start + self.chunk_size] - mean) / std).contiguous().numpy()
            parts.append(torch.from_numpy(session.run(None, {"image": feed})[0]))
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    @torch.inference_mode()
    def predict_folds(self, images: torch.Tensor) -> torch.Tensor:
        """Each fold's normalised ``(x, y)``: (F, B, K, 2) float32 for 0-255 images (B, 1|3, H, W)."""
        x = self._prepare(images)
        outs = []
        if self._int8 is not None:
            return torch.stack([m.sagm(self._int8_heatmaps(i, x)) for i, m in enumerate(self.models)])
        if self._sessions is not None and self.device.type == "cpu" and x.shape[-2:] == (self.config.crop,) * 2:
            for session, (mean, std) in zip(self._sessions, self._stats, strict=True):
                feed = ((x - mean) / std).contiguous().numpy()
                outs.append(torch.from_numpy(session.run(None, {"image": feed})[0]))
            return torch.stack(outs)
        for model, (mean, std) in zip(self.models, self._stats, strict=True):
            parts = []
            for start in range(0, x.shape[0], self.chunk_size):
                with autocast(self.precision, self.device):
                    parts.append(model((x[start : start + self.chunk_size] - mean) / std).float())
            outs.append(torch.cat(parts) if len(parts) != 1 else parts[0])
        return torch.stack(outs)

    @torch.inference_mode()
    def predict_with_heatmap_radius(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict` plus each landmark's heatmap radius (B, K): the RMS over folds of the radius of each fold's
        soft-argmax distribution about its mean (:meth:`~kneel.models.hourglass.SoftArgmax2D.moments`), normalised
        units. Runs the PyTorch models (the float32 ONNX graphs give coordinates only), or the int8 graphs; same
        coordinates as :meth:`predict`.
        """
        x = self._prepare(images)
        coords, radii = [], []
        if self._int8 is not None:
            for i, model in enumerate(self.models):
                xy, radius = model.sagm.moments(self._int8_heatmaps(i, x))
                coords.append(xy.float())
                radii.append(radius.float())
        else:
            for model, (mean, std) in zip(self.models, self._stats, strict=True):
                parts_xy, parts_r = [], []
                for start in range(0, x.shape[0], self.chunk_size):
                    with autocast(self.precision, self.device):
                        heatmaps = model.heatmaps((x[start : start + self.chunk_size] - mean) / std)
                    xy, radius = model.sagm.moments(heatmaps)
                    parts_xy.append(xy.float())
                    parts_r.append(radius.float())
                coords.append(torch.cat(parts_xy))
                radii.append(torch.cat(parts_r))
        folds = torch.stack(coords)
        mean = folds.mean(dim=0)
        spread = ((folds - mean) ** 2).sum(dim=-1).mean(dim=0).sqrt()
        return mean, spread, (torch.stack(radii) ** 2).mean(dim=0).sqrt()

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the folds' normalised ``(x, y)`` (B, K, 2) and their spread (B, K).

        The spread is the RMS Euclidean distance of the fold predictions from their mean, in normalised units
        (multiply by the input size in pixels, then by the spacing, for millimetres).
        """
        folds = self.predict_folds(images)
        mean = folds.mean(dim=0)
        spread = ((folds - mean) ** 2).sum(dim=-1).mean(dim=0).sqrt()
        return mean, spread

    __call__ = predict
