"""Stochastic weight averaging as the reference's SWA ablations used it (torchcontrib ``SWA`` in automatic mode).

After ``start`` optimiser steps the learning rate becomes ``swa_lr`` and every ``freq`` steps the weights are added
to a running average. Validation, the best checkpoint and the out-of-fold predictions use the averaged weights with
BatchNorm statistics re-estimated on the training data each epoch (as the reference did). Unlike the reference, the
training itself keeps going from the raw weights: it does not swap the averaged weights into the optimiser every
epoch (reference bug §8.11).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """Equal-weight running average of a model's parameters from step ``start`` on, every ``freq`` steps."""

    def __init__(self, model: nn.Module, start: int, freq: int) -> None:
        self.start, self.freq = int(start), max(1, int(freq))
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.n_averaged = 0

    @property
    def active(self) -> bool:
        return self.n_averaged > 0

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimiser step number ``step`` (1-based)."""
        if step < self.start or (step - self.start) % self.freq != 0:
            return
        own = dict(self.module.named_parameters())
        for name, value in model.named_parameters():
            target = own[name]
            if self.n_averaged == 0:
                target.copy_(value)
            else:
                target.add_((value.detach() - target) / (self.n_averaged + 1))
        self.n_averaged += 1

    @torch.no_grad()
    def update_bn(self, batches: Iterable[torch.Tensor], forward: Callable[[nn.Module, torch.Tensor], object]) -> None:
        """Re-estimate BatchNorm running statistics of the averaged model (cumulative average over ``batches``)."""
        bns = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        momenta = {m: m.momentum for m in bns}
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.module.train()
        for images in batches:
            forward(self.module, images)
        for m in bns:
            m.momentum = momenta[m]
        self.module.eval()

    def state_dict(self) -> dict[str, object]:
        return {"module": self.module.state_dict(), "n_averaged": self.n_averaged}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.n_averaged = int(state["n_averaged"])  # type: ignore[arg-type]
