"""Mixup for landmark regression: the reference's two-pass variant and standard mixup.

One weight ``lam ~ Beta(alpha, alpha)`` and one permutation ``perm`` per batch;
``mixed = lam * x + (1 - lam) * x[perm]``.

* ``two_pass`` (KNEEL_REFERENCE 5.3): ``lam * L(f(x), y) + (1 - lam) * L(f(mixed), y[perm])``: a clean pass and a
  mixed pass, the mixed image supervised only toward the permuted image's landmarks.
* ``standard`` (Zhang et al. 2018): ``lam * L(f(mixed), y) + (1 - lam) * L(f(mixed), y[perm])``.

The two terms of ``two_pass`` are returned separately so the loop can back-propagate them one after the other
(identical gradients, half the activation memory, and no double forward inside one DistributedDataParallel step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MixupDraw", "draw_mixup", "mix_images", "mixup_terms"]


@dataclass(frozen=True)
class MixupDraw:
    """One batch's mixing weight and permutation."""

    lam: float
    perm: torch.Tensor


def draw_mixup(batch_size: int, alpha: float, rng: np.random.Generator) -> MixupDraw:
    """Draw ``lam ~ Beta(alpha, alpha)`` and a random permutation of the batch from ``rng``."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(batch_size).astype(np.int64))
    return MixupDraw(lam, perm)


def mix_images(images: torch.Tensor, draw: MixupDraw) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]``."""
    perm = draw.perm.to(images.device)
    return draw.lam * images + (1.0 - draw.lam) * images[perm]


def mixup_terms(
    mode: str,
    forward: Callable[[torch.Tensor], torch.Tensor],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    targets: torch.Tensor,
    draw: MixupDraw | None,
) -> list[Callable[[], torch.Tensor]]:
    """The loss of one batch as a list of thunks whose values sum to the batch loss.

    Each thunk runs its own forward pass when called, so the caller can call ``backward`` on one term before
    building the next. ``mode`` is ``none``, ``two_pass`` or ``standard``; ``draw`` is ignored for ``none``.
    """
    if mode == "none" or draw is None:
        return [lambda: criterion(forward(images), targets)]
    perm = draw.perm.to(targets.device)
    lam = draw.lam
    if mode == "two_pass":
        return [
            lambda: lam * criterion(forward(images), targets),
            lambda: (1.0 - lam) * criterion(forward(mix_images(images, draw)), targets[perm]),
        ]
    if mode == "standard":

        def standard() -> torch.Tensor:
            pred = forward(mix_images(images, draw))
            return lam * criterion(pred, targets) + (1.0 - lam) * criterion(pred, targets[perm])

        return [standard]
    raise ValueError(f"unknown mixup mode {mode!r}")
