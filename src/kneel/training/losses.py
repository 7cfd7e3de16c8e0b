"""Landmark regression losses on normalised coordinates: wing, L1, L2, elastic and Barron's adaptive robust loss.

Every loss takes predictions and targets of shape ``(B, K, 2)`` (normalised ``(x, y)`` of the network input, as the
soft-argmax gives them) and returns the mean over all elements, as the reference does (KNEEL_REFERENCE 5.1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kneel.errors import ConfigError

__all__ = [
    "WingLoss",
    "L1Loss",
    "L2Loss",
    "ElasticLoss",
    "AdaptiveRobustLoss",
    "robust_rho",
    "log_partition",
    "SpreadPenalty",
    "create_loss",
]


class WingLoss(nn.Module):
    """Wing loss (Feng et al. 2018): ``w ln(1 + |d|/eps)`` for ``|d| < w``, else ``|d| - C``, mean over elements.

    ``C = w - w ln(1 + w/eps)`` joins the two pieces continuously. With the paper's ``w = 15, eps = 3`` and
    normalised targets only the logarithmic piece is ever active.
    """

    def __init__(self, width: float = 15.0, curvature: float = 3.0) -> None:
        super().__init__()
        if width <= 0 or curvature <= 0:
            raise ConfigError(f"wing loss needs width > 0 and curvature > 0, got {width}, {curvature}")
        self.width = float(width)
        self.curvature = float(curvature)
        self.c = self.width - self.width * math.log1p(self.width / self.curvature)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = (pred - target).abs()
        small = self.width * torch.log1p(d / self.curvature)
        return torch.where(d < self.width, small, d - self.c).mean()


class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target)


class L2Loss(nn.Module):
    """Mean squared error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)


