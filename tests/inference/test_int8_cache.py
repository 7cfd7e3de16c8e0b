"""The int8 graph cache: a second start loads the graphs instead of calibrating, and never reuses stale ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from kneel.inference import int8 as int8_module  # noqa: E402
from kneel.inference.int8 import load_int8_stages  # noqa: E402
from kneel.inference.int8_cache import int8_cache_key, load_cached_graphs, store_graphs  # noqa: E402
from kneel.models import ModelConfig, create_model, save_fold  # noqa: E402
from kneel.models.int8 import FLOAT_MODULES  # noqa: E402


def _stage(root: Path, preset: str, seed: int) -> Path:
    torch.manual_seed(seed)
    for fold in range(2):
        save_fold(create_model(preset).eval(), ModelConfig.from_preset(preset, fold=fold), root / f"fold_{fold}")
    return root


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    _stage(tmp_path / "model" / "lc", "kneel_tiny_lc", 0)
    _stage(tmp_path / "model" / "hc", "kneel_tiny_hc", 1)
    return tmp_path / "model"


@pytest.fixture()
def counted_calibration(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces the float32 calibration pass by fixed random ROIs and counts its calls (the cache must skip it)."""
    calls: list[int] = []

    def fake_rois(lc, hc, films=None):  # noqa: ANN001, ANN202
        calls.append(1)
        rng = np.random.default_rng(0)
        sizes = (lc.config.crop, hc.config.crop)
        return tuple(rng.uniform(0, 255, (3, 1, s, s)).astype(np.float32) for s in sizes)

    monkeypatch.setattr(int8_module, "calibration_rois", fake_rois)
    return calls


def _outputs(stages) -> list[torch.Tensor]:  # noqa: ANN001
    out = []
    for ens in stages:
        size = ens.config.crop
        images = torch.from_numpy(np.random.default_rng(3).uniform(0, 255, (2, 1, size, size)).astype(np.float32))
        out.append(ens.predict(images)[0])
    return out


def test_second_start_loads_the_cached_graphs(model: Path, tmp_path: Path, counted_calibration: list[int]) -> None:
    cache = tmp_path / "cache"
    first = load_int8_stages(model / "lc", model / "hc", cache_dir=cache)
    assert len(counted_calibration) == 1
    entries = list((cache / "int8").iterdir())
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir()) == [
        "hc_fold_0.onnx", "hc_fold_1.onnx", "lc_fold_0.onnx", "lc_fold_1.onnx", "meta.json"
    ]  # fmt: skip
    second = load_int8_stages(model / "lc", model / "hc", cache_dir=cache)
    assert len(counted_calibration) == 1  # not calibrated again
    for a, b in zip(_outputs(first), _outputs(second), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    load_int8_stages(model / "lc", model / "hc", cache_dir=cache, cache=False)
    assert len(counted_calibration) == 2 and len(list((cache / "int8").iterdir())) == 1


def test_changed_weights_or_films_get_another_key(model: Path, tmp_path: Path) -> None:
    stages = [model / "lc", model / "hc"]
    key = int8_cache_key(stages, None, FLOAT_MODULES)
    assert key == int8_cache_key(stages, None, FLOAT_MODULES)
    film = tmp_path / "film.png"
    film.write_bytes(b"not really a png, hashed by content")
    assert int8_cache_key(stages, [film], FLOAT_MODULES) != key
    assert int8_cache_key(stages, None, (*FLOAT_MODULES, "hourglass")) != key
    weights = model / "hc" / "fold_1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert int8_cache_key(stages, None, FLOAT_MODULES) != key


def test_broken_entry_is_rebuilt(model: Path, tmp_path: Path, counted_calibration: list[int]) -> None:
    cache = tmp_path / "cache"
    load_int8_stages(model / "lc", model / "hc", cache_dir=cache)
    (entry,) = (cache / "int8").iterdir()
    (entry / "hc_fold_1.onnx").unlink()
    key = int8_cache_key([model / "lc", model / "hc"], None, FLOAT_MODULES)
    assert load_cached_graphs(key, {"lc": 2, "hc": 2}, cache) is None
    load_int8_stages(model / "lc", model / "hc", cache_dir=cache)
    assert len(counted_calibration) == 2 and (entry / "hc_fold_1.onnx").is_file()
    assert load_cached_graphs(key, {"lc": 2, "hc": 2}, cache) is not None


def test_unwritable_cache_warns_and_still_works(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not cache the int8 graphs"):
        assert store_graphs("ab" * 32, {"hc": [b"graph"]}, blocker) is None


def test_the_same_weights_saved_again_keep_their_key(tmp_path: Path) -> None:
    """safetensors writes its metadata in a random order; the key reads the header canonically."""
    torch.manual_seed(2)
    model = create_model("kneel_tiny_hc").eval()
    keys = set()
    for copy in range(4):
        stage = tmp_path / f"copy{copy}" / "hc"
        save_fold(model, ModelConfig.from_preset("kneel_tiny_hc", fold=0), stage / "fold_0")
        keys.add(int8_cache_key([stage], None, FLOAT_MODULES))
    assert len(keys) == 1
