"""Subject-grouped cross-validation folds, written once to ``folds.csv`` and reused by every stage.

Both knees of a subject always land in the same fold, so a fold-k low-cost model (used to initialise the fold-k
high-cost model) never saw the fold-k validation subjects. Unlike the reference (GroupKFold, whose membership
depends on numpy's tie order and which ignores KL), the split here is explicit, seeded and optionally stratified by
KL grade.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError
from kneel.io.atomic import atomic_write_text

__all__ = ["FoldError", "make_folds", "write_folds", "read_folds", "fold_subjects", "FOLD_COLUMNS"]

FOLD_COLUMNS = ("subject_id", "fold")


class FoldError(KneelError):
    """A fold file is malformed, or folds cannot be made from the given subjects."""


def make_folds(
    subject_ids: Sequence[int] | Iterable[int],
    kl: Sequence[int] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    stratify: bool = False,
) -> pd.DataFrame:
    """Assign every subject to one of ``n_folds`` folds.

    Args:
        subject_ids: one entry per knee (or per subject); repeated ids are one group (both knees of a subject).
        kl: KL grade per entry of ``subject_ids`` (needed for ``stratify``); a subject's stratum is its highest grade.
        n_folds: number of folds (>= 2).
        seed: the split is a pure function of the inputs and the seed.
        stratify: balance each KL stratum across folds (otherwise only fold sizes, counted in knees, are balanced).

    Returns:
        DataFrame with columns ``subject_id`` (int) and ``fold`` (0..n_folds-1), one row per subject, sorted by id.
    """
    ids = np.asarray(list(subject_ids), dtype=np.int64)
    if n_folds < 2:
        raise FoldError(f"n_folds must be at least 2, got {n_folds}")
    if stratify and kl is None:
        raise FoldError("stratify=True needs the KL grade of every entry")
    grades = None if kl is None else np.asarray(list(kl), dtype=np.int64)
    if grades is not None and len(grades) != len(ids):
        raise FoldError(f"{len(ids)} subject ids but {len(grades)} KL grades")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) < n_folds:
        raise FoldError(f"{len(unique)} subjects cannot fill {n_folds} folds")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    strata = np.zeros(len(unique), dtype=np.int64)
    if stratify and grades is not None:
        stratum_of = {}
        for sid, g in zip(ids.tolist(), grades.tolist(), strict=True):
            stratum_of[sid] = max(stratum_of.get(sid, g), g)
        strata = np.array([stratum_of[s] for s in unique.tolist()], dtype=np.int64)

    # Greedy, largest groups first within each stratum (stable after the seeded shuffle): each group goes to the fold
    # with the fewest knees of its stratum, then the fewest knees overall, then the lowest index.
    per_stratum = {s: np.zeros(n_folds, dtype=np.int64) for s in np.unique(strata).tolist()}
    total = np.zeros(n_folds, dtype=np.int64)
    folds = np.empty(len(unique), dtype=np.int64)
    for stratum in sorted(per_stratum):
        members = [i for i in order.tolist() if strata[i] == stratum]
        members.sort(key=lambda i: -counts[i])  # stable: ties keep the shuffled order
        for i in members:
            key = np.lexsort((np.arange(n_folds), total, per_stratum[stratum]))
            fold = int(key[0])
            folds[i] = fold
            per_stratum[stratum][fold] += counts[i]
            total[fold] += counts[i]
    return pd.DataFrame({"subject_id": unique, "fold": folds}).sort_values("subject_id", ignore_index=True)


def write_folds(folds: pd.DataFrame, path: str | Path) -> None:
    """Write ``subject_id,fold`` (atomically)."""
    table = _validate(folds, path)
    atomic_write_text(path, table.to_csv(index=False))


def read_folds(path: str | Path) -> pd.DataFrame:
    """Read and validate a fold file written by :func:`write_folds` (columns ``subject_id``, ``fold``)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise FoldError(f"cannot read fold file: {exc}", path) from exc
    return _validate(table, path)


def fold_subjects(folds: pd.DataFrame, fold: int) -> tuple[list[int], list[int]]:
    """``(train_subject_ids, validation_subject_ids)`` for fold ``fold`` (validation = the subjects of that fold)."""
    if fold not in set(folds["fold"].tolist()):
        raise FoldError(f"fold {fold} is not in the fold table (folds: {sorted(set(folds['fold'].tolist()))})")
    val = folds["fold"] == fold
    return sorted(folds.loc[~val, "subject_id"].astype(int).tolist()), sorted(
        folds.loc[val, "subject_id"].astype(int).tolist()
    )


def _validate(table: pd.DataFrame, path: str | Path | None) -> pd.DataFrame:
    missing = [c for c in FOLD_COLUMNS if c not in table.columns]
    if missing:
        raise FoldError(f"fold table lacks column(s) {missing}", path)
    out = table.loc[:, list(FOLD_COLUMNS)].copy()
    try:
        out = out.astype({"subject_id": np.int64, "fold": np.int64})
    except (ValueError, TypeError) as exc:
        raise FoldError(f"fold table has non-integer values: {exc}", path) from exc
    if out["subject_id"].duplicated().any():
        dup = out.loc[out["subject_id"].duplicated(), "subject_id"].tolist()[:5]
        raise FoldError(f"subjects listed in more than one row: {dup}", path)
    if (out["fold"] < 0).any():
        raise FoldError("fold numbers must be >= 0", path)
    return out.sort_values("subject_id", ignore_index=True)