class ElasticLoss(nn.Module):
    """``w * MSE + (1 - w) * L1`` (the reference's weight ``w = 0.5``)."""

    def __init__(self, weight: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"elastic loss weight must be in [0, 1], got {weight}")
        self.weight = float(weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.weight * F.mse_loss(pred, target) + (1.0 - self.weight) * F.l1_loss(pred, target)


def robust_rho(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Barron's general robust function for ``alpha`` in ``(0, 2)`` (arXiv 1701.03077, eq. 1).

    ``rho(x, a, c) = |a - 2| / a * (((x / c)^2 / |a - 2| + 1)^(a / 2) - 1)``; ``alpha`` and ``scale`` broadcast
    against ``x``. The limits ``a -> 0`` (log) and ``a -> 2`` (L2) are approached by keeping ``a`` and ``|a - 2|``
    at least ``eps`` away from zero.
    """
    b = torch.clamp((alpha - 2.0).abs(), min=eps)
    a = torch.clamp(alpha, min=eps)
    return (b / a) * (torch.pow((x / scale) ** 2 / b + 1.0, a / 2.0) - 1.0)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(512)


def log_partition(alpha: torch.Tensor) -> torch.Tensor:
    """``log Z(alpha)`` with ``Z(alpha) = integral of exp(-rho(x, alpha, 1)) dx`` over the real line.

    Computed by Gauss-Legendre quadrature after the substitution ``x = tan(t)``, which maps the real line to
    ``(-pi/2, pi/2)`` and keeps the heavy tails of small ``alpha`` finite; differentiable in ``alpha``.
    ``Z(2) = sqrt(2 pi)``.
    """
    t = torch.as_tensor(_GL_NODES * (math.pi / 2.0), dtype=alpha.dtype, device=alpha.device)
    w = torch.as_tensor(_GL_WEIGHTS * (math.pi / 2.0), dtype=alpha.dtype, device=alpha.device)
    x = torch.tan(t)
    jac = 1.0 + x**2  # dx/dt = sec^2 t
    flat = alpha.reshape(-1, 1)
    integrand = torch.exp(-robust_rho(x.unsqueeze(0), flat, torch.ones((), dtype=alpha.dtype, device=alpha.device)))
    z = (integrand * jac * w).sum(dim=1)
    return torch.log(z).reshape(alpha.shape)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class AdaptiveRobustLoss(nn.Module):
    """Barron's adaptive robust loss: the negative log-likelihood of the general distribution, learnable shape.

    ``loss = rho(d, alpha, c) + log(c) + log Z(alpha)`` per element, with one shape ``alpha`` in
    ``(alpha_lo, alpha_hi)`` and one scale ``c > scale_lo`` per dimension (``num_dims`` = 2 x landmarks), each a
    latent parameter (sigmoid / softplus) that the optimizer updates with the network (KNEEL_REFERENCE 5.1).
    """

    def __init__(
        self,
        num_dims: int,
        alpha_init: float = 1.0,
        scale_init: float = 0.01,
        alpha_lo: float = 0.001,
        alpha_hi: float = 1.999,
        scale_lo: float = 1e-5,
    ) -> None:
        super().__init__()
        if not alpha_lo < alpha_init < alpha_hi:
            raise ConfigError(f"robust loss alpha_init {alpha_init} must lie in ({alpha_lo}, {alpha_hi})")
        if scale_init <= scale_lo:
            raise ConfigError(f"robust loss scale_init {scale_init} must exceed {scale_lo}")
        self.num_dims = int(num_dims)
        self.alpha_lo, self.alpha_hi, self.scale_lo = float(alpha_lo), float(alpha_hi), float(scale_lo)
        frac = (alpha_init - alpha_lo) / (alpha_hi - alpha_lo)
        self.latent_alpha = nn.Parameter(torch.full((self.num_dims,), math.log(frac / (1.0 - frac))))
        self.latent_scale = nn.Parameter(torch.full((self.num_dims,), _inv_softplus(scale_init - scale_lo)))

    def alpha(self) -> torch.Tensor:
        return self.alpha_lo + (self.alpha_hi - self.alpha_lo) * torch.sigmoid(self.latent_alpha)

    def scale(self) -> torch.Tensor:
        return F.softplus(self.latent_scale) + self.scale_lo

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = (pred - target).reshape(pred.shape[0], -1).float()
        if d.shape[1] != self.num_dims:
            raise ValueError(f"robust loss built for {self.num_dims} dimensions, got {d.shape[1]}")
        alpha, scale = self.alpha(), self.scale()
        nll = robust_rho(d, alpha, scale) + torch.log(scale) + log_partition(alpha)
        return nll.mean()


class SpreadPenalty(nn.Module):
    """A coordinate loss plus ``weight`` x the mean RMS radius of the model's soft-argmax heatmaps (training only).

    The radius comes from a forward hook on the model's soft-argmax (``model.sagm``), so the network's forward and
    its output stay as they are (DDP, export and inference see the same module). In evaluation mode the loss is the
    coordinate loss alone, so validation losses stay comparable with runs without the penalty.
    """

    def __init__(self, base: nn.Module, model: nn.Module, weight: float) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"spread_weight must be >= 0, got {weight}")
        sagm = getattr(model, "sagm", None)
        if sagm is None or not hasattr(sagm, "moments"):
            raise ConfigError(f"spread_weight needs a soft-argmax model; {type(model).__name__} has none")
        self.base = base
        self.weight = float(weight)
        self._radius: torch.Tensor | None = None
        sagm.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.training and torch.is_grad_enabled():
            self._radius = module.moments(inputs[0])[1]

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The coordinate loss's state alone (the penalty has none): checkpoints read the same with or without it."""
        return self.base.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self.base.load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.base(pred, target)
        if self.training and self._radius is not None:
            if self._radius.shape[0] != pred.shape[0]:
                raise RuntimeError("spread penalty: the captured heatmaps belong to another batch")
            loss = loss + self.weight * self._radius.mean()
            self._radius = None
        return loss


def create_loss(config, num_landmarks: int) -> nn.Module:  # noqa: ANN001 - TrainConfig (avoids an import cycle)
    """The loss a :class:`~kneel.training.config.TrainConfig` names, for ``num_landmarks`` outputs."""
    if config.loss == "wing":
        return WingLoss(config.wing_width, config.wing_curvature)
    if config.loss == "l1":
        return L1Loss()
    if config.loss == "l2":
        return L2Loss()
    if config.loss == "elastic":
        return ElasticLoss(config.elastic_weight)
    if config.loss == "robust":
        return AdaptiveRobustLoss(2 * num_landmarks, config.robust_alpha_init, config.robust_scale_init)
    raise ConfigError(f"loss: unknown loss {config.loss!r}")
