"""End-to-end training on a tiny prepared-data folder: outputs, statistics, transfer, OOF tables, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from kneel.cli import main as kneel_main
from kneel.data.datasets import LandmarkDataset
from kneel.data.layout import read_metadata, row_landmarks
from kneel.errors import ConfigError
from kneel.io.landmark_table import read_landmark_table
from kneel.models import create_model, load_fold
from kneel.training import load_config, train
from kneel.training.cv import load_fold_table, split_subjects, transfer_weights
from kneel.training.loop import _errors_mm, resolve_geometry
from kneel.training.run_log import METRIC_COLUMNS, read_metrics


def _metrics_without_time(path: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in read_metrics(path)]


@pytest.fixture(scope="module")
def trained(
    prepared_data: Path, tmp_path_factory: pytest.TempPathFactory, tiny_lc: Path, tiny_hc: Path, fast: list[str]
) -> Path:
    """LC then HC (transfer from LC) into one model folder, through the CLI, 2 folds x 1 epoch each."""
    out = tmp_path_factory.mktemp("model")
    common = ["--data", str(prepared_data), "--out", str(out), "--no-progress", "--device", "cpu"]
    assert kneel_main(["train", "--config", str(tiny_lc), *common, *fast, "tensorboard=true"]) == 0
    assert kneel_main(["train", "--config", str(tiny_hc), *common, *fast]) == 0
    return out


@pytest.mark.parametrize("stage", ["lc", "hc"])
def test_outputs_form_a_model_directory(trained: Path, prepared_data: Path, stage: str) -> None:
    stage_dir = trained / stage
    assert (stage_dir / "config.resolved.yaml").is_file()
    resolved = load_config(stage_dir / "config.resolved.yaml")
    assert (resolved.epochs, resolved.folds, resolved.input_size, resolved.pad) == (1, 2, 128, 148)
    for k in (0, 1):
        fold_dir = stage_dir / f"fold_{k}"
        model, cfg = load_fold(fold_dir)
        assert cfg.stage == stage and cfg.fold == k and cfg.crop == 128 and cfg.pad == 148
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 1 if stage == "lc" else 16, 2)
        rows = read_metrics(fold_dir / "metrics.csv")
        assert list(rows[0]) == list(METRIC_COLUMNS) and [r["epoch"] for r in rows] == ["1"]
        assert np.isfinite(float(rows[0]["val_mean_mm"]))
        state = torch.load(fold_dir / "last.pt", weights_only=True)
        assert state["epoch"] == 1 and "optimizer" in state and "rng" in state
    if stage == "lc":
        assert list((stage_dir / "tensorboard" / "fold_0").glob("events.out.tfevents.*"))


def test_normalisation_is_exact_per_fold(trained: Path, prepared_data: Path, tiny_hc: Path) -> None:
    geometry = resolve_geometry(load_config(tiny_hc))  # the config's network input (tiny_hc: 0.94 mm per pixel)
    spacing = {"input_spacing": geometry.input_spacing_mm} if geometry.input_spacing_mm else {"scale": geometry.scale}
    table = load_fold_table(prepared_data, 2)
    for k in (0, 1):
        train_subjects, _ = split_subjects(table, k)
        ds = LandmarkDataset(prepared_data, "hc", train_subjects, None, geometry.input_size, geometry.pad, **spacing)
        pixels = np.concatenate([ds[i]["image"][0].numpy().ravel() for i in range(len(ds))]).astype(np.float64)
        _, cfg = load_fold(trained / "hc" / f"fold_{k}")
        assert cfg.mean == pytest.approx([pixels.mean()] * 3, rel=1e-9)
        assert cfg.std == pytest.approx([pixels.std()] * 3, rel=1e-9)
    _, cfg0 = load_fold(trained / "hc" / "fold_0")
    _, cfg1 = load_fold(trained / "hc" / "fold_1")
    assert cfg0.mean != cfg1.mean


def test_hc_starts_from_lc_without_out_block(trained: Path) -> None:
    _, cfg = load_fold(trained / "hc" / "fold_1")
    assert cfg.extra["transferred_from"] == str(trained / "lc" / "fold_1")
    assert cfg.extra["mirror_augmentation"] is False  # tiny_hc.yaml: flip_p 0 (mirror TTA is refused for it)
    model = create_model("kneel_tiny_hc")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    untouched = transfer_weights(model, trained / "lc" / "fold_1")
    lc = safetensors.torch.load_file(str(trained / "lc" / "fold_1" / "model.safetensors"))
    assert untouched and all("out_block" in k for k in untouched)
    for key, value in model.state_dict().items():
        if "out_block" in key:
            assert torch.equal(value, before[key])
        else:
            assert torch.equal(value, lc[key])


def test_transfer_refuses_mismatched_weights(trained: Path) -> None:
    from kneel.errors import ModelError

    with pytest.raises(ModelError):
        transfer_weights(create_model("kneel_hc"), trained / "lc" / "fold_0")


def test_transfer_refuses_low_cost_folds_of_another_assignment(
    trained: Path, prepared_data: Path, tmp_path: Path, tiny_hc: Path, fast: list[str]
) -> None:
    import pandas as pd

    # another folds value: high-cost fold 0 of 4 validates subjects that trained low-cost fold 0 of 2
    table4 = load_fold_table(prepared_data, 4)
    lc_val0 = set(split_subjects(load_fold_table(prepared_data, 2), 0)[1])
    leaked = sorted(set(split_subjects(table4, 0)[1]) ^ lc_val0)
    assert leaked  # the two assignments do differ
    overrides = [*fast, "folds=4"]
    with pytest.raises(ConfigError, match="fold 0 of the low-cost models was trained on another fold assignment"):
        train(tiny_hc, prepared_data, tmp_path / "a", overrides=overrides, init_from=trained, progress=False)
    assert not (tmp_path / "a" / "hc" / "fold_0").exists()  # refused before training

    # a low-cost stage whose fold table was re-drawn: one subject moved from fold 1 to fold 0
    lc = tmp_path / "lc_copy"
    shutil.copytree(trained / "lc", lc)
    folds = pd.read_csv(lc / "folds.csv")
    moved = int(folds.loc[folds["fold"] == 1, "subject_id"].iloc[0])
    folds.loc[folds["subject_id"] == moved, "fold"] = 0
    folds.to_csv(lc / "folds.csv", index=False)
    with pytest.raises(ConfigError, match="fold 0 .* 0 of this fold's validation subjects") as refused:
        train(tiny_hc, prepared_data, tmp_path / "b", overrides=fast, folds=[0], init_from=lc, progress=False)
    with pytest.raises(ConfigError, match=f"e.g. subject {moved}"):
        train(tiny_hc, prepared_data, tmp_path / "b", overrides=fast, folds=[1], init_from=lc, progress=False)
    assert "1 differ" in str(refused.value)

    # no fold table at all: nothing to check against
    (lc / "folds.csv").unlink()
    with pytest.raises(ConfigError, match="no folds.csv"):
        train(tiny_hc, prepared_data, tmp_path / "c", overrides=fast, init_from=lc, progress=False)


@pytest.mark.parametrize("stage", ["lc", "hc"])
def test_oof_tables_in_prepared_frame(trained: Path, prepared_data: Path, stage: str) -> None:
    pred = read_landmark_table(trained / stage / "oof_predictions.csv")
    gt = read_landmark_table(trained / stage / "oof_ground_truth.csv")
    meta = read_metadata(prepared_data, stage)
    per_knee = 1 if stage == "lc" else 16
    assert len(pred) == len(gt) == len(meta) * per_knee
    for col in ("file", "side", "landmark", "x_px", "y_px", "x_mm", "y_mm"):
        assert col in pred.columns and col in gt.columns
    assert "kl" in gt.columns
    assert set(pred["landmark"]) == ({4} if stage == "lc" else set(range(16)))
    spacing = 1.0 if stage == "lc" else 0.3
    for _, row in meta.iterrows():
        truth = row_landmarks(row)
        rows = gt[gt["file"] == f"{row['subject_id']}_{row['side']}"].sort_values("landmark")
        expect = truth[[4]] if stage == "lc" else truth
        assert np.allclose(rows[["x_px", "y_px"]].to_numpy(), expect, atol=1e-9)
        assert np.allclose(rows[["x_mm", "y_mm"]].to_numpy(), expect * spacing, atol=1e-9)
    # predictions lie near the images (the inverse transform is applied, not raw network units)
    assert pred["x_px"].between(-200, 700).all() and pred["y_px"].between(-200, 700).all()


@pytest.mark.parametrize("stage", ["lc", "hc"])
def test_prediction_mapping_is_the_exact_inverse(prepared_data: Path, stage: str) -> None:
    ds = LandmarkDataset(prepared_data, stage, None, None, 128, 148, scale=128 / 450)
    targets = np.stack([ds[i]["keypoints"].numpy() for i in range(len(ds))])
    _, errors = _errors_mm(ds, targets, list(range(len(ds))))
    assert errors.max() < 1e-3  # float32 targets only


def test_folds_in_parallel_processes_equal_folds_in_turn(
    prepared_data: Path, tmp_path: Path, tiny_hc: Path, fast: list[str]
) -> None:
    """fold_processes=2 trains the two folds side by side in spawned processes: same weights, metrics and
    out-of-fold tables as training them one after the other with the same thread count."""
    common = [*fast, "num_threads=1", "init_from=null"]
    seq = train(tiny_hc, prepared_data, tmp_path / "seq", overrides=common, progress=False)
    par = train(tiny_hc, prepared_data, tmp_path / "par", overrides=[*common, "fold_processes=2"], progress=False)
    assert [f.fold for f in par.folds] == [0, 1] and par.oof_predictions is not None
    for fold in (0, 1):
        wa = safetensors.torch.load_file(str(tmp_path / f"seq/hc/fold_{fold}/model.safetensors"))
        wb = safetensors.torch.load_file(str(tmp_path / f"par/hc/fold_{fold}/model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), fold
        assert seq.folds[fold].best_val_loss == par.folds[fold].best_val_loss
    assert (tmp_path / "seq/hc/oof_predictions.csv").read_text() == (
        tmp_path / "par/hc/oof_predictions.csv"
    ).read_text()


def test_training_is_deterministic(prepared_data: Path, tmp_path: Path, tiny_lc: Path, fast: list[str]) -> None:
    """Two runs give identical metrics and weights, also with loader workers (items depend on seed, epoch, index)."""
    overrides = [*fast, "epochs=2", "mixup=two_pass", "augment.cutout_p=0.5"]
    a = train(tiny_lc, prepared_data, tmp_path / "a", overrides=overrides, folds=[0], progress=False)
    train(tiny_lc, prepared_data, tmp_path / "b", overrides=[*overrides, "num_workers=2"], folds=[0], progress=False)
    assert len(a.folds[0].history) == 2
    assert a.folds[0].history[0]["train_loss"] != a.folds[0].history[1]["train_loss"]
    assert _metrics_without_time(tmp_path / "a/lc/fold_0/metrics.csv") == _metrics_without_time(
        tmp_path / "b/lc/fold_0/metrics.csv"
    )
    wa = safetensors.torch.load_file(str(tmp_path / "a/lc/fold_0/model.safetensors"))
    wb = safetensors.torch.load_file(str(tmp_path / "b/lc/fold_0/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_settings_are_config_errors(
    prepared_data: Path, tmp_path: Path, tiny_lc: Path, tiny_hc: Path, fast: list[str]
) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        train(tiny_lc, prepared_data, tmp_path, overrides=[*fast, "batch_size=64"], progress=False)
    with pytest.raises(ConfigError, match="folds"):
        train(tiny_lc, prepared_data, tmp_path, overrides=[*fast, "folds=9"], progress=False)
    with pytest.raises(ConfigError, match="init_from"):
        train(tiny_hc, prepared_data, tmp_path / "empty", overrides=fast, progress=False)
    assert (
        kneel_main(
            ["train", "--config", str(tiny_lc), "--data", str(prepared_data), "--out", str(tmp_path), "epochz=1"]
        )
        == 1
    )


def test_resolved_config_records_the_run(trained: Path) -> None:
    cfg = json.loads((trained / "hc" / "fold_0" / "config.json").read_text())
    assert cfg["extra"]["experiment"] == "tiny_hc" and cfg["extra"]["epoch"] == 1


@pytest.mark.parametrize(
    "switches",
    [
        ["ema_decay=0.9", "optimizer=adamw", "weight_decay=1e-4", "schedule=step", "lr_milestones=[1]"],
        ["swa=true", "swa_start=1", "swa_freq=1", "loss=robust", "mixup=standard"],
        ["spread_weight=0.5", "mixup=two_pass"],
    ],
    ids=["ema-adamw-step", "swa-robust-standard-mixup", "spread-two-pass-mixup"],
)
def test_optional_switches_train(
    prepared_data: Path, tmp_path: Path, tiny_hc: Path, fast: list[str], switches: list[str]
) -> None:
    overrides = [*fast, "epochs=2", "init_from=null", *switches]
    result = train(tiny_hc, prepared_data, tmp_path, overrides=overrides, folds=[0], progress=False)
    history = result.folds[0].history
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(np.isfinite(r["val_loss"]) for r in history)
    if "schedule=step" in switches:
        assert [r["lr"] for r in history] == pytest.approx([3e-3, 3e-4])
    if "swa=true" in switches:
        assert history[-1]["lr"] == pytest.approx(5e-4)
    state = torch.load(tmp_path / "hc" / "fold_0" / "last.pt", weights_only=True)
    if "ema_decay=0.9" in switches:
        assert state["ema"] is not None and any(
            not torch.equal(state["ema"][k], state["model"][k]) for k in state["ema"]
        )
    if "swa=true" in switches:
        assert state["swa"]["n_averaged"] > 1
        assert "latent_alpha" in state["criterion"]  # the robust loss's parameters are trained and resumable


def test_skipped_validations_change_nothing_but_the_validated_epochs(
    prepared_data: Path, tmp_path: Path, tiny_lc: Path, fast: list[str]
) -> None:
    """``val_from``: epochs before it (except the first) are not validated; training and the validated epochs' numbers
    are those of a run that validated every epoch (validation draws no random numbers)."""
    every = train(tiny_lc, prepared_data, tmp_path / "a", overrides=[*fast, "epochs=4"], folds=[0], progress=False)
    late = train(
        tiny_lc, prepared_data, tmp_path / "b", overrides=[*fast, "epochs=4", "val_from=3"], folds=[0], progress=False
    )
    a, b = every.folds[0].history, late.folds[0].history
    validated = [i for i, row in enumerate(b) if np.isfinite(row.get("val_mean_mm", np.nan))]
    assert validated == [0, 2, 3]  # the first, then from epoch 3 (1-based) on
    for i in range(4):
        assert a[i]["train_loss"] == b[i]["train_loss"]
        if i in validated:
            assert a[i]["val_mean_mm"] == b[i]["val_mean_mm"]
    with pytest.raises(ConfigError, match="val_from"):
        train(tiny_lc, prepared_data, tmp_path / "c", overrides=[*fast, "val_from=0"], progress=False)
