"""Conversion of reference snapshots (2019 .pth folders, 2024 safetensors folders) built from the parity fixtures."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from kneel.cli import main as kneel_main
from kneel.errors import ModelError
from kneel.models import create_model, load_fold, load_stage
from kneel.models.snapshot import convert_snapshot, read_reference_checkpoint

ATOL = 1e-4


def _fixture_state(parity_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    with np.load(parity_dir / f"{stage}_state_dict.npz", allow_pickle=False) as npz:
        return {k: torch.from_numpy(npz[k].copy()) for k in npz.files}


class _Trap:
    """Unpickling this creates a marker file: proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _write_mean_std(path: Path, mean: float = 0.0, std: float = 1.0) -> Path:
    # mean 0 / std 1: the ensemble's normalisation is the identity, so fixture inputs go in unchanged.
    np.save(path, np.array([[mean] * 3, [std] * 3], dtype=np.float32))
    return path


def _reference_snapshot(root: Path, state: dict[str, torch.Tensor], folds: dict[int, list[int]]) -> Path:
    """A 2019-style snapshot folder: fold_<k>_epoch_<e>.pth with {'model', 'optimizer', 'loss'} + session.pkl."""
    root.mkdir(parents=True)
    for k, epochs in folds.items():
        for e in epochs:
            # Only the latest epoch holds the real weights: the converter must pick it.
            weights = state if e == max(epochs) else {n: torch.zeros_like(t) for n, t in state.items()}
            checkpoint = {"model": weights, "optimizer": {"param_groups": [{"lr": 1e-3}]}, "loss": 0.1 * e}
            torch.save(checkpoint, root / f"fold_{k}_epoch_{e}.pth")
    (root / "session.pkl").write_bytes(pickle.dumps(_Trap(root / "UNPICKLED")))
    return root


def test_reference_layout_hc(parity_dir: Path, tmp_path: Path) -> None:
    src = _reference_snapshot(tmp_path / "lext-devbox_hc", _fixture_state(parity_dir, "hc"), {0: [3, 57], 1: [12]})
    mean_std = _write_mean_std(tmp_path / "mean_std.npy")
    written = convert_snapshot(src, "hc", tmp_path / "MODEL", mean_std=mean_std)
    assert [p.name for p in written] == ["fold_0", "fold_1"]
    assert not (src / "UNPICKLED").exists(), "session.pkl must never be unpickled"
    _, config = load_fold(written[0])
    assert (config.preset, config.stage, config.fold, config.spacing_mm, config.crop) == ("kneel_hc", "hc", 0, 0.3, 450)
    assert config.extra["source_epoch"] == 57 and config.extra["nesting_layout"] == "fixed"
    assert config.extra["mirror_augmentation"] is True  # the reference trained with RandomFlip
    ensemble = load_stage(tmp_path / "MODEL" / "hc")
    image = torch.from_numpy(np.load(parity_dir / "input.npy"))[:1]
    mean, spread = ensemble.predict(image)
    assert np.abs(mean.numpy() - np.load(parity_dir / "hc_output.npy")[:1]).max() < ATOL
    assert spread.abs().max() < 1e-6  # both folds hold the same weights


def test_2024_layout_lc_through_cli(parity_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "imeds_kneel"
    fold_dir = root / "global_search" / "fold_0"
    fold_dir.mkdir(parents=True)
    safetensors.torch.save_file(_fixture_state(parity_dir, "lc"), str(fold_dir / "model.safetensors"))
    meta = {"n_inputs": 3, "n_outputs": 1, "bw": 24, "hg_depth": 4, "multiscale_hg_block": True, "stage": "lc",
            "fold": 0, "spacing": 1.0, "crop": 450, "pad": 520, "dropout": 0.25}  # fmt: skip
    (fold_dir / "config.json").write_text(json.dumps(meta))
    _write_mean_std(root / "mean_std.npy")  # found beside the snapshot: no --mean-std needed
    assert kneel_main(["convert-snapshot", str(root), "--stage", "lc", "--out", str(tmp_path / "MODEL")]) == 0
    model, config = load_fold(tmp_path / "MODEL" / "lc" / "fold_0")
    assert (config.preset, config.spacing_mm, config.roi_size_mm, config.pad) == ("kneel_lc", 1.0, None, 520)
    assert config.extra["source_layout"] == "safetensors"
    with torch.no_grad():
        out = model(torch.from_numpy(np.load(parity_dir / "input.npy")))
    assert np.abs(out.numpy() - np.load(parity_dir / "lc_output.npy")).max() < ATOL


def test_legacy_layout_detected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    legacy = create_model("kneel_hc_legacy").eval()
    src = _reference_snapshot(tmp_path / "old", legacy.state_dict(), {2: [9]})
    written = convert_snapshot(src, "hc", tmp_path / "MODEL", mean_std=_write_mean_std(tmp_path / "ms.npy", 100, 50))
    model, config = load_fold(written[0])
    assert config.preset == "kneel_hc_legacy" and config.model_args["legacy_nesting"] is True
    assert config.mean == [100.0] * 3 and config.std == [50.0] * 3 and config.fold == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), legacy(x))


def test_wrong_stage_and_unsafe_files(parity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _reference_snapshot(tmp_path / "lc_snap", _fixture_state(parity_dir, "lc"), {0: [1]})
    mean_std = _write_mean_std(tmp_path / "mean_std.npy")
    # A low-cost snapshot converted as high-cost: one-line CLI error, exit status 1.
    args = ["convert-snapshot", str(src), "--stage", "hc", "--mean-std", str(mean_std), "--out", str(tmp_path / "M")]
    assert kneel_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "wrong --stage" in err and len(err.splitlines()) == 1
    # A checkpoint holding arbitrary objects is refused, not executed.
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"model": _Trap(tmp_path / "EXECUTED")}, evil / "fold_0_epoch_1.pth")
    with pytest.raises(ModelError, match="weights_only"):
        read_reference_checkpoint(evil / "fold_0_epoch_1.pth")
    assert not (tmp_path / "EXECUTED").exists()
    assert not (tmp_path / "M").exists()  # nothing written on error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no fold_"):
        convert_snapshot(tmp_path / "empty", "hc", tmp_path / "out", mean_std=mean_std)
    bad = tmp_path / "bad_mean_std.npy"
    np.save(bad, np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ModelError, match=r"\(2, 3\)"):
        convert_snapshot(src, "lc", tmp_path / "out", mean_std=bad)


def test_cli_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    src = _reference_snapshot(tmp_path / "snap", create_model("kneel_tiny_hc").state_dict(), {0: [1]})
    mean_std = _write_mean_std(tmp_path / "mean_std.npy")
    base = ["convert-snapshot", str(src), "--stage", "hc", "--mean-std", str(mean_std), "--out", str(tmp_path / "M")]
    # Forcing the legacy layout on fixed-layout weights: the override is applied, so the strict load fails clearly.
    assert kneel_main([*base, "--set", "legacy_nesting=true"]) == 1
    assert "do not match the architecture" in capsys.readouterr().err
    assert kneel_main([*base, "--set", "colour=1"]) == 1
    assert "unknown network arguments: colour" in capsys.readouterr().err
    assert kneel_main([*base, "--set", "dropout=0.1"]) == 0
    _, config = load_fold(tmp_path / "M" / "hc" / "fold_0")
    assert config.model_args["dropout"] == 0.1 and config.preset == "kneel_tiny_hc"
