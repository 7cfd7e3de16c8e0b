"""What the landmark errors mean for measurements: each prediction set's measurements against the ground truth's.

For every prediction set, the knees whose 16 true landmarks are all known are measured twice with
:mod:`kneel.measure` (joint-space widths, plateau and condyle widths, joint-line angles): once from the predicted
landmarks and once from the true ones, with the same pixel spacing. :func:`kneel.measure.agreement` gives per
measurement the bias, mean absolute difference and 95 % limits of agreement (Bland-Altman); one Bland-Altman
figure per set. The figures go into ``kneel evaluate``'s report and the demo's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import MatchedKnees
from kneel.io.atomic import atomic_write_text

__all__ = [
    "MeasurementAgreement",
    "measurement_agreements",
    "format_agreements",
    "format_agreement_table",
    "write_agreements",
]

MIN_KNEES = 2
"""Fewer knees with complete ground truth give no agreement (limits of agreement need a standard deviation)."""


@dataclass
class MeasurementAgreement:
    """One prediction set's measurement agreement with the ground truth."""

    name: str
    knees: int
    table: pd.DataFrame
    """:func:`kneel.measure.agreement` rows (measurement, unit, n, reference_mean, bias, mad, sd, loa_low, ...)."""
    plot: Path


def _knee_set(knees: MatchedKnees, points: np.ndarray, rows: np.ndarray):
    from kneel.measure.knees import KneeSet

    n = int(rows.size)
    return KneeSet(
        files=[knees.files[i] for i in rows],
        sides=[knees.sides[i] for i in rows],
        points_px=np.asarray(points[rows], dtype=np.float64),
        spacing=np.asarray(knees.spacing[rows], dtype=np.float64).reshape(n, 2),
        spacing_source=[knees.spacing_source[i] for i in rows],
        uncertainty_mm=np.full((n, 16), np.nan),
        coverage=np.full(n, np.nan),
        paths=[None] * n,
        errors=[None] * n,
    )


def measurement_agreements(
    sets: Sequence[MatchedKnees], out: str | os.PathLike[str], slugs: Sequence[str]
) -> list[MeasurementAgreement]:
    """Measure predictions and truth of every set (knees with all 16 true landmarks) and draw its Bland-Altman
    figure ``bland_altman_<slug>.png`` in ``out``; sets with fewer than :data:`MIN_KNEES` such knees are left out."""
    from kneel.measure import agreement, measure_knee_set, plot_bland_altman

    items = []
    for knees, slug in zip(sets, slugs, strict=True):
        complete = np.flatnonzero(np.all(np.isfinite(knees.true.reshape(len(knees.files), -1)), axis=1))
        if complete.size < MIN_KNEES:
            continue
        measured = measure_knee_set(_knee_set(knees, knees.pred, complete), samples=0)
        truth = measure_knee_set(_knee_set(knees, knees.true, complete), samples=0)
        table = agreement(measured, truth)
        plot = plot_bland_altman(
            measured, truth, Path(out) / f"bland_altman_{slug}.png", title=f"{knees.name}: predicted vs true landmarks"
        )
        items.append(MeasurementAgreement(knees.name, int(complete.size), table, plot))
    return items


def write_agreements(items: Sequence[MeasurementAgreement], out: str | os.PathLike[str]) -> list[Path]:
    """``measurements_agreement.csv``: every set's agreement rows, with a ``set`` column."""
    if not items:
        (Path(out) / "measurements_agreement.csv").unlink(missing_ok=True)
        return []
    table = pd.concat([item.table.assign(set=item.name) for item in items], ignore_index=True)
    table = table[["set", *[c for c in table.columns if c != "set"]]]
    path = Path(out) / "measurements_agreement.csv"
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    return [path]


def format_agreements(items: Sequence[MeasurementAgreement]) -> pd.DataFrame:
    """A display table: one row per measurement, per set its mean absolute difference and limits of agreement."""
    if not items:
        return pd.DataFrame()
    table = pd.concat([item.table.assign(set=item.name) for item in items], ignore_index=True)
    return format_agreement_table(table, [item.name for item in items])


def format_agreement_table(table: pd.DataFrame, sets: Sequence[str]) -> pd.DataFrame:
    """The display table of :func:`format_agreements` from the long table of :func:`write_agreements` (a ``set``
    column; ``measurements_agreement.csv``), for the sets named, in that order (absent ones are left out)."""
    rows = table[table["set"].isin(list(sets))]
    if rows.empty:
        return pd.DataFrame()
    first = rows.drop_duplicates("measurement")
    labels = [f"{m} ({u})" for m, u in zip(first["measurement"], first["unit"], strict=True)]
    display = pd.DataFrame({"Measurement": labels})
    for name in sets:
        part = rows[rows["set"] == name]
        if part.empty:
            continue
        t = part.set_index("measurement").loc[first["measurement"]]
        digits = [3 if u == "1" else 2 for u in t["unit"]]
        display[f"{name}: mean abs. diff."] = [_num(v, d) for v, d in zip(t["mad"], digits, strict=True)]
        display[f"{name}: 95 % limits"] = [
            f"{_num(lo, d)} to {_num(hi, d)}" for lo, hi, d in zip(t["loa_low"], t["loa_high"], digits, strict=True)
        ]
    return display


def _num(value: float, digits: int) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"
