"""Training configs: YAML loading, overrides, unknown keys, and every shipped config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kneel.errors import ConfigError
from kneel.training import TrainConfig, apply_overrides, dump_config, load_config
from kneel.training.loop import _amp_dtype, lr_at, resolve_geometry

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))


def test_defaults_are_the_papers_recipe() -> None:
    c = TrainConfig()
    assert (c.optimizer, c.lr, c.weight_decay, c.batch_size, c.epochs) == ("adam", 1e-3, 0.0, 16, 100)
    assert (c.loss, c.wing_width, c.wing_curvature, c.mixup, c.mixup_alpha) == ("wing", 15.0, 3.0, "two_pass", 0.75)
    assert (c.schedule, c.ema_decay, c.swa) == ("none", 0.0, False)


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_configs_train_in_float32_unless_asked(path: Path) -> None:
    config = load_config(path)
    assert config.amp == "none" and "\namp: none\n" in dump_config(config)  # shown in the run's resolved config
    assert _amp_dtype(config, torch.device("cuda")) is None  # no autocast on a GPU either
    assert _amp_dtype(apply_overrides(config, ["amp=bf16"]), torch.device("cuda")) == torch.bfloat16
    assert TrainConfig().amp == "none"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_resolves(path: Path) -> None:
    config = load_config(path, ["epochs=2", "folds=2"])
    assert config.epochs == 2 and config.folds == 2
    assert config.name == path.stem
    geometry = resolve_geometry(config)
    assert geometry.pad >= geometry.input_size
    assert load_config(path).to_dict() == apply_overrides(load_config(path), []).to_dict()


def test_paper_grid_is_complete() -> None:
    names = {p.stem for p in (CONFIGS / "paper").glob("*.yaml")}
    assert "hc_multiscale_wing_mixup_nowd_cutout10_finetune" in names
    assert "lc_multiscale_wing_mixup_nowd_cutout10" in names
    assert len(names) == 26
    final = load_config(CONFIGS / "paper" / "hc_multiscale_wing_mixup_nowd_cutout10_finetune.yaml")
    assert (final.init_from, final.weight_decay, final.mixup, final.augment["cutout_fraction"]) == (
        "auto",
        0.0,
        "two_pass",
        0.1,
    )


def test_overrides_parse_yaml_values_and_dotted_keys(tiny_lc: Path) -> None:
    c = load_config(
        tiny_lc,
        [
            "lr=1e-3",
            "mixup=standard",
            "lr_milestones=[3, 6]",
            "augment.cutout_p=0.25",
            "model_args.base_width=4",
            "init_from=null",
        ],
    )
    assert c.lr == 1e-3 and c.mixup == "standard" and c.lr_milestones == [3, 6]
    assert c.augment["cutout_p"] == 0.25 and c.model_args == {"base_width": 4}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("epoch=3", "'epoch'"),
        ("augment.cutot=0.1", "cutot"),
        ("lr.x=1", "'lr.x'"),
        ("loss=huber", "loss"),
        ("epochs=zero", "epochs"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(tiny_lc: Path, override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(tiny_lc, [override])


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("stage: hc\nwarmup_epochs: 3\n")
    with pytest.raises(ConfigError, match="warmup_epochs") as info:
        load_config(path)
    assert info.value.path == path


def test_dump_round_trips(tmp_path: Path, tiny_hc: Path) -> None:
    config = load_config(tiny_hc, ["epochs=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path).to_dict() == config.to_dict()


def test_lr_schedules() -> None:
    assert lr_at(TrainConfig(), 57) == 1e-3
    cos = TrainConfig(schedule="cosine", epochs=10, min_lr=0.0)
    assert lr_at(cos, 0) == pytest.approx(1e-3) and lr_at(cos, 5) == pytest.approx(5e-4)
    step = TrainConfig(schedule="step", lr_milestones=[2, 4], lr_gamma=0.1)
    assert [lr_at(step, e) for e in (0, 2, 4)] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_stage_must_match_preset() -> None:
    with pytest.raises(ConfigError, match="stage"):
        resolve_geometry(TrainConfig(stage="lc", model="kneel_hc"))


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    """The tiny and paper configs ship inside the package (a wheel has them too) and load by name from anywhere."""
    from kneel.resources import configs_dir
    from kneel.training import load_config

    monkeypatch.chdir(tmp_path)
    assert load_config("tiny_lc.yaml").name == "tiny_lc"
    assert load_config("tiny_hc").name == "tiny_hc"
    paper = sorted(p.relative_to(configs_dir()).as_posix() for p in (configs_dir() / "paper").glob("*.yaml"))
    assert len(paper) == 26
    for name in (paper[0], f"configs/{paper[-1]}"):
        assert load_config(name).name == Path(name).stem
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config.yaml")
    (tmp_path / "tiny_lc.yaml").write_text("name: mine\nstage: lc\n")
    assert load_config("tiny_lc.yaml").name == "mine"  # a file in the folder wins over the shipped one
