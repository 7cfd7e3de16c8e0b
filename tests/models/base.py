"""The generic checks every network preset must pass; each preset's test class only names the preset.

Inputs are small (64 px for the full-width presets, the preset's own size for the tiny ones) to keep the suite fast
on two cores; parity at the published size lives in test_models_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kneel.models import (
    HourglassNet,
    ModelConfig,
    create_model,
    get_preset,
    heatmap_size,
    load_fold,
    optimize_for_inference,
    save_fold,
)


class ModelTester:
    """Subclass and set ``preset``; optionally ``input_size`` (default: min(preset crop, 64))."""

    preset: str = ""
    input_size: int | None = None
    batch: int = 2

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> HourglassNet:
        torch.manual_seed(0)
        return create_model(cls.preset).eval()

    @property
    def size(self) -> int:
        return self.input_size or min(get_preset(self.preset).crop, 64)

    def _input(self, batch: int | None = None, size: int | None = None) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        s = size or self.size
        return torch.randn(batch or self.batch, 3, s, s, generator=gen)

    def test_forward_shape_and_range(self, model: HourglassNet) -> None:
        k = get_preset(self.preset).model_args["n_outputs"]
        with torch.no_grad():
            out = model(self._input())
            hm = model.heatmaps(self._input())
        assert out.shape == (self.batch, k, 2)
        assert out.dtype == torch.float32
        side = heatmap_size(self.size)
        assert hm.shape == (self.batch, k, side, side)
        assert torch.isfinite(out).all()
        assert out.min() >= 0.0
        assert out.max() <= (side - 1) / side + 1e-6

    def test_forward_backward(self) -> None:
        torch.manual_seed(0)
        model = create_model(self.preset).train()
        x = self._input()
        out = model(x)
        loss = (out - 0.5).abs().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0  # type: ignore[union-attr]

    def test_odd_input_size(self, model: HourglassNet) -> None:
        # Not a multiple of 4 or 64: max-pool floors, the upsampling restores each level's exact size.
        size = self.size + 7
        with torch.no_grad():
            out = model(self._input(1, size))
        assert out.shape[0] == 1 and torch.isfinite(out).all()

    def test_eval_is_deterministic_and_batch_independent(self, model: HourglassNet) -> None:
        x = self._input(3)
        with torch.no_grad():
            full = model(x)
            single = model(x[1:2])
        torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=0)

    def test_optimized_matches(self, model: HourglassNet) -> None:
        fast = optimize_for_inference(model)
        x = self._input()
        with torch.no_grad():
            ref, got = model(x), fast(x)
        assert (ref - got).abs().max() < 1e-5
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "original must be untouched"

    def test_save_load_round_trip(self, model: HourglassNet, tmp_path: Path) -> None:
        config = ModelConfig.from_preset(self.preset, fold=3, mean=[10.0, 20.0, 30.0], std=[1.0, 2.0, 3.0])
        fold_dir = save_fold(model, config, tmp_path / "fold_3")
        assert sorted(p.name for p in fold_dir.iterdir()) == ["config.json", "model.safetensors"]
        loaded, loaded_config = load_fold(fold_dir)
        assert loaded_config == config
        assert not loaded.training
        x = self._input()
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))

    def test_onnx_round_trip(self, model: HourglassNet, tmp_path: Path) -> None:
        pytest.importorskip("onnxruntime")
        from kneel.models.export import export_model_onnx, onnx_session

        path = export_model_onnx(model, tmp_path / "m.onnx", input_size=self.size, exporter="torchscript", check=False)
        session = onnx_session(path, threads=1)
        for batch in (1, 3):  # dynamic batch
            x = self._input(batch)
            got = session.run(None, {"image": x.numpy()})[0]
            with torch.no_grad():
                ref = model(x).numpy()
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() < 1e-4
