"""Building blocks of the KNEEL hourglass: conv-BN(-ReLU) units, the residual blocks and squeeze-excitation.

Attribute names (``scale1``, ``bottleneck``, ``skip``, ``se_block.scorer``, ...) and the ``0``/``1`` indices inside
each conv unit reproduce the reference state_dict names, so published snapshots load strictly.

The reference's "1x1" convolutions inside the residual blocks and the skip branches are in fact 3x3 with padding 1
(its ``conv_block_1x1`` builds a 3x3 convolution). They are kept 3x3 here: the published weights have that shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

import torch
from torch import nn

__all__ = [
    "BlockKind",
    "Conv2d",
    "BatchNorm2d",
    "skipping_init",
    "conv_bn",
    "SqueezeExcitation",
    "MultiScaleResidual",
    "HourglassResidual",
    "make_block",
]

BlockKind = Literal["multiscale", "regular"]

_SKIP_INIT: ContextVar[bool] = ContextVar("kneel_skip_init", default=False)


@contextlib.contextmanager
def skipping_init() -> Iterator[None]:
    """Build networks without their random initialisation, in this thread or task only.

    For skeletons that only receive stored weights (:func:`kneel.models.weights.load_fold` builds on the meta device
    and assigns the file's tensors): the initialisation is half the build time, ten paper-size folds 0.7 -> 0.3 s.
    A layer built inside is left uninitialised; everything else (training, ``build_model``) initialises as usual.
    """
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose random initialisation :func:`skipping_init` can skip (same parameters and state_dict)."""

    def reset_parameters(self) -> None:
        if not _SKIP_INIT.get():
            super().reset_parameters()


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose initialisation :func:`skipping_init` can skip (same parameters and state_dict)."""

    def reset_parameters(self) -> None:
        if not _SKIP_INIT.get():
            super().reset_parameters()


def conv_bn(n_inp: int, n_out: int, *, relu: bool = True) -> nn.Sequential:
    """3x3 convolution (padding 1, with bias) then BatchNorm, then ReLU when ``relu``; indices 0, 1, 2."""
    layers: list[nn.Module] = [Conv2d(n_inp, n_out, kernel_size=3, padding=1, bias=True), BatchNorm2d(n_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: ``x * sigmoid(W2 relu(W1 avgpool(x)))`` with a ``channels // ratio`` bottleneck.

    Args:
        channels: feature channels.
        ratio: reduction ratio of the bottleneck (at least one channel is kept).
    """

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = max(channels // ratio, 1)
        self.scorer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.scorer(x))


class _Residual(nn.Module):
    """Shared tail of both residual blocks: optional SE on the body, plus the (projected) input; no final ReLU."""

    skip: nn.Module
    se_block: nn.Module | None

    def _init_tail(self, n_inp: int, n_out: int, se: bool, se_ratio: int) -> None:
        # A projection only where the channel count changes, as in the reference (identity has no state_dict keys).
        self.skip = conv_bn(n_inp, n_out, relu=False) if n_inp != n_out else nn.Identity()
        if se:
            self.se_block = SqueezeExcitation(n_out, se_ratio)
        else:
            self.se_block = None

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._body(x)
        if self.se_block is not None:
            out = self.se_block(out)
        if getattr(self.skip, "fuses_residual", False):
            # Inference-optimised projection (kneel.models.inference): computes conv(x) + out in one pass.
            return self.skip(x, out)
        return out + self.skip(x)


class MultiScaleResidual(_Residual):
    """Hierarchical multi-scale residual block (Bulat & Tzimiropoulos, arXiv 1808.04803), post-activation.

    Three chained 3x3 conv units produce ``n_out/2``, ``n_out/4`` and the remaining channels; their outputs are
    concatenated, optionally re-weighted by SE, and added to the input (projected by a 3x3 conv-BN when the channel
    count changes). The last unit has no ReLU and there is no activation after the sum, as in the reference.

    Args:
        n_inp: input channels.
        n_out: output channels.
        se: apply squeeze-excitation to the concatenated body.
        se_ratio: SE reduction ratio.
    """

    def __init__(self, n_inp: int, n_out: int, *, se: bool = False, se_ratio: int = 16) -> None:
        super().__init__()
        half, quarter = n_out // 2, n_out // 4
        self.scale1 = conv_bn(n_inp, half)
        self.scale2 = conv_bn(half, quarter)
        self.scale3 = conv_bn(quarter, n_out - half - quarter, relu=False)
        self._init_tail(n_inp, n_out, se, se_ratio)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.scale1(x)
        o2 = self.scale2(o1)
        o3 = self.scale3(o2)
        return torch.cat([o1, o2, o3], dim=1)


class HourglassResidual(_Residual):
    """Regular hourglass residual block (the ``regular_hg`` ablation): 3x3 conv units n/2, n/2, n plus skip.

    Args:
        n_inp: input channels.
        n_out: output channels.
        se: apply squeeze-excitation to the body.
        se_ratio: SE reduction ratio.
    """

    def __init__(self, n_inp: int, n_out: int, *, se: bool = False, se_ratio: int = 16) -> None:
        super().__init__()
        half = n_out // 2
        self.bottleneck = conv_bn(n_inp, half)
        self.conv = conv_bn(half, half)
        self.out = conv_bn(half, n_out, relu=False)
        self._init_tail(n_inp, n_out, se, se_ratio)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(self.bottleneck(x)))


def make_block(kind: BlockKind, n_inp: int, n_out: int, *, se: bool = False, se_ratio: int = 16) -> _Residual:
    """The residual block of the given kind (``"multiscale"`` or ``"regular"``)."""
    if kind == "multiscale":
        return MultiScaleResidual(n_inp, n_out, se=se, se_ratio=se_ratio)
    if kind == "regular":
        return HourglassResidual(n_inp, n_out, se=se, se_ratio=se_ratio)
    raise ValueError(f"unknown block kind {kind!r}; expected 'multiscale' or 'regular'")
