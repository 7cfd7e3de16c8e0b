"""Inference-time speedups that keep the numbers: BatchNorm folding, channels-last, fused oneDNN convolutions.

* Folding a BatchNorm (eval statistics) into the preceding convolution removes a full pass over every feature map.
* Channels-last (NHWC) memory lets oneDNN use its fastest convolution kernels on CPU.
* On CPUs with oneDNN, every convolution becomes one call that also applies the following ReLU, and each residual
  projection also adds the block's body (``conv(x) + body``): two fewer passes over the feature maps per block, and
  the small deep-level convolutions no longer fall back to PyTorch's slow im2col path at batch 1.

All three are exact up to float32 rounding (about 1e-7 on the normalised coordinates of the parity fixtures).
bfloat16/float16 autocast (:func:`autocast`) is faster again on CPUs with AVX512-BF16/AMX but not exact; the
benchmark (``benchmarks/forward.py``) reports its error.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Precision",
    "PRECISIONS",
    "FusedConv2d",
    "fold_batchnorm",
    "fuse_convolutions",
    "fusion_available",
    "optimize_for_inference",
    "autocast",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    conv.weight.copy_(w.mul_(scale.reshape(-1, 1, 1, 1)))  # in place on the float64 copy; copy_ rounds once
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


@functools.cache
def fusion_available() -> bool:
    """Whether oneDNN's fused convolution ops exist and agree with ``F.conv2d`` here (checked once)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        op = torch.ops.mkldnn._convolution_pointwise
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 4, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
        w = torch.randn(5, 4, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
        b = torch.randn(5, generator=gen)
        other = torch.randn(1, 5, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
        ref = F.conv2d(x, w, b, padding=1)
        got = op(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        got_add = op.binary(x, other, w, b, [1, 1], [1, 1], [1, 1], 1, "add", None, None, [], None)
        return bool(torch.allclose(got, ref.relu(), atol=1e-5) and torch.allclose(got_add, ref + other, atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class FusedConv2d(nn.Module):
    """A convolution (BatchNorm already folded) with its ReLU or residual sum fused, run by oneDNN on CPU.

    Falls back to ``F.conv2d`` (+ ReLU / + residual) on other devices and dtypes, so a moved model still works.
    Under CPU bfloat16 autocast the input and weights are cast to bfloat16, as autocast does for ``Conv2d``.

    Args:
        conv: the source convolution (its weights are copied unless ``share``).
        relu: apply ReLU to the output.
        residual: ``forward(x, other)`` returns ``conv(x) + other`` (a residual projection).
        share: take the convolution's weight tensors themselves (for :func:`fuse_convolutions`, which discards the
            convolution: no copy of every weight at start-up).
    """

    def __init__(self, conv: nn.Conv2d, *, relu: bool = False, residual: bool = False, share: bool = False) -> None:
        super().__init__()
        if relu and residual:
            raise ValueError("a fused convolution applies either ReLU or the residual sum")
        weight = conv.weight.detach() if share else conv.weight.detach().clone()
        if conv.bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        else:
            bias = conv.bias.detach() if share else conv.bias.detach().clone()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = list(conv.stride), list(conv.padding)  # type: ignore[arg-type]
        self.dilation, self.groups = list(conv.dilation), conv.groups
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError("only explicit zero padding can be fused")
        self.relu = relu
        self.fuses_residual = residual
        self.use_onednn = fusion_available()  # a plain attribute: torch.compile sees a constant
        self._cast: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def _params(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype == self.weight.dtype:
            return self.weight, self.bias
        cached = self._cast.get(dtype)
        if cached is None or cached[0].device != self.weight.device:
            w = self.weight.to(dtype).contiguous(memory_format=torch.channels_last)
            cached = (w, self.bias.to(dtype))
            self._cast[dtype] = cached
        return cached

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
        if x.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and self.use_onednn:
            x = x.to(dtype)
            w, b = self._params(dtype)
            args = (self.padding, self.stride, self.dilation, self.groups)
            op = torch.ops.mkldnn._convolution_pointwise
            if self.fuses_residual:
                assert other is not None
                other = other.to(dtype).contiguous(memory_format=torch.channels_last)
                return op.binary(x, other, w, b, *args, "add", None, None, [], None)
            return op(x, w, b, *args, "relu" if self.relu else "none", [], "")
        # Other devices/dtypes: plain PyTorch (autocast, when on, casts the float32 weights itself).
        w, b = (self.weight, self.bias) if torch.is_autocast_enabled(x.device.type) else self._params(x.dtype)
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        if self.fuses_residual:
            assert other is not None
            return y + other
        return F.relu(y) if self.relu else y


def fuse_convolutions(model: nn.Module) -> int:
    """Replace BN-folded conv units by :class:`FusedConv2d` (ReLU fused) and residual projections by the summing
    variant, in place. Call after :func:`fold_batchnorm`. Returns the number of fused convolutions."""
    count = 0
    for module in list(model.modules()):
        skip = getattr(module, "skip", None)
        if isinstance(skip, nn.Sequential):
            parts = [m for m in skip if not isinstance(m, nn.Identity)]
            if len(parts) == 1 and isinstance(parts[0], nn.Conv2d):
                module.skip = FusedConv2d(parts[0], residual=True, share=True)
                count += 1
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for i, name in enumerate(names):
            conv = module._modules[name]
            if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or not isinstance(conv.padding, tuple):
                continue
            j = i + 1
            while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):
                j += 1
            relu = j < len(names) and isinstance(module._modules[names[j]], nn.ReLU)
            module._modules[name] = FusedConv2d(conv, relu=relu, share=True)
            if relu:
                module._modules[names[j]] = nn.Identity()
            count += 1
    return count


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = True,
    fold_bn: bool = True,
    fuse: bool | None = None,
    inplace: bool = False,
) -> nn.Module:
    """The fastest exact variant of ``model`` for inference (kneel's default for prediction).

    Args:
        model: an ``HourglassNet`` (or any network built from conv-BN(-ReLU) sequences).
        channels_last: store weights and activations NHWC (inputs are converted in ``forward``).
        fold_bn: fold BatchNorm into the preceding convolutions.
        fuse: fused oneDNN convolutions (ReLU and residual sums); default: when available, and ``fold_bn`` and
            ``channels_last`` are on.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The optimised model: eval mode, no gradients, flagged ``bn_folded`` (it cannot be saved or trained).
    """
    net = model if inplace else copy.deepcopy(model)
    net.eval()
    if fold_bn:
        fold_batchnorm(net)
    if fuse is None:
        fuse = fold_bn and channels_last and fusion_available()
    if fuse:
        if not fold_bn:
            raise ValueError("fused convolutions need the BatchNorm folded first (fold_bn=True)")
        fuse_convolutions(net)
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
