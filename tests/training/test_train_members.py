"""Deep ensembles (config ``members``): several networks per fold, each its own seed, predicted and merged as one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

from kneel.errors import ConfigError
from kneel.evaluation.history import read_histories
from kneel.models import fold_dirs, load_stage
from kneel.models.weights import read_config
from kneel.training import train


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def members_run(prepared_data: Path, tmp_path_factory: pytest.TempPathFactory, tiny_hc: Path, fast: list[str]):
    """The same fold trained three ways: 2 members (seed 42), 1 member with seed 42, 1 member with seed 43."""
    root = tmp_path_factory.mktemp("members")
    common = [*fast, "num_threads=1", "init_from=null"]
    two = train(tiny_hc, prepared_data, root / "two", overrides=[*common, "members=2"], progress=False)
    train(tiny_hc, prepared_data, root / "s42", overrides=common, folds=[0], progress=False)
    train(tiny_hc, prepared_data, root / "s43", overrides=[*common, "seed=43"], folds=[0], progress=False)
    return root, two


def test_member_j_is_the_fold_trained_with_seed_plus_j(members_run) -> None:
    """Member 0 is the fold's usual network (same weights as training without members); member 1 is exactly the
    network a separate run with ``seed + 1`` trains for that fold, and differs from member 0."""
    root, two = members_run
    stage = root / "two" / "hc"
    assert [(f.fold, f.member, f.fold_dir.name) for f in two.folds] == [
        (0, 0, "fold_0"),
        (0, 1, "fold_0_m1"),
        (1, 0, "fold_1"),
        (1, 1, "fold_1_m1"),
    ]
    assert _same(_weights(stage / "fold_0"), _weights(root / "s42/hc/fold_0"))
    assert _same(_weights(stage / "fold_0_m1"), _weights(root / "s43/hc/fold_0"))
    assert not _same(_weights(stage / "fold_0"), _weights(stage / "fold_0_m1"))
    extra = read_config(stage / "fold_1_m1").extra
    assert (extra["member"], extra["seed"]) == (1, 43) and read_config(stage / "fold_1_m1").fold == 1


def test_the_stage_predicts_with_every_member(members_run) -> None:
    root, _ = members_run
    stage = root / "two" / "hc"
    assert [d.name for d in fold_dirs(stage)] == ["fold_0", "fold_0_m1", "fold_1", "fold_1_m1"]
    ensemble = load_stage(stage)
    assert len(ensemble) == 4
    x = torch.rand(2, 3, 128, 128) * 255
    mean, spread = ensemble.predict(x)
    folds = ensemble.predict_folds(x)
    assert folds.shape[0] == 4 and torch.allclose(mean, folds.mean(0), atol=1e-6)
    assert bool((spread > 0).all())  # four different networks


def test_out_of_fold_predictions_are_the_fold_members_mean(members_run) -> None:
    """One row per knee and landmark, the coordinates the mean of the fold's members' own out-of-fold tables."""
    root, _ = members_run
    stage = root / "two" / "hc"
    merged = pd.read_csv(stage / "oof_predictions.csv", dtype={"file": str})
    key = ["file", "side", "landmark"]
    assert not merged.duplicated(key).any()
    parts = []
    for fold in (0, 1):
        a = pd.read_csv(stage / f"fold_{fold}" / "oof_predictions.csv", dtype={"file": str})
        b = pd.read_csv(stage / f"fold_{fold}_m1" / "oof_predictions.csv", dtype={"file": str})
        joined = a.merge(b, on=key, suffixes=("_a", "_b"))
        assert len(joined) == len(a) == len(b) and not np.allclose(joined.x_px_a, joined.x_px_b)
        parts.append(joined.assign(x=(joined.x_px_a + joined.x_px_b) / 2, y=(joined.y_px_a + joined.y_px_b) / 2))
    expected = pd.concat(parts).merge(merged, on=key)
    assert len(expected) == len(merged)
    np.testing.assert_allclose(expected.x_px, expected.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(expected.y_px, expected.y, rtol=0, atol=1e-9)
    truth = pd.read_csv(stage / "oof_ground_truth.csv", dtype={"file": str})
    assert len(truth) == len(merged) and not truth.duplicated(key).any()


def test_training_curves_list_members_after_their_fold(members_run) -> None:
    root, _ = members_run
    assert [h.fold for h in read_histories(root / "two")] == ["fold_0", "fold_0_m1", "fold_1", "fold_1_m1"]


def test_members_must_be_positive(prepared_data: Path, tmp_path: Path, tiny_hc: Path, fast: list[str]) -> None:
    with pytest.raises(ConfigError, match="members"):
        train(tiny_hc, prepared_data, tmp_path, overrides=[*fast, "members=0"], progress=False)


def test_resume_with_more_members_adds_them_and_a_smaller_run_warns_about_them(
    members_run, tmp_path: Path, tiny_hc: Path, prepared_data: Path, fast: list[str]
) -> None:
    """``members`` may grow under ``--resume``: the finished network stays as it is, the new member is the seed + 1
    network. Training fewer members into that folder afterwards warns that the extra member would join the ensemble."""
    import shutil

    root, _ = members_run
    out = tmp_path / "model"
    shutil.copytree(root / "s42", out)
    before = (out / "hc/fold_0/metrics.csv").read_bytes()
    common = [*fast, "num_threads=1", "init_from=null"]
    train(tiny_hc, prepared_data, out, overrides=[*common, "members=2"], folds=[0], resume=True, progress=False)
    assert (out / "hc/fold_0/metrics.csv").read_bytes() == before  # not trained again
    assert _same(_weights(out / "hc/fold_0_m1"), _weights(root / "s43/hc/fold_0"))
    with pytest.warns(UserWarning, match="fold_0_m1: a member of an earlier run"):
        train(tiny_hc, prepared_data, out, overrides=common, folds=[0], resume=True, progress=False)
