"""Every preset through the base tester, plus architecture facts: parameter counts, state_dict names, layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kneel.errors import ConfigError
from kneel.models import (
    HourglassNet,
    MultiScaleResidual,
    SoftArgmax2D,
    create_model,
    get_preset,
    heatmap_size,
    list_presets,
    optimize_for_inference,
)
from kneel.models.inference import FusedConv2d, fusion_available
from kneel.models.snapshot import detect_layout, infer_model_args

from .base import ModelTester


class TestKneelLc(ModelTester):
    preset = "kneel_lc"


class TestKneelHc(ModelTester):
    preset = "kneel_hc"


class TestKneelHcRegular(ModelTester):
    preset = "kneel_hc_regular"


class TestKneelLcRegular(ModelTester):
    preset = "kneel_lc_regular"


class TestKneelHcSe(ModelTester):
    preset = "kneel_hc_se"


class TestKneelLcSe(ModelTester):
    preset = "kneel_lc_se"


class TestKneelHcLegacy(ModelTester):
    preset = "kneel_hc_legacy"


class TestKneelLcLegacy(ModelTester):
    preset = "kneel_lc_legacy"


class TestKneelTinyLc(ModelTester):
    preset = "kneel_tiny_lc"


class TestKneelTinyHc(ModelTester):
    preset = "kneel_tiny_hc"


class TestKneelSmallLc(ModelTester):
    preset = "kneel_small_lc"


class TestKneelSmallHc(ModelTester):
    preset = "kneel_small_hc"


def test_every_preset_has_a_tester() -> None:
    tested = {cls.preset for cls in ModelTester.__subclasses__()}
    assert tested == set(list_presets())


# Reference parameter counts (KNEEL_REFERENCE 4.5).
PARAMS = [
    ("kneel_hc", {}, 4_252_432),
    ("kneel_lc", {}, 4_250_977),
    ("kneel_hc_legacy", {}, 6_266_992),
    ("kneel_lc_legacy", {}, 6_265_537),
    ("kneel_hc_regular", {}, 6_958_480),
    ("kneel_hc_se", {}, 4_323_091),
    ("kneel_hc_se", {"legacy_nesting": True}, 6_285_157),
]


@pytest.mark.parametrize(("name", "overrides", "expected"), PARAMS)
def test_parameter_counts(name: str, overrides: dict, expected: int) -> None:
    model = create_model(name, **overrides)
    assert sum(p.numel() for p in model.parameters()) == expected


def _reference_keys(path: Path) -> list[tuple[str, str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if not line.startswith("#")]
    return [(r[0], r[1]) for r in rows if r and r[0]]


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("kneel_lc", "state_dict_keys_lc.txt"),
        ("kneel_hc", "state_dict_keys_hc.txt"),
        ("kneel_hc_legacy", "state_dict_keys_hc_prefix_bug_layout.txt"),
    ],
)
def test_state_dict_names_and_shapes(name: str, file: str, shared_dir: Path) -> None:
    expected = _reference_keys(shared_dir / "reference" / file)
    state = create_model(name).state_dict()
    assert [k for k, _ in expected] == list(state) or {k for k, _ in expected} == set(state)
    for key, shape in expected:
        assert str(tuple(state[key].shape)) == shape, key


def test_the_1x1_convolutions_are_3x3() -> None:
    model = create_model("kneel_hc")
    # The reference's conv_block_1x1 is 3x3: blocks, skips and mixer; only the output conv is a true 1x1.
    kernels = {name: m.kernel_size for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert kernels.pop("layer1.0") == (7, 7)
    assert kernels.pop("out_block.0") == (1, 1)
    assert set(kernels.values()) == {(3, 3)}
    assert model.state_dict()["layer1.3.skip.0.weight"].shape == (48, 24, 3, 3)


def test_multiscale_channel_split_and_identity_skip() -> None:
    block = MultiScaleResidual(24, 48)
    assert (block.scale1[0].out_channels, block.scale2[0].out_channels, block.scale3[0].out_channels) == (24, 12, 12)
    same = MultiScaleResidual(48, 48)
    assert not any(k.startswith("skip.") for k in same.state_dict())
    odd = MultiScaleResidual(8, 10)  # 5 + 2 + 3
    assert odd(torch.zeros(1, 8, 4, 4)).shape == (1, 10, 4, 4)


@pytest.mark.parametrize("name", ["kneel_hc", "kneel_hc_legacy", "kneel_hc_regular", "kneel_hc_se", "kneel_tiny_lc"])
def test_architecture_inferred_from_state_dict(name: str) -> None:
    model = create_model(name)
    args = infer_model_args(model.state_dict())
    for key, value in args.items():
        assert model.init_args[key] == value, key
    rebuilt = HourglassNet(**args)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_layout_detection() -> None:
    assert detect_layout(create_model("kneel_hc").state_dict()) == "fixed"
    assert detect_layout(create_model("kneel_hc_legacy").state_dict()) == "legacy"
    assert detect_layout(create_model("kneel_hc_regular").state_dict()) == "fixed"  # regular everywhere is not legacy
    assert detect_layout(create_model("kneel_tiny_hc", depth=1).state_dict()) == "single-level"


def test_soft_argmax_finds_a_peak() -> None:
    hm = torch.full((1, 2, 10, 20), -1e4)
    hm[0, 0, 3, 7] = 0.0  # row 3, column 7
    hm[0, 1, 9, 0] = 0.0
    out = SoftArgmax2D()(hm)
    torch.testing.assert_close(out, torch.tensor([[[7 / 20, 3 / 10], [0.0, 9 / 10]]]))
    uniform = SoftArgmax2D()(torch.zeros(1, 1, 4, 4))
    torch.testing.assert_close(uniform, torch.tensor([[[1.5 / 4, 1.5 / 4]]]))


def test_heatmap_size() -> None:
    assert heatmap_size(450) == 112
    assert heatmap_size(128) == 32
    assert heatmap_size(64) == 16


def test_presets_carry_input_geometry() -> None:
    hc, lc = get_preset("kneel_hc"), get_preset("kneel_lc")
    assert (hc.stage, hc.spacing_mm, hc.roi_size_mm, hc.pad, hc.crop) == ("hc", 0.3, 140.0, 520, 450)
    assert (lc.stage, lc.spacing_mm, lc.roi_size_mm, lc.pad, lc.crop) == ("lc", 1.0, None, 520, 450)
    tiny = get_preset("kneel_tiny_hc")
    assert tiny.crop == 128 and tiny.spacing_mm * tiny.crop == pytest.approx(0.3 * 450)
    for name in list_presets():
        p = get_preset(name)
        assert len(p.mean) == 3 and len(p.std) == 3 and p.pad >= p.crop


def test_ill_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown model preset"):
        create_model("kneel_xl")
    with pytest.raises(ConfigError, match="invalid arguments"):
        create_model("kneel_hc", width=3)
    with pytest.raises(ValueError, match="block kind"):
        create_model("kneel_tiny_hc", block="dense")
    with pytest.raises(ValueError):
        HourglassNet(n_outputs=0)


def test_dropout_in_mixer_only_acts_in_training() -> None:
    model = create_model("kneel_tiny_hc")
    drops = [m for m in model.mixer if isinstance(m, torch.nn.Dropout2d)]
    assert len(drops) == 2 and all(d.p == 0.25 for d in drops)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.equal(a, b)


def test_fused_convolution_matches_and_falls_back() -> None:
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 9, 9)
    other = torch.randn(2, 6, 9, 9)
    ref = conv(x)
    relu = FusedConv2d(conv, relu=True)
    residual = FusedConv2d(conv, residual=True)
    with torch.no_grad():
        torch.testing.assert_close(relu(x), ref.relu(), atol=1e-5, rtol=0)
        torch.testing.assert_close(residual(x, other), ref + other, atol=1e-5, rtol=0)
        # float64 is not a oneDNN dtype: the plain PyTorch path gives the same result.
        torch.testing.assert_close(relu(x.double()), ref.double().relu(), atol=1e-5, rtol=0)
    if fusion_available():
        fast = optimize_for_inference(create_model("kneel_tiny_hc"))
        assert sum(isinstance(m, FusedConv2d) for m in fast.modules()) == 110
        assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.ReLU)) for m in fast.modules())
