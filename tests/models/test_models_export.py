"""ONNX export (CLI, both exporters), torch.export and torch.compile on the network."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kneel.cli import main as kneel_main
from kneel.models import ModelConfig, create_model, optimize_for_inference, save_fold

pytest.importorskip("onnxruntime")
from kneel.models.export import onnx_session  # noqa: E402

PRESET = "kneel_tiny_hc"
# Emitted by PyTorch's own exporter/compiler internals, not by kneel.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model(PRESET).eval()
    root = tmp_path_factory.mktemp("MODEL")
    config = ModelConfig.from_preset(PRESET, fold=0, mean=[90.0, 91.0, 92.0], std=[40.0, 41.0, 42.0])
    save_fold(model, config, root / "hc" / "fold_0")
    save_fold(model, ModelConfig.from_preset(PRESET, fold=1), root / "hc" / "fold_1")
    return root


def _check_onnx(path: Path, model_dir: Path) -> None:
    import onnx

    from kneel.models import load_fold

    model, config = load_fold(model_dir / "hc" / "fold_0")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert ModelConfig.from_json(meta["kneel_config"]) == config
    session = onnx_session(path, threads=1)
    assert [i.name for i in session.get_inputs()] == ["image"]
    for batch in (1, 4):  # dynamic batch
        x = torch.randn(batch, 3, config.crop, config.crop, generator=torch.Generator().manual_seed(batch))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (batch, 16, 2)  # soft-argmax is inside the graph
        assert np.abs(got - ref).max() < 1e-4


def test_export_onnx_cli_torchscript(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hc.onnx"
    assert kneel_main(["export-onnx", str(model_dir / "hc"), "--out", str(out), "--exporter", "torchscript"]) == 0
    _check_onnx(out, model_dir)


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="dynamo exporter needs onnxscript")
def test_export_onnx_cli_dynamo(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hc_fold0.onnx"
    args = ["export-onnx", str(model_dir / "hc" / "fold_0"), "--out", str(out), "--exporter", "dynamo"]
    assert kneel_main(args) == 0
    _check_onnx(out, model_dir)


def test_export_onnx_errors(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert kneel_main(["export-onnx", str(model_dir / "hc"), "--fold", "7", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "no fold_7" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_torch_export(model_dir: Path) -> None:
    model = create_model(PRESET).eval()
    x = torch.randn(2, 3, 128, 128)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    y = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(y), model(y), atol=1e-5, rtol=0)


def test_torch_compile_graph_capture() -> None:
    # Dynamo capture + AOT autograd without code generation: fast, and fails on graph breaks in the network.
    model = create_model(PRESET).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_torch_compile_inductor() -> None:
    # Code generation for the full network takes minutes on two cores; one hourglass level keeps every block kind and
    # the soft-argmax, still 15-90 s (cold cache), hence "slow". The fast test above covers graph capture.
    # The one precondition is checked before compiling; any failure of the compilation itself fails the test.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile (inductor) needs a C compiler")
    model = optimize_for_inference(create_model(PRESET, depth=1))
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model)
    with torch.no_grad():
        got = compiled(x)
        torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)


def test_config_is_plain_json(model_dir: Path) -> None:
    data = json.loads((model_dir / "hc" / "fold_0" / "config.json").read_text())
    assert data["preset"] == PRESET and data["stage"] == "hc"
