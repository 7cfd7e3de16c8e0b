"""Losses: wing, L1/L2/elastic, and Barron's adaptive robust loss against its formula and numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from kneel.training import TrainConfig
from kneel.training.losses import (
    AdaptiveRobustLoss,
    ElasticLoss,
    WingLoss,
    create_loss,
    log_partition,
    robust_rho,
)


def test_wing_matches_formula_on_both_pieces() -> None:
    loss = WingLoss(width=15.0, curvature=3.0)
    c = 15.0 - 15.0 * math.log(1 + 15.0 / 3.0)
    assert c == pytest.approx(-11.876, abs=1e-3)
    d = torch.tensor([0.0, 0.1, -0.5, 14.0, 20.0, -30.0])
    expected = [15 * math.log1p(abs(v) / 3) if abs(v) < 15 else abs(v) - c for v in d.tolist()]
    got = [float(loss(v.view(1), torch.zeros(1))) for v in d]
    assert got == pytest.approx(expected, rel=1e-6)
    # continuous at |d| = w
    assert float(loss(torch.tensor([15.0 - 1e-4]), torch.zeros(1))) == pytest.approx(15.0 - c, abs=1e-3)


def test_elastic_is_weighted_sum() -> None:
    pred, target = torch.tensor([[0.2, 0.4]]), torch.tensor([[0.0, 0.1]])
    mse = float(((pred - target) ** 2).mean())
    l1 = float((pred - target).abs().mean())
    assert float(ElasticLoss(0.5)(pred, target)) == pytest.approx(0.5 * mse + 0.5 * l1)


def test_robust_rho_special_values() -> None:
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    one = torch.ones((), dtype=torch.float64)
    # alpha = 1: Charbonnier / pseudo-Huber sqrt(x^2 + 1) - 1
    assert torch.allclose(robust_rho(x, one, one), torch.sqrt(x**2 + 1) - 1)
    # alpha -> 2: x^2 / 2; alpha -> 0: log(x^2 / 2 + 1)
    assert torch.allclose(robust_rho(x, torch.tensor(2.0 - 1e-7, dtype=torch.float64), one), x**2 / 2, atol=1e-5)
    assert torch.allclose(
        robust_rho(x, torch.tensor(1e-7, dtype=torch.float64), one), torch.log(x**2 / 2 + 1), atol=1e-5
    )


@pytest.mark.parametrize("alpha", [0.01, 0.5, 1.0, 1.5, 1.999])
def test_log_partition_matches_numerical_integral(alpha: float) -> None:
    def rho(x: float) -> float:
        b = abs(alpha - 2)
        return b / alpha * ((x * x / b + 1) ** (alpha / 2) - 1)

    z, _ = integrate.quad(lambda x: math.exp(-rho(x)), -np.inf, np.inf, limit=500)
    got = float(log_partition(torch.tensor(alpha, dtype=torch.float64)))
    assert got == pytest.approx(math.log(z), abs=2e-4)


def test_log_partition_gaussian_limit() -> None:
    got = float(log_partition(torch.tensor(2.0 - 1e-6, dtype=torch.float64)))
    assert got == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-4)


def test_adaptive_loss_initial_values_and_gradients() -> None:
    loss = AdaptiveRobustLoss(num_dims=4, alpha_init=1.0, scale_init=0.01)
    assert torch.allclose(loss.alpha(), torch.ones(4), atol=1e-6)
    assert torch.allclose(loss.scale(), torch.full((4,), 0.01), atol=1e-7)
    pred = torch.zeros(3, 2, 2, requires_grad=True)
    target = torch.full((3, 2, 2), 0.02)
    value = loss(pred, target)
    expected = math.sqrt(2**2 + 1) - 1 + math.log(0.01) + float(log_partition(torch.tensor(1.0, dtype=torch.float64)))
    assert float(value.detach()) == pytest.approx(expected, rel=1e-4)
    value.backward()
    assert loss.latent_alpha.grad is not None and torch.all(loss.latent_alpha.grad != 0)
    assert loss.latent_scale.grad is not None and pred.grad is not None


def test_adaptive_loss_learns_scale() -> None:
    torch.manual_seed(0)
    residuals = torch.randn(512, 2) * 0.05
    loss = AdaptiveRobustLoss(num_dims=2, alpha_init=1.0, scale_init=0.01)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss(residuals.view(512, 1, 2), torch.zeros(512, 1, 2)).backward()
        opt.step()
    # The fitted scale grows toward the residuals' spread (0.05) from 0.01.
    assert float(loss.scale().detach().min()) > 0.02


@pytest.mark.parametrize("name", ["wing", "l1", "l2", "elastic", "robust"])
def test_create_loss(name: str) -> None:
    loss = create_loss(TrainConfig(loss=name), num_landmarks=16)
    pred, target = torch.rand(2, 16, 2), torch.rand(2, 16, 2)
    with torch.no_grad():
        value = loss(pred, target)
        assert value.ndim == 0 and torch.isfinite(value)
        assert float(loss(target, target)) <= float(value)


def _radius_oracle(logits: np.ndarray) -> np.ndarray:
    """RMS radius of softmax(logits) per (batch, landmark), x in units of the width and y of the height (NumPy)."""
    b, k, h, w = logits.shape
    flat = logits.reshape(b, k, h * w).astype(np.float64)
    prob = np.exp(flat - flat.max(axis=-1, keepdims=True))
    prob = (prob / prob.sum(axis=-1, keepdims=True)).reshape(b, k, h, w)
    ys, xs = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    mx = (prob * xs).sum(axis=(2, 3))
    my = (prob * ys).sum(axis=(2, 3))
    var = (prob * ((xs - mx[..., None, None]) ** 2 + (ys - my[..., None, None]) ** 2)).sum(axis=(2, 3))
    return np.sqrt(var)


def test_spread_penalty_adds_the_weighted_heatmap_radius_in_training_only() -> None:
    from kneel.models import create_model
    from kneel.training.losses import SpreadPenalty

    torch.manual_seed(0)
    model = create_model("kneel_tiny_hc", dropout=0.0).eval()  # eval: BatchNorm fixed, forward deterministic
    base = WingLoss(15.0, 3.0)
    penalty = SpreadPenalty(base, model, weight=0.25)
    x, target = torch.randn(2, 3, 128, 128), torch.rand(2, 16, 2)
    radius = _radius_oracle(model.heatmaps(x).detach().numpy())
    assert 0.01 < radius.mean() < 0.41  # neither a delta nor beyond a flat map
    penalty.train()
    pred = model(x)
    got = float(penalty(pred, target))
    assert got == pytest.approx(float(base(pred, target)) + 0.25 * radius.mean(), rel=1e-5)
    assert float(penalty(pred, target)) == pytest.approx(float(base(pred, target)))  # one penalty per forward
    penalty.eval()
    pred = model(x)
    assert float(penalty(pred, target)) == pytest.approx(float(base(pred, target)), rel=1e-7)


def test_spread_penalty_sharpens_the_heatmaps() -> None:
    """Same steps on the same batch: with the penalty the heatmaps end far more concentrated than without."""
    from kneel.models import create_model
    from kneel.training.losses import SpreadPenalty

    x, target = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.full((4, 16, 2), 0.4)
    radii = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = create_model("kneel_tiny_hc", dropout=0.0)
        loss_fn = SpreadPenalty(WingLoss(15.0, 3.0), model, weight=weight).train()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(40):
            opt.zero_grad()
            loss_fn(model(x), target).backward()
            opt.step()
        with torch.no_grad():  # batch statistics, as in the steps (the running ones lag behind)
            radii[weight] = _radius_oracle(model.heatmaps(x).numpy()).mean()
    assert radii[1.0] < 0.7 * radii[0.0]


def test_spread_penalty_refuses_bad_settings() -> None:
    from kneel.errors import ConfigError
    from kneel.models import create_model
    from kneel.training.losses import SpreadPenalty

    with pytest.raises(ConfigError, match="spread_weight must be >= 0"):
        SpreadPenalty(WingLoss(), create_model("kneel_tiny_hc"), weight=-1.0)
    with pytest.raises(ConfigError, match="soft-argmax"):
        SpreadPenalty(WingLoss(), torch.nn.Linear(2, 2), weight=0.1)


def test_spread_penalty_keeps_the_coordinate_losss_state_dict() -> None:
    """Checkpoints hold the same criterion state with or without the penalty (it has no state of its own)."""
    from kneel.models import create_model
    from kneel.training.losses import SpreadPenalty

    base = AdaptiveRobustLoss(32)
    wrapped = SpreadPenalty(base, create_model("kneel_tiny_hc"), weight=0.1)
    assert list(wrapped.state_dict()) == list(base.state_dict()) == ["latent_alpha", "latent_scale"]
    other = AdaptiveRobustLoss(32)
    with torch.no_grad():
        other.latent_alpha.fill_(0.7)
    wrapped.load_state_dict(other.state_dict())
    assert torch.equal(base.latent_alpha, other.latent_alpha)
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in base.parameters()}
