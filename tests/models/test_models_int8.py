"""int8 fold ensembles (ONNX Runtime static QDQ): close to float32, float32 where it matters, CPU only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnxruntime")

from kneel.errors import ModelError  # noqa: E402
from kneel.models import FoldEnsemble, ModelConfig, create_model, save_fold  # noqa: E402
from kneel.models.int8 import FLOAT_MODULES, quantize_heatmaps_onnx  # noqa: E402

PRESET = "kneel_tiny_hc"


def _model(seed: int) -> torch.nn.Module:
    """A random tiny network with peaked heatmaps, so that the landmarks move with the image (as trained ones do)."""
    torch.manual_seed(seed)
    model = create_model(PRESET)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.out_block[0].weight.mul_(20.0)
    return model.eval()


def _images(n: int, seed: int) -> torch.Tensor:
    """Smooth 0-255 images (blurred noise plus a bright blob), like radiograph ROIs rather than white noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.rand(n, 1, 128, 128, generator=gen), 9, stride=1, padding=4)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    centres = torch.rand(n, 2, generator=gen) * 64 + 32
    blob = torch.exp(-((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2) / 200.0)
    return ((noise - noise.amin()) / (noise.amax() - noise.amin()) * 150 + blob[:, None] * 100).clamp(0, 255)


@pytest.fixture(scope="module")
def folds() -> tuple[list[torch.nn.Module], list[ModelConfig]]:
    return [_model(0), _model(1)], [ModelConfig.from_preset(PRESET, fold=k) for k in range(2)]


@pytest.fixture(scope="module")
def int8_and_fp32(folds) -> tuple[FoldEnsemble, FoldEnsemble]:
    models, configs = folds
    return (
        FoldEnsemble(models, configs, precision="int8", calibration=_images(6, seed=1)),
        FoldEnsemble(models, configs),
    )


def test_int8_ensemble_stays_close_to_fp32(int8_and_fp32) -> None:
    int8, fp32 = int8_and_fp32
    images = _images(4, seed=2)  # not the calibration images
    # each fold's int8 heatmap logits against its float32 ones: measured RMS error 1.2-1.4 % of their spread
    x = fp32._prepare(images)
    for fold, (model, (mean, std)) in enumerate(zip(fp32.models, fp32._stats, strict=True)):
        with torch.inference_mode():
            ref_maps = model.heatmaps((x - mean) / std)
        err = (int8._int8_heatmaps(fold, x) - ref_maps).pow(2).mean().sqrt() / ref_maps.std()
        assert 0 < float(err) < 0.05, (fold, float(err))  # > 0: the int8 graphs ran, not float32
    ref, ref_spread = fp32.predict(images)
    got, spread = int8.predict(images)
    assert got.shape == ref.shape == (4, 16, 2) and got.dtype == torch.float32
    dev = (got - ref).norm(dim=-1)
    # Random networks amplify noise more than trained ones (measured max 0.02, mean 0.005 of the input width; a
    # trained model: 0.1 mm end to end, docs/models.md); the bound catches a wrong normalisation or fold order.
    assert float(dev.max()) < 0.05, float(dev.max())
    assert float(dev.mean()) < 0.015, float(dev.mean())
    torch.testing.assert_close(spread, ref_spread, atol=0.03, rtol=0)
    # gray and three-channel input alike; the heatmap-radius path gives the same coordinates
    torch.testing.assert_close(int8.predict(images.repeat(1, 3, 1, 1))[0], got)
    mean, spread2, radius = int8.predict_with_heatmap_radius(images)
    torch.testing.assert_close(mean, got)
    torch.testing.assert_close(spread2, spread)
    _, _, ref_radius = fp32.predict_with_heatmap_radius(images)
    assert radius.shape == (4, 16) and torch.isfinite(radius).all()
    torch.testing.assert_close(radius, ref_radius, atol=0.03, rtol=0)


def test_int8_ensemble_lets_the_float32_convolutions_go(int8_and_fp32) -> None:
    """An int8 ensemble keeps of each float32 fold only its soft-argmax (memory: ten paper-size folds held ~170 MB of
    float32 weights that the quantised graphs replace); the fp32 ensemble keeps whole networks."""
    int8, fp32 = int8_and_fp32
    assert len(int8) == len(fp32) == 2
    assert all(not any(isinstance(m, torch.nn.Conv2d) for m in fold.modules()) for fold in int8.models)
    assert sum(p.numel() for fold in int8.models for p in fold.parameters()) < 10
    assert sum(p.numel() for fold in fp32.models for p in fold.parameters()) > 10_000


def test_int8_graph_keeps_entry_top_level_mixer_and_output_float(folds) -> None:
    import onnx

    model = folds[0][0]
    config = folds[1][0]
    mean, std = torch.tensor(config.mean).reshape(1, 3, 1, 1), torch.tensor(config.std).reshape(1, 3, 1, 1)
    calib = ((_images(2, seed=3).expand(-1, 3, -1, -1) - mean) / std).numpy()
    graph = onnx.load_from_string(quantize_heatmaps_onnx(model, calib))
    producers = {out: node for node in graph.graph.node for out in node.output}

    def quantised(conv: onnx.NodeProto) -> bool:
        weight = producers.get(conv.input[1])
        return weight is not None and weight.op_type == "DequantizeLinear"

    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    kept = [n for n in convs if any(f"/{m}/" in n.name for m in FLOAT_MODULES)]
    assert kept and not any(quantised(n) for n in kept)
    assert any("/out_block/" in n.name for n in kept)
    assert any("/hourglass/upper1/" in n.name for n in kept)  # the outermost hourglass level stays float32
    nested = [n for n in convs if "/hourglass/lower4/" in n.name]
    assert nested and all(quantised(n) for n in nested)


def test_int8_calibration_is_required_and_checked(folds) -> None:
    models, configs = folds
    with pytest.raises(ValueError, match="calibration"):
        FoldEnsemble(models, configs, precision="int8")
    with pytest.raises(ValueError, match="calibration"):
        FoldEnsemble(models, configs, calibration=_images(2, seed=0))  # fp32 with calibration images
    with pytest.raises(ModelError, match="calibration"):
        FoldEnsemble(models, configs, precision="int8", calibration=torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match="int8"):
        FoldEnsemble(models, configs, precision="int8", backend="onnxruntime", calibration=_images(2, seed=0))


def test_int8_refuses_other_devices(int8_and_fp32, tmp_path: Path) -> None:
    int8, _ = int8_and_fp32
    with pytest.raises(ModelError, match="CPU only"):
        int8.to("cuda")
    assert int8.device.type == "cpu"
    with pytest.raises(ValueError, match="128x128"):
        int8.predict(torch.zeros(1, 1, 96, 96))
    from kneel.inference.int8 import load_int8_stages

    for stage in ("lc", "hc"):
        save_fold(_model(0), ModelConfig.from_preset(PRESET, fold=0), tmp_path / stage / "fold_0")
    with pytest.raises(ModelError, match="CPU only"):  # refused before any calibration work
        load_int8_stages(tmp_path / "lc", tmp_path / "hc", "cuda:0")


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_cli_accepts_int8(command: str) -> None:
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"kneel.cli.{command}").add_arguments(parser)
    rest = ["IN", "--out", "OUT"] if command == "predict" else []
    assert parser.parse_args(["--model", "M", "--precision", "int8", *rest]).precision == "int8"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "M", "--precision", "int4", *rest])


def test_default_calibration_films_are_fixed() -> None:
    from kneel.inference import int8

    assert (int8.CALIBRATION_FILMS, int8.CALIBRATION_SEED) == (16, 5)
    assert np.issubdtype(np.asarray(_images(1, seed=0)).dtype, np.floating)


def test_int8_graphs_rebuild_the_same_ensemble(folds, int8_and_fp32) -> None:
    models, configs = folds
    int8, _ = int8_and_fp32
    assert len(int8.int8_graphs) == 2 and all(isinstance(g, bytes) and g for g in int8.int8_graphs)
    again = FoldEnsemble(models, configs, precision="int8", int8_graphs=int8.int8_graphs)
    images = _images(3, seed=4)
    torch.testing.assert_close(again.predict(images)[0], int8.predict(images)[0], atol=0, rtol=0)
    with pytest.raises(ModelError, match="1 int8 graphs for 2"):
        FoldEnsemble(models, configs, precision="int8", int8_graphs=int8.int8_graphs[:1])
    with pytest.raises(ValueError, match="not both"):
        FoldEnsemble(models, configs, precision="int8", int8_graphs=int8.int8_graphs, calibration=_images(2, seed=0))
