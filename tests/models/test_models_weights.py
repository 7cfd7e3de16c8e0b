"""The model-directory format (config.json + safetensors, no pickle) and the fold ensemble."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from kneel.errors import ConfigError, ModelError
from kneel.models import (
    FoldEnsemble,
    ModelConfig,
    create_model,
    fold_dirs,
    load_fold,
    load_pretrained,
    load_stage,
    optimize_for_inference,
    save_fold,
)

PRESET = "kneel_tiny_hc"


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(PRESET)
    # Non-trivial BatchNorm statistics so that normalisation and BN folding are exercised.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _images(batch: int = 2, channels: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return torch.rand(batch, channels, 128, 128, generator=gen) * 255


def test_config_json_round_trip() -> None:
    config = ModelConfig.from_preset("kneel_hc", fold=2, mean=[1, 2, 3], std=[4, 5, 6], extra={"epoch": 7})
    text = config.to_json()
    data = json.loads(text)
    assert data["stage"] == "hc" and data["spacing_mm"] == 0.3 and data["roi_size_mm"] == 140.0
    assert data["pad"] == 520 and data["crop"] == 450 and data["model_args"]["n_outputs"] == 16
    assert ModelConfig.from_json(text) == config
    lc = ModelConfig.from_preset("kneel_lc")
    assert (lc.stage, lc.spacing_mm, lc.roi_size_mm) == ("lc", 1.0, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stage": "xx"}, "stage"),
        ({"mean": [1, 2]}, "3 values"),
        ({"std": [1, 0, 1]}, "positive"),
        ({"colour": "red"}, "unknown model config keys"),
    ],
)
def test_config_rejects_bad_values(change: dict, message: str) -> None:
    data = ModelConfig.from_preset("kneel_hc").to_dict() | change
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_saved_weights_are_plain_safetensors(tmp_path: Path) -> None:
    model = _model(0)
    fold_dir = save_fold(model, ModelConfig.from_preset(PRESET, fold=1), tmp_path / "hc" / "fold_1")
    raw = (fold_dir / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "kneel"
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert not any(p.name.endswith((".pkl", ".pth", ".pt", ".tmp")) for p in fold_dir.iterdir())
    config = json.loads((fold_dir / "config.json").read_text())
    assert config["model_args"] == model.init_args  # the folder alone rebuilds the network


def test_save_refuses_folded_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="BatchNorm-folded"):
        save_fold(optimize_for_inference(_model(0)), ModelConfig.from_preset(PRESET), tmp_path / "fold_0")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        load_fold(tmp_path)
    fold_dir = save_fold(_model(0), ModelConfig.from_preset(PRESET), tmp_path / "fold_0")
    (fold_dir / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="unreadable weights"):
        load_fold(fold_dir)
    # Weights of another architecture: a clear message naming the mismatch, not a traceback from torch.
    save_fold(create_model("kneel_tiny_lc"), ModelConfig.from_preset(PRESET), tmp_path / "fold_1")
    config = json.loads((tmp_path / "fold_1" / "config.json").read_text())
    config["model_args"]["n_outputs"] = 16
    (tmp_path / "fold_1" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="shape: out_block.0.weight"):
        load_fold(tmp_path / "fold_1")
    with pytest.raises(ModelError, match="not found"):
        load_stage(tmp_path / "does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no fold_"):
        load_stage(tmp_path / "empty")


def test_fold_dirs_sorted_numerically(tmp_path: Path) -> None:
    for k in (10, 2, 0):
        save_fold(_model(k), ModelConfig.from_preset(PRESET, fold=k), tmp_path / f"fold_{k}")
    (tmp_path / "fold_x").mkdir()
    (tmp_path / "notes.txt").write_text("not a fold")
    assert [p.name for p in fold_dirs(tmp_path)] == ["fold_0", "fold_2", "fold_10"]


def test_ensemble_mean_spread_and_per_fold_normalisation(tmp_path: Path) -> None:
    models = [_model(0), _model(1)]
    stats = [([100.0, 110.0, 120.0], [50.0, 55.0, 60.0]), ([90.0, 90.0, 90.0], [40.0, 40.0, 40.0])]
    for k, (model, (mean, std)) in enumerate(zip(models, stats, strict=True)):
        save_fold(model, ModelConfig.from_preset(PRESET, fold=k, mean=mean, std=std), tmp_path / "hc" / f"fold_{k}")
    ensemble = load_stage(tmp_path / "hc")
    assert len(ensemble) == 2 and ensemble.stage == "hc" and ensemble.config.fold == 0
    images = _images()
    mean, spread = ensemble.predict(images)
    expected = []
    with torch.no_grad():
        for model, (m, s) in zip(models, stats, strict=True):
            x = (images - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)
            expected.append(model(x))
    stacked = torch.stack(expected)
    torch.testing.assert_close(mean, stacked.mean(0), atol=1e-5, rtol=0)
    ref_spread = ((stacked - stacked.mean(0)) ** 2).sum(-1).mean(0).sqrt()
    torch.testing.assert_close(spread, ref_spread, atol=1e-5, rtol=0)
    assert spread.shape == (2, 16) and (spread > 0).all()
    # Exact (unoptimised) path agrees with the optimised default; chunking does not change the result.
    plain = load_stage(tmp_path / "hc", optimize=False, chunk_size=1)
    torch.testing.assert_close(plain.predict(images)[0], mean, atol=1e-5, rtol=0)
    three = torch.cat([images, images[:1]])
    torch.testing.assert_close(ensemble.predict(three)[0][:2], mean, atol=1e-5, rtol=0)


def test_ensemble_one_channel_input_and_precision(tmp_path: Path) -> None:
    save_fold(_model(0), ModelConfig.from_preset(PRESET, fold=0), tmp_path / "fold_0")
    model, config = load_fold(tmp_path / "fold_0")
    ensemble = FoldEnsemble([model], [config])
    gray = _images(channels=1)
    mean1, spread1 = ensemble.predict(gray)
    mean3, _ = ensemble.predict(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(mean1, mean3)
    assert torch.equal(spread1, torch.zeros_like(spread1))  # one fold: no spread
    ensemble.precision = "bf16"
    mean_bf16, _ = ensemble.predict(gray)
    assert mean_bf16.dtype == torch.float32
    assert (mean_bf16 - mean1).abs().max() < 0.05
    with pytest.raises(ValueError, match="shape"):
        ensemble.predict(torch.zeros(2, 2, 128, 128))
    with pytest.raises(ValueError, match="precision"):
        FoldEnsemble([model], [config], precision="int4")  # type: ignore[arg-type]


def test_ensemble_rejects_mixed_stages() -> None:
    lc, hc = create_model("kneel_tiny_lc"), create_model(PRESET)
    with pytest.raises(ModelError, match="disagree"):
        FoldEnsemble([lc, hc], [ModelConfig.from_preset("kneel_tiny_lc"), ModelConfig.from_preset(PRESET)])


def test_load_pretrained_transfers_all_but_output(tmp_path: Path) -> None:
    torch.manual_seed(3)
    lc = create_model("kneel_tiny_lc")
    save_fold(lc, ModelConfig.from_preset("kneel_tiny_lc"), tmp_path / "lc" / "fold_0")
    hc = create_model(PRESET)
    before = hc.state_dict()["out_block.0.weight"].clone()
    loaded = load_pretrained(hc, tmp_path / "lc" / "fold_0")
    assert "layer1.1.running_mean" in loaded and not any(k.startswith("out_block.") for k in loaded)
    assert torch.equal(hc.state_dict()["layer1.0.weight"], lc.state_dict()["layer1.0.weight"])
    assert torch.equal(hc.state_dict()["out_block.0.weight"], before)
    with pytest.raises(ModelError, match="shape"):
        load_pretrained(create_model("kneel_tiny_hc", base_width=12), tmp_path / "lc" / "fold_0")


def test_onnxruntime_backend_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    for k in range(2):
        config = ModelConfig.from_preset(PRESET, fold=k, mean=[100.0] * 3, std=[50.0] * 3)
        save_fold(_model(k), config, tmp_path / f"fold_{k}")
    images = _images(3)
    torch_mean, torch_spread = load_stage(tmp_path).predict(images)
    ort = load_stage(tmp_path, backend="onnxruntime")
    assert ort.backend == "onnxruntime"
    ort_mean, ort_spread = ort.predict(images)
    torch.testing.assert_close(ort_mean, torch_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(ort_spread, torch_spread, atol=1e-5, rtol=0)
    # Another input size falls back to PyTorch.
    assert ort.predict(torch.rand(1, 1, 96, 96) * 255)[0].shape == (1, 16, 2)
    with pytest.raises(ValueError, match="float32 only"):
        load_stage(tmp_path, backend="onnxruntime", precision="bf16")


def _edit_config(fold_dir: Path, **changes) -> None:
    path = fold_dir / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if key in data:
            data[key] = value
        else:
            data["model_args"][key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"crop": 0}, "crop 0 outside"),
        ({"spacing_mm": 1e-9}, "spacing_mm 1e-09 outside"),
        ({"pad": 64}, "pad 64 is smaller than crop 128"),
        ({"roi_size_mm": None}, "needs roi_size_mm"),
        ({"mean": [float("nan")] * 3}, "must be finite"),
    ],
)
def test_implausible_configs_are_refused_when_the_folder_is_loaded(tmp_path, changes, words):
    fold = save_fold(_model(0), ModelConfig.from_preset(PRESET), tmp_path / "hc" / "fold_0")
    _edit_config(fold, **changes)
    with pytest.raises(ModelError, match=words) as error:
        load_fold(fold)
    assert "config.json" in str(error.value)


def test_a_config_that_does_not_describe_the_weights_allocates_nothing(tmp_path):
    import subprocess
    import sys

    fold = save_fold(_model(0), ModelConfig.from_preset(PRESET), tmp_path / "hc" / "fold_0")
    _edit_config(fold, base_width=20000)  # building this network for real would need ~14 GB
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # far below the 14 GB\n"
        "from kneel.models import load_fold\n"
        "load_fold(sys.argv[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(fold)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kneel.errors.ModelError:") and "config.json does not describe these weights" in last
    assert "shape: layer1.0.weight (" in last


def test_skeletons_skip_the_random_init_and_only_there(tmp_path: Path):
    """load_fold builds its meta skeleton without the random initialisation (half the build time at start-up) and
    still loads every tensor; a network built anywhere else, before or after, is initialised as usual."""
    from kneel.models.blocks import BatchNorm2d, Conv2d, skipping_init

    model = _model(0)
    fold_dir = save_fold(model, ModelConfig.from_preset(PRESET), tmp_path / "fold_0")
    calls: list[str] = []
    conv_init, bn_init = torch.nn.Conv2d.reset_parameters, torch.nn.BatchNorm2d.reset_parameters
    try:  # count the initialisations that reach PyTorch's own layers
        torch.nn.Conv2d.reset_parameters = lambda self: calls.append("conv")  # type: ignore[method-assign]
        torch.nn.BatchNorm2d.reset_parameters = lambda self: calls.append("bn")  # type: ignore[method-assign]
        loaded, _ = load_fold(fold_dir)
        assert calls == []
        with skipping_init():
            Conv2d(2, 3, 3)
        Conv2d(2, 3, 3), BatchNorm2d(3)
        assert calls == ["conv", "bn"]  # only the layers built outside the context
    finally:
        torch.nn.Conv2d.reset_parameters, torch.nn.BatchNorm2d.reset_parameters = conv_init, bn_init
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh = BatchNorm2d(4)
    assert torch.equal(fresh.weight, torch.ones(4)) and torch.equal(fresh.running_var, torch.ones(4))
