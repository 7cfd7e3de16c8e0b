"""Cross-validation plumbing: which subjects train and validate each fold, LC -> HC transfer, out-of-fold tables.

The fold file ``DATA/folds.csv`` is written once by ``kneel prepare`` and read by both stages, so the fold-k
low-cost model that initialises the fold-k high-cost model never saw the fold-k validation subjects. A config asking
for fewer folds than the file holds merges them (``fold % n``), which keeps that property. ``kneel train`` copies
the fold table it used into each stage folder (``<stage>/folds.csv``), and :func:`check_transfer_folds` refuses a
transfer whose low-cost fold k validated other subjects than the high-cost fold k (a re-prepared dataset, another
``folds`` value, a model from elsewhere given to ``--init-from``): its weights would have seen validation subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kneel.errors import ConfigError, ModelError, option
from kneel.models.weights import WEIGHTS_NAME, fold_dirs, read_weights

__all__ = [
    "load_fold_table",
    "split_subjects",
    "find_transfer_source",
    "transfer_weights",
    "check_transfer_folds",
    "merge_oof_tables",
    "OOF_PREDICTIONS",
    "OOF_GROUND_TRUTH",
]

OOF_PREDICTIONS = "oof_predictions.csv"
OOF_GROUND_TRUTH = "oof_ground_truth.csv"


def load_fold_table(data_dir: str | Path, n_folds: int) -> pd.DataFrame:
    """``subject_id, fold`` from ``DATA/folds.csv`` with folds merged to ``n_folds`` (``fold % n_folds``)."""
    from kneel.data.folds import read_folds

    path = Path(data_dir) / "folds.csv"
    if not path.is_file():
        raise ConfigError("no folds.csv in the prepared data folder; run `kneel prepare` first", path)
    table = read_folds(path)
    available = int(table["fold"].max()) + 1
    if n_folds > available:
        raise ConfigError(
            f"folds: {n_folds} requested but the fold file has only {available}: add the override folds={available} "
            f"to kneel train (`kneel train ... folds={available}`), or prepare with --folds {n_folds}",
            path,
        )
    if n_folds < 2 and available >= 2:
        raise ConfigError("folds: cross-validation needs at least 2 folds", path)
    table = table.copy()
    table["fold"] = table["fold"] % n_folds
    return table


def split_subjects(table: pd.DataFrame, fold: int) -> tuple[list[int], list[int]]:
    """``(train_subjects, val_subjects)`` of ``fold``."""
    val = table["fold"] == fold
    if not val.any():
        raise ConfigError(f"fold {fold} has no subjects")
    return (
        sorted(int(s) for s in table.loc[~val, "subject_id"]),
        sorted(int(s) for s in table.loc[val, "subject_id"]),
    )


def _lc_stage_dir(path: Path) -> Path | None:
    """``path`` itself if it holds ``fold_<k>/model.safetensors``, else ``path/lc`` if that does."""
    for candidate in (path, path / "lc"):
        if candidate.is_dir() and any(candidate.glob("fold_*/model.safetensors")):
            return candidate
    return None


def find_transfer_source(init_from: str | None, out: Path, cli_init_from: str | Path | None) -> Path | None:
    """The low-cost stage folder whose fold models initialise the high-cost folds, or ``None`` (from scratch).

    ``--init-from`` wins; with the config's ``init_from: auto`` the low-cost models in the same output folder are
    used; a path in the config is taken as given (relative to the working directory, then to the output's parent).
    """
    if cli_init_from is not None:
        found = _lc_stage_dir(Path(cli_init_from))
        if found is None:
            reason = f"{option('init_from', 'DIR')}: no low-cost fold models (fold_<k>/model.safetensors) there"
            raise ConfigError(reason, cli_init_from)
        return found
    if init_from is None:
        return None
    if init_from == "auto":
        found = _lc_stage_dir(out / "lc")
        if found is None:
            raise ConfigError(
                "init_from: auto needs the low-cost models in the same output folder (train the lc stage first) "
                f"or {option('init_from', 'DIR')}",
                out / "lc",
            )
        return found
    for candidate in (Path(init_from), out.parent / init_from):
        found = _lc_stage_dir(candidate)
        if found is not None:
            return found
    raise ConfigError("init_from: no low-cost fold models (fold_<k>/model.safetensors) there", init_from)


def check_transfer_folds(source_stage: Path, table: pd.DataFrame, folds: Sequence[int]) -> None:
    """Refuse (``ConfigError``) unless each low-cost fold in ``folds`` validated exactly this run's fold subjects.

    Args:
        source_stage: the low-cost stage folder (holds ``folds.csv`` written by ``kneel train``).
        table: this run's fold table (``subject_id, fold``, folds merged as trained).
        folds: the folds this run initialises from ``source_stage``.
    """
    from kneel.data.folds import read_folds

    path = Path(source_stage) / "folds.csv"
    if not path.is_file():
        raise ConfigError(
            "init_from: the low-cost models have no folds.csv (not trained by `kneel train`), so kneel cannot check "
            "that low-cost fold k never saw the high-cost fold-k validation subjects; train the low-cost stage on "
            "the same prepared data, or train the high-cost stage from scratch (init_from=null)",
            path,
        )
    source = read_folds(path)
    for fold in folds:
        mine = set(table.loc[table["fold"] == fold, "subject_id"].astype(int))
        theirs = set(source.loc[source["fold"] == fold, "subject_id"].astype(int))
        if mine == theirs:
            continue
        leaked = sorted(mine & set(source.loc[source["fold"] != fold, "subject_id"].astype(int)))
        example = f"; e.g. subject {leaked[0]}" if leaked else ""
        raise ConfigError(
            f"init_from: fold {fold} of the low-cost models was trained on another fold assignment "
            f"({len(mine)} validation subjects here, {len(theirs)} there, {len(mine ^ theirs)} differ); "
            f"{len(leaked)} of this fold's validation subjects trained that low-cost model{example}. Use low-cost "
            "models trained on the same prepared data with the same folds value, or init_from=null",
            path,
        )


def transfer_weights(model: nn.Module, source_fold_dir: Path, exclude: Sequence[str] = ("out_block",)) -> list[str]:
    """Load a fold's weights into ``model`` except the keys containing any of ``exclude``; strict on the rest.

    Returns the names of the parameters left at their initial values.
    """
    path = Path(source_fold_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise ModelError("no weights to transfer from (train that fold of the low-cost stage first)", path)
    state, _ = read_weights(source_fold_dir)
    kept = {k: v for k, v in state.items() if not any(e in k for e in exclude)}
    own = model.state_dict()
    missing = [k for k in own if k not in kept and not any(e in k for e in exclude)]
    unexpected = [k for k in kept if k not in own]
    shapes = [k for k in kept if k in own and own[k].shape != kept[k].shape]
    if missing or unexpected or shapes:
        raise ModelError(
            f"transfer weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}, shape {shapes[:3]}",
            path,
        )
    with torch.no_grad():
        model.load_state_dict(kept, strict=False)
    return [k for k in own if k not in kept]


def merge_oof_tables(stage_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate every ``fold_<k>/oof_*.csv`` of a stage (predictions, ground truth).

    With several members per fold (``fold_<k>_m<j>``, config ``members``) a knee's out-of-fold prediction is the
    mean of its fold's members, as the stage predicts it (same rows and columns as with one member).
    """
    preds, gts = [], []
    try:
        dirs = fold_dirs(stage_dir)
    except ModelError:
        dirs = []
    for fold_dir in dirs:
        if (fold_dir / OOF_PREDICTIONS).is_file() and (fold_dir / OOF_GROUND_TRUTH).is_file():
            preds.append(pd.read_csv(fold_dir / OOF_PREDICTIONS, dtype={"file": str, "side": str}))
            gts.append(pd.read_csv(fold_dir / OOF_GROUND_TRUTH, dtype={"file": str, "side": str}))
    if not preds:
        return pd.DataFrame(), pd.DataFrame()
    pred, gt = pd.concat(preds, ignore_index=True), pd.concat(gts, ignore_index=True)
    key = ["file", "side", "landmark"]
    if pred.duplicated(key).any():  # members: average their coordinates, keep every other column
        coords = ["x_px", "y_px", "x_mm", "y_mm"]
        others = [c for c in pred.columns if c not in coords]
        pred = pred.groupby(others, sort=False, as_index=False, dropna=False)[coords].mean()[list(pred.columns)]
        gt = gt.drop_duplicates(key, ignore_index=True)
    return pred, gt
