"""The KNEEL hourglass network (Tiulpin et al., arXiv 1907.12237), weight-compatible with the published snapshots.

One hourglass stack, no intermediate supervision: entry layers (7x7/2 conv, residual blocks, 2x2 max-pool) bring a
450x450 input to 112x112, a depth-4 recursive hourglass (112 -> 56 -> 28 -> 14 -> 7), a mixer of two
Dropout2d + 3x3 conv-BN-ReLU units, a 1x1 output convolution giving one heatmap per landmark, and a soft-argmax that
turns each heatmap into normalised ``(x, y)`` in ``[0, 1)`` of the network input. Any input of at least 64x64
works (the upsampling restores the exact size of each level, odd sizes included).

The presets (``kneel_lc``, ``kneel_hc``, the ablations and tiny variants) are at the end of this file; build them
with :func:`kneel.models.create_model`. Licence of the architecture description: the reference code is MIT;
published KNEEL weights are for non-commercial research use only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kneel.models._registry import Preset, register_preset
from kneel.models.blocks import BatchNorm2d, BlockKind, Conv2d, conv_bn, make_block

__all__ = ["Hourglass", "SoftArgmax2D", "HourglassNet", "MIN_INPUT_SIZE", "heatmap_size"]

# 7x7/2 conv and a 2x2 max-pool give a /4 map, then four more halvings: 64 px leaves a 1x1 innermost level.
MIN_INPUT_SIZE = 64


def heatmap_size(input_size: int) -> int:
    """Side of the heatmap for an input side (450 -> 112): conv 7x7 stride 2 pad 3, then max-pool 2."""
    return ((input_size - 1) // 2 + 1) // 2


class Hourglass(nn.Module):
    """Recursive hourglass level: a pooled branch (``lower*``) and a full-resolution branch (``upper*``), summed.

    ``lower4`` is the next level (a nested ``Hourglass``) or, at depth 1, a single block to ``n_out`` channels.

    Args:
        depth: number of levels (4 in KNEEL).
        width: channels inside the hourglass.
        n_inp: input channels.
        n_out: output channels.
        block: residual block kind at this level.
        se: squeeze-excitation in this level's blocks.
        se_ratio: SE reduction ratio.
        upmode: interpolation mode used to upsample the pooled branch (``align_corners=True`` as the reference).
        legacy_nesting: build nested levels as the reference did before deep-pipeline ``fdb71ff``: regular blocks and
            no SE below the outermost level, whatever ``block`` and ``se`` say (older snapshot layout).
    """

    def __init__(
        self,
        depth: int,
        width: int,
        n_inp: int,
        n_out: int,
        *,
        block: BlockKind = "multiscale",
        se: bool = False,
        se_ratio: int = 16,
        upmode: str = "bilinear",
        legacy_nesting: bool = False,
    ) -> None:
        super().__init__()
        self.upmode = upmode

        def blk(i: int, o: int) -> nn.Module:
            return make_block(block, i, o, se=se, se_ratio=se_ratio)

        self.lower1 = blk(n_inp, width)
        self.lower2 = blk(width, width)
        self.lower3 = blk(width, width)
        if depth > 1:
            inner_block: BlockKind = "regular" if legacy_nesting else block
            self.lower4: nn.Module = Hourglass(
                depth - 1,
                width,
                width,
                n_out,
                block=inner_block,
                se=se and not legacy_nesting,
                se_ratio=se_ratio,
                upmode=upmode,
                legacy_nesting=legacy_nesting,
            )
        else:
            self.lower4 = blk(width, n_out)
        self.lower5 = blk(n_out, n_out)
        self.upper1 = blk(n_inp, width)
        self.upper2 = blk(width, width)
        self.upper3 = blk(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.max_pool2d(x, 2)
        low = self.lower5(self.lower4(self.lower3(self.lower2(self.lower1(low)))))
        up = self.upper3(self.upper2(self.upper1(x)))
        align = True if self.upmode in ("linear", "bilinear", "bicubic", "trilinear") else None
        return up + F.interpolate(low, size=x.shape[-2:], mode=self.upmode, align_corners=align)


class SoftArgmax2D(nn.Module):
    """Spatial softmax per channel, then the expected ``(x, y)`` with grid ``j / W`` and ``i / H`` (reference grid).

    Output ``(B, K, 2)`` in ``[0, (W - 1) / W]``; no parameters. Computed in float32 whatever the input dtype.

    Args:
        beta: inverse temperature multiplying the logits.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        return self.moments(heatmaps)[0]

    def moments(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The expected ``(x, y)`` (B, K, 2) and the RMS radius of the distribution about it (B, K), normalised units.

        The radius, ``sqrt(E|p - E p|^2)`` with ``x`` in units of the width and ``y`` of the height, says how
        concentrated the heatmap is: a sharp peak gives a radius of a few heatmap pixels, a flat map about 0.41.
        """
        b, k, h, w = heatmaps.shape
        logits = heatmaps.float().reshape(b, k, h * w)
        if self.beta != 1.0:
            logits = logits * self.beta
        prob = torch.softmax(logits, dim=-1).reshape(b, k, h, w)
        xs = torch.arange(w, dtype=prob.dtype, device=prob.device) / w
        ys = torch.arange(h, dtype=prob.dtype, device=prob.device) / h
        px, py = prob.sum(dim=2), prob.sum(dim=3)
        x = (px * xs).sum(dim=-1)
        y = (py * ys).sum(dim=-1)
        var = (px * (xs - x[..., None]) ** 2).sum(dim=-1) + (py * (ys - y[..., None]) ** 2).sum(dim=-1)
        return torch.stack([x, y], dim=-1), var.clamp(min=0).sqrt()


class HourglassNet(nn.Module):
    """KNEEL landmark network: ``model(x)`` gives normalised ``(x, y)`` per landmark, ``model.heatmaps(x)`` the logits.

    Args:
        n_outputs: landmarks (heatmaps): 1 for the low-cost knee-centre model, 16 for the high-cost model.
        n_inputs: input channels (3 identical channels in KNEEL).
        base_width: width unit ``N``; entry blocks have 2N and 4N channels, the hourglass 4N inside and 8N out.
        depth: hourglass levels.
        block: ``"multiscale"`` (paper) or ``"regular"`` (``regular_hg`` ablation), everywhere incl. entry blocks.
        se: squeeze-excitation in every residual block (``multiscale_se`` ablation).
        se_ratio: SE reduction ratio.
        dropout: Dropout2d probability of the two mixer dropouts (the reference always has 0.25).
        upmode: upsampling mode inside the hourglass.
        legacy_nesting: pre-``fdb71ff`` layout: nested hourglass levels use regular blocks without SE.
        beta: soft-argmax inverse temperature.

    Example:
        >>> net = HourglassNet(n_outputs=16, base_width=8).eval()
        >>> net(torch.zeros(2, 3, 128, 128)).shape
        torch.Size([2, 16, 2])
    """

    def __init__(
        self,
        n_outputs: int = 16,
        *,
        n_inputs: int = 3,
        base_width: int = 24,
        depth: int = 4,
        block: BlockKind = "multiscale",
        se: bool = False,
        se_ratio: int = 16,
        dropout: float = 0.25,
        upmode: str = "bilinear",
        legacy_nesting: bool = False,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if n_outputs < 1 or n_inputs < 1 or base_width < 4 or depth < 1:
            raise ValueError(
                f"invalid HourglassNet arguments: n_outputs={n_outputs}, n_inputs={n_inputs}, "
                f"base_width={base_width} (>= 4), depth={depth}"
            )
        self.init_args: dict[str, Any] = {
            "n_outputs": n_outputs,
            "n_inputs": n_inputs,
            "base_width": base_width,
            "depth": depth,
            "block": block,
            "se": se,
            "se_ratio": se_ratio,
            "dropout": dropout,
            "upmode": upmode,
            "legacy_nesting": legacy_nesting,
            "beta": beta,
        }
        self.n_outputs = n_outputs
        # Set by kneel.models.inference.optimize_for_inference: inputs are made channels-last before the first conv.
        self.channels_last_input = False
        n = base_width

        def blk(i: int, o: int) -> nn.Module:
            return make_block(block, i, o, se=se, se_ratio=se_ratio)

        self.layer1 = nn.Sequential(
            Conv2d(n_inputs, n, kernel_size=7, stride=2, padding=3, bias=True),
            BatchNorm2d(n),
            nn.ReLU(inplace=True),
            blk(n, 2 * n),
            nn.MaxPool2d(2),
        )
        self.layer2 = nn.Sequential(blk(2 * n, 2 * n), blk(2 * n, 2 * n), blk(2 * n, 4 * n))
        self.hourglass = Hourglass(
            depth,
            4 * n,
            4 * n,
            8 * n,
            block=block,
            se=se,
            se_ratio=se_ratio,
            upmode=upmode,
            legacy_nesting=legacy_nesting,
        )
        self.mixer = nn.Sequential(
            nn.Dropout2d(dropout),
            conv_bn(8 * n, 8 * n),
            nn.Dropout2d(dropout),
            conv_bn(8 * n, 4 * n),
        )
        self.out_block = nn.Sequential(Conv2d(4 * n, n_outputs, kernel_size=1, bias=True))
        self.sagm = SoftArgmax2D(beta)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixer output (B, 4N, H/4, W/4): what the output convolution sees."""
        if self.channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.mixer(self.hourglass(self.layer2(self.layer1(x))))

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmap logits (B, K, H/4, W/4), the input of the soft-argmax (112x112 for a 450x450 input).

        Under bfloat16/float16 autocast the output convolution still runs in float32: logits rounded to 8 bits of
        mantissa moved the soft-argmax by up to 0.1 mm end to end (measured with trained models), and this 1x1
        convolution costs almost nothing.
        """
        features = self.features(x)
        device = features.device.type
        if torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.out_block(features.float())
        return self.out_block(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(x, y)`` per landmark, shape (B, K, 2); ``x_px = x_norm * input_width``."""
        return self.sagm(self.heatmaps(x))


def _preset(
    name: str,
    description: str,
    *,
    stage: str,
    input_size: int = 450,
    pad: int = 520,
    **model_args: Any,
) -> Preset:
    hc = stage == "hc"
    return register_preset(
        Preset(
            name=name,
            factory=HourglassNet,
            model_args={"n_outputs": 16 if hc else 1, **model_args},
            stage=stage,
            # A smaller input keeps the field of view: the spacing grows by 450 / input_size.
            spacing_mm=(0.3 if hc else 1.0) * 450 / input_size,
            roi_size_mm=140.0 if hc else None,
            pad=pad,
            crop=input_size,
            # Neutral 0-255 statistics; training replaces them with the training set's own (saved per fold).
            mean=(128.0, 128.0, 128.0),
            std=(64.0, 64.0, 64.0),
            description=description,
        )
    )


# Paper / release configuration (KNEEL_REFERENCE 4.1): base width 24, multi-scale blocks, depth 4.
_preset("kneel_lc", "low-cost knee-centre model (1 output, 1 mm/px), paper configuration", stage="lc")
_preset("kneel_hc", "high-cost 16-landmark model (0.3 mm/px ROI), paper configuration", stage="hc")
# Ablations of KNEEL_REFERENCE 5.9.
_preset("kneel_hc_regular", "ablation: regular hourglass residual blocks", stage="hc", block="regular")
_preset("kneel_lc_regular", "ablation: regular hourglass residual blocks", stage="lc", block="regular")
_preset("kneel_hc_se", "ablation: multi-scale blocks with squeeze-excitation (r=16)", stage="hc", se=True)
_preset("kneel_lc_se", "ablation: multi-scale blocks with squeeze-excitation (r=16)", stage="lc", se=True)
# Snapshots trained before deep-pipeline fdb71ff (inner hourglass levels with regular blocks).
_preset("kneel_hc_legacy", "pre-fix nesting layout (inner levels regular)", stage="hc", legacy_nesting=True)
_preset("kneel_lc_legacy", "pre-fix nesting layout (inner levels regular)", stage="lc", legacy_nesting=True)
# Small and fast for CPU training, tests and demos: width 8 at 128x128, same field of view (0.3 * 450 / 128 mm/px for
# hc, 1 * 450 / 128 for lc); pad 148 keeps the 520/450 ratio.
_preset(
    "kneel_tiny_lc",
    "tiny low-cost model (width 8, 128 px input) for CPU demos",
    stage="lc",
    input_size=128,
    pad=148,
    base_width=8,
)
_preset(
    "kneel_tiny_hc",
    "tiny high-cost model (width 8, 128 px input) for CPU demos",
    stage="hc",
    input_size=128,
    pad=148,
    base_width=8,
)
# Mid-size for CPU training towards sub-millimetre synthetic precision (docs/training.md, "Accuracy versus training
# time"): width 16 at 192x192 (0.70 mm/px for hc, 2.34 mm/px for lc), same field of view; pad 222 keeps 520/450.
_preset(
    "kneel_small_lc",
    "small low-cost model (width 16, 192 px input) for CPU training",
    stage="lc",
    input_size=192,
    pad=222,
    base_width=16,
)
_preset(
    "kneel_small_hc",
    "small high-cost model (width 16, 192 px input) for CPU training",
    stage="hc",
    input_size=192,
    pad=222,
    base_width=16,
)
