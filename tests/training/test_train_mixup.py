"""Mixup: the reference's two-pass variant (as separate backward passes) and standard mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kneel.training.losses import WingLoss
from kneel.training.mixup import draw_mixup, mix_images, mixup_terms


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4), nn.Unflatten(1, (2, 2)))


def _grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def test_draw_is_seeded() -> None:
    a = draw_mixup(8, 0.75, np.random.default_rng(3))
    b = draw_mixup(8, 0.75, np.random.default_rng(3))
    assert a.lam == b.lam and torch.equal(a.perm, b.perm) and 0.0 <= a.lam <= 1.0
    assert sorted(a.perm.tolist()) == list(range(8))


def test_two_pass_terms_equal_the_reference_loss_and_gradients() -> None:
    net, crit = _net(), WingLoss()
    x, y = torch.rand(6, 3, 4, 4), torch.rand(6, 2, 2)
    draw = draw_mixup(6, 0.75, np.random.default_rng(0))
    # reference: one backward of lam * L(f(x), y) + (1 - lam) * L(f(mixed), y[perm])
    ref = draw.lam * crit(net(x), y) + (1 - draw.lam) * crit(net(mix_images(x, draw)), y[draw.perm])
    ref.backward()
    ref_grads = _grads(net)
    net.zero_grad()
    total = 0.0
    for term in mixup_terms("two_pass", net, crit, x, y, draw):
        value = term()
        value.backward()
        total += float(value.detach())
    assert total == pytest.approx(float(ref.detach()), rel=1e-6)
    for g, r in zip(_grads(net), ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-7)


def test_standard_mixup_supervises_both_targets() -> None:
    net, crit = _net(), WingLoss()
    x, y = torch.rand(4, 3, 4, 4), torch.rand(4, 2, 2)
    draw = draw_mixup(4, 0.75, np.random.default_rng(1))
    (term,) = mixup_terms("standard", net, crit, x, y, draw)
    with torch.no_grad():
        pred = net(mix_images(x, draw))
        expected = draw.lam * crit(pred, y) + (1 - draw.lam) * crit(pred, y[draw.perm])
        assert float(term()) == pytest.approx(float(expected), rel=1e-6)


def test_no_mixup_is_plain_loss() -> None:
    net, crit = _net(), WingLoss()
    x, y = torch.rand(4, 3, 4, 4), torch.rand(4, 2, 2)
    (term,) = mixup_terms("none", net, crit, x, y, None)
    with torch.no_grad():
        assert float(term()) == pytest.approx(float(crit(net(x), y)))
