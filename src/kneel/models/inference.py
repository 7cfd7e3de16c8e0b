"""Inference-time speedups that keep the numbers: BatchNorm folding, channels-last; plus reduced-precision autocast.

Folding a BatchNorm (eval statistics) into the preceding convolution removes one full pass over every feature map;
channels-last (NHWC) memory lets oneDNN use its fastest convolution kernels on CPU. Both are exact up to float32
rounding (about 1e-6 on the normalised coordinates). bfloat16/float16 autocast is faster again on CPUs with
AVX512-BF16/AMX but not exact (see ``benchmarks/forward.py`` for its error).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

__all__ = ["Precision", "PRECISIONS", "fold_batchnorm", "optimize_for_inference", "autocast", "DEFAULT_CHANNELS_LAST"]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Measured with benchmarks/forward.py on the 2-core development CPU: BN folding + channels-last is the fastest exact
# variant there, so it is what optimize_for_inference does by default.
DEFAULT_CHANNELS_LAST = True


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` so that ``conv(x) == bn(conv_old(x))`` with ``bn`` in eval mode (computed in float64)."""
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    var = bn.running_var.double() if bn.running_var is not None else torch.ones_like(b)
    mean = bn.running_mean.double() if bn.running_mean is not None else torch.zeros_like(b)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(b)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(b)
    scale = gamma / torch.sqrt(var + bn.eps)
    dtype = conv.weight.dtype
    conv.weight.copy_((w * scale.reshape(-1, 1, 1, 1)).to(dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.empty(w.shape[0], dtype=dtype, device=w.device))
    conv.bias.copy_(((b - mean) * scale + beta).to(dtype))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential``, in place.

    The BatchNorm is replaced by ``nn.Identity``. Only valid for inference (eval statistics). Returns the number of
    folded pairs; the model is flagged ``bn_folded`` so it is never saved as if it were the original architecture.
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                _fold_pair(conv, bn)
                module._modules[second] = nn.Identity()
                count += 1
    model.bn_folded = True  # type: ignore[assignment]
    return count


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = DEFAULT_CHANNELS_LAST, fold_bn: bool = True, inplace: bool = False
) -> nn.Module:
    """The fastest exact variant of ``model`` for inference: eval mode, BatchNorm folded, channels-last.

    Args:
        model: a network (an ``HourglassNet`` or anything built from conv-BN sequences).
        channels_last: store weights and activations NHWC (inputs are converted in ``forward``).
        fold_bn: fold BatchNorm into the preceding convolutions.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The optimised model (eval mode, gradients disabled).
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    if fold_bn:
        fold_batchnorm(net)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        if hasattr(net, "channels_last_input"):
            net.channels_last_input = True
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device | str = "cpu") -> Iterator[None]:
    """Autocast context for ``"bf16"``/``"fp16"``; a no-op for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield
