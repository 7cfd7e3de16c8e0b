"""Folds: subject-grouped, balanced, optionally KL-stratified, seeded, and round-trip through folds.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kneel.data.folds import FoldError, fold_subjects, make_folds, read_folds, write_folds


def _cohort(n_subjects=120, both=30, seed=0):
    rng = np.random.default_rng(seed)
    ids, kl = [], []
    for i in range(n_subjects):
        sid = 9000000 + 7 * i
        knees = 2 if i < both else 1
        for _ in range(knees):
            ids.append(sid)
            kl.append(int(rng.integers(0, 5)))
    return ids, kl


def test_subjects_with_both_knees_stay_together_and_folds_are_balanced():
    ids, kl = _cohort()
    folds = make_folds(ids, kl, n_folds=5, seed=1)
    assert list(folds.columns) == ["subject_id", "fold"]
    assert folds["subject_id"].is_unique and len(folds) == 120
    assert set(folds["fold"]) == set(range(5))
    knees = pd.Series(ids).map(dict(zip(folds["subject_id"], folds["fold"], strict=True))).value_counts()
    assert knees.max() - knees.min() <= 1  # 150 knees -> 30 per fold


def test_stratified_folds_balance_kl():
    ids, kl = _cohort(200, 40)
    plain = make_folds(ids, kl, seed=0)
    strat = make_folds(ids, kl, seed=0, stratify=True)

    def spread(folds):
        fold_of = dict(zip(folds["subject_id"], folds["fold"], strict=True))
        stratum = {}
        for s, g in zip(ids, kl, strict=True):
            stratum[s] = max(stratum.get(s, g), g)
        tab = pd.crosstab(pd.Series([stratum[s] for s in fold_of]), pd.Series(list(fold_of.values())))
        return int((tab.max(axis=1) - tab.min(axis=1)).max())

    assert spread(strat) <= 2
    assert spread(strat) <= spread(plain)


def test_seeded_and_reproducible():
    ids, kl = _cohort()
    a = make_folds(ids, kl, seed=3, stratify=True)
    pd.testing.assert_frame_equal(a, make_folds(ids, kl, seed=3, stratify=True))
    assert not a.equals(make_folds(ids, kl, seed=4, stratify=True))


def test_round_trip_and_fold_subjects(tmp_path):
    ids, kl = _cohort(20, 5)
    folds = make_folds(ids, kl, n_folds=4, seed=0)
    write_folds(folds, tmp_path / "folds.csv")
    back = read_folds(tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(back, folds)
    train, val = fold_subjects(back, 2)
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(set(ids))
    assert (tmp_path / "folds.csv").read_text().splitlines()[0] == "subject_id,fold"


def test_errors(tmp_path):
    with pytest.raises(FoldError):
        make_folds([1, 2, 3], n_folds=5)
    with pytest.raises(FoldError):
        make_folds([1, 2, 3, 4, 5], stratify=True)
    (tmp_path / "bad.csv").write_text("subject_id,fold\n1,0\n1,1\n")
    with pytest.raises(FoldError, match="more than one"):
        read_folds(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("id,fold\n1,0\n")
    with pytest.raises(FoldError, match="lacks"):
        read_folds(tmp_path / "cols.csv")
    with pytest.raises(FoldError):
        fold_subjects(make_folds(range(10), n_folds=2), 7)
