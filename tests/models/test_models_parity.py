"""Numerical parity with the reference network on the shared fixtures (seeded random weights, randomised BN)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kneel.models import HourglassNet, create_model, optimize_for_inference
from kneel.models.inference import autocast

ATOL = 1e-4


def load_reference(parity_dir: Path, stage: str) -> HourglassNet:
    """The preset loaded strictly with the fixture's reference-named state_dict."""
    with np.load(parity_dir / f"{stage}_state_dict.npz", allow_pickle=False) as npz:
        state = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    model = create_model(f"kneel_{stage}")
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def manifest(parity_dir: Path) -> dict:
    return json.loads((parity_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def image(parity_dir: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(parity_dir / "input.npy"))


@pytest.fixture(scope="module")
def hc_model(parity_dir: Path) -> HourglassNet:
    return load_reference(parity_dir, "hc")


def test_manifest_matches_presets(manifest: dict) -> None:
    assert manifest["config"]["base_width"] == 24 and manifest["config"]["multiscale_hg"] is True
    for stage in ("lc", "hc"):
        model = create_model(f"kneel_{stage}")
        info = manifest["models"][stage]
        assert sum(p.numel() for p in model.parameters()) == info["n_parameters"]
        assert len(model.state_dict()) == info["n_state_dict_entries"]


@pytest.mark.parametrize("stage", ["lc", "hc"])
def test_output_and_heatmap_parity(stage: str, parity_dir: Path, image: torch.Tensor, manifest: dict) -> None:
    model = load_reference(parity_dir, stage)
    with torch.no_grad():
        heatmaps = model.heatmaps(image)
        out = model.sagm(heatmaps)
    expected_hm = np.load(parity_dir / f"{stage}_heatmap.npy")
    expected = np.load(parity_dir / f"{stage}_output.npy")
    assert list(out.shape) == manifest["models"][stage]["output_shape"]
    assert list(heatmaps.shape) == manifest["models"][stage]["heatmap_shape"]
    assert np.abs(heatmaps.numpy() - expected_hm).max() < ATOL
    assert np.abs(out.numpy() - expected).max() < ATOL
    with torch.no_grad():  # forward() is the same path
        assert np.abs(model(image).numpy() - expected).max() < ATOL


def test_block_outputs_parity(hc_model: HourglassNet, parity_dir: Path, image: torch.Tensor) -> None:
    with torch.no_grad():
        layer1 = hc_model.layer1(image)
        layer2 = hc_model.layer2(layer1)
    assert np.abs(layer1.numpy() - np.load(parity_dir / "hc_layer1.npy")).max() < ATOL
    assert np.abs(layer2.numpy() - np.load(parity_dir / "hc_layer2.npy")).max() < ATOL


def test_optimized_model_keeps_parity(hc_model: HourglassNet, parity_dir: Path, image: torch.Tensor) -> None:
    fast = optimize_for_inference(hc_model)
    with torch.no_grad():
        out = fast(image)
    assert out.is_contiguous()
    assert np.abs(out.numpy() - np.load(parity_dir / "hc_output.npy")).max() < ATOL


def test_bf16_autocast_is_close(hc_model: HourglassNet, parity_dir: Path, image: torch.Tensor) -> None:
    with torch.no_grad(), autocast("bf16"):
        out = hc_model(image[:1])
    assert out.dtype == torch.float32  # the soft-argmax runs in float32
    # Not exact: bfloat16 keeps 8 bits of mantissa. Half a heatmap pixel (2 px of a 450 px input) is the bound.
    assert np.abs(out.numpy() - np.load(parity_dir / "hc_output.npy")[:1]).max() < 0.5 / 112


def test_optimized_model_under_bf16(hc_model: HourglassNet, parity_dir: Path, image: torch.Tensor) -> None:
    fast = optimize_for_inference(hc_model)
    with torch.no_grad(), autocast("bf16"):
        out = fast(image[:1])
    assert out.dtype == torch.float32
    assert np.abs(out.numpy() - np.load(parity_dir / "hc_output.npy")[:1]).max() < 0.5 / 112


@pytest.mark.parametrize("optimized", [False, True])
def test_bf16_keeps_the_output_convolution_in_float32(
    hc_model: HourglassNet, image: torch.Tensor, optimized: bool
) -> None:
    """Under bf16 autocast the heatmap logits come from float32 weights and features (not rounded to bf16)."""
    model = optimize_for_inference(hc_model) if optimized else hc_model
    seen: list[torch.dtype] = []
    model.out_block.register_forward_hook(lambda _m, args, out: seen.extend([args[0].dtype, out.dtype]))
    with torch.no_grad(), autocast("bf16"):
        logits = model.heatmaps(image[:1])
        features = model.features(image[:1])
    assert seen[:2] == [torch.float32, torch.float32]
    assert logits.dtype == torch.float32
    with torch.no_grad():
        expected = model.out_block(features.float())
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
