"""Result tables: per-landmark statistics and the paper's bone-grouped recall, as CSV, Markdown and LaTeX.

Rows are computed for every knee subset that has knees: all knees, each KL grade, no-OA (KL < 2) and OA (KL >= 2),
with one bone grouping per table. The CSV keeps full-precision numbers (recall in %, errors in mm, bootstrap 95 %
confidence bounds, the paper's std over tibia and femur); the report and Markdown show ``value (95 % CI)`` cells and
fold rows whose recall is 0 everywhere; LaTeX shows the paper's ``mean ± std`` cells.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import MatchedKnees
from kneel.evaluation.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    DEFAULT_THRESHOLDS,
    OUTLIER_MM,
    bootstrap_ci,
    error_summary,
    grouped_recall,
    outlier_percent,
    recall_at,
)
from kneel.io.atomic import atomic_write_text
from kneel.landmarks import CV_GROUPS, LANDMARKS, TEST_GROUPS

__all__ = [
    "GROUPINGS",
    "knee_subsets",
    "choose_grouping",
    "summary_table",
    "landmark_table",
    "format_summary",
    "format_landmarks",
    "landmark_overview",
    "ci_cell",
    "zero_recall",
    "to_markdown",
    "to_latex",
    "write_table",
]

GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {"cv": CV_GROUPS, "test": TEST_GROUPS}
"""The reference's two bone groupings: cross-validation (end points) and test (end points and centre)."""


def _t(t: float) -> str:
    return f"{t:g}"


def knee_subsets(knees: MatchedKnees) -> list[tuple[str, np.ndarray]]:
    """(label, mask) for all knees, each KL grade present, no-OA (KL < 2) and OA (KL >= 2).

    Empty subsets are dropped, and so is a subset holding exactly the knees of one that ranks before it (all, then
    no-OA, then OA, then single grades): with no KL 1 knees the KL 0 row would repeat the no-OA row.
    """
    n = knees.num_knees
    out = [("all", np.ones(n, dtype=bool))]
    kl = knees.kl
    known = ~np.isnan(kl)
    if known.any():
        for grade in sorted({int(g) for g in kl[known]}):
            out.append((f"KL{grade}", known & (kl == grade)))
        out.append(("no-OA (KL<2)", known & (kl < 2)))
        out.append(("OA (KL>=2)", known & (kl >= 2)))
    rank = {"all": 0, "no-OA (KL<2)": 1, "OA (KL>=2)": 2}
    kept = []
    for label, mask in out:
        if not mask.any():
            continue
        earlier = [m for lab, m in out if rank.get(lab, 3) < rank.get(label, 3) and m.any()]
        if any(np.array_equal(mask, m) for m in earlier):
            continue
        kept.append((label, mask))
    return kept


def choose_grouping(knees: MatchedKnees, preferred: str = "test") -> tuple[str, dict[str, tuple[int, ...]]]:
    """The bone grouping of a report: ``preferred`` when the ground truth has all its landmarks, else the other
    reference grouping that it has, else ``landmarks`` (one group of every evaluated landmark, e.g. the low-cost
    stage's single centre)."""
    if preferred not in GROUPINGS:
        raise ValueError(f"unknown grouping {preferred!r} (expected one of {', '.join(GROUPINGS)})")
    present = set(knees.evaluated_landmarks)
    for name in [preferred, *(g for g in GROUPINGS if g != preferred)]:
        if all(set(g) <= present for g in GROUPINGS[name].values()):
            return name, GROUPINGS[name]
    return "landmarks", {"all": tuple(sorted(present))}


def summary_table(
    sets: Sequence[MatchedKnees],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    grouping: str = "test",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """One row per (prediction set, knee subset): errors (mm), grouped recall (%), % out, with bootstrap 95 % CIs.

    One bone grouping per table (:func:`choose_grouping`): ``test`` (tibia 0, 4, 8; femur 9, 12, 15) or ``cv``
    (tibia 0, 8; femur 9, 15). Columns: ``mean_mm`` with ``mean_mm_ci_low/high``, ``median_mm``, ``p95_mm``; for each
    threshold ``recall_<t>mm_mean`` and ``_std`` (the paper's mean and std over the two bones) and ``_ci_low/high``
    (bootstrap over knees, :func:`kneel.evaluation.metrics.bootstrap_ci`); ``out_pct``.
    """
    rows = []
    for knees in sets:
        name, groups = choose_grouping(knees, grouping)
        for label, mask in knee_subsets(knees):
            sub = knees.subset(mask)
            evaluated = sub.errors[:, sub.evaluated_landmarks]
            summary = error_summary(evaluated)
            missing_knees = int(np.sum(np.all(np.isnan(sub.pred[:, sub.evaluated_landmarks, 0]), axis=1)))
            ci = bootstrap_ci(sub.errors, groups, thresholds, resamples=resamples, seed=seed)
            row: dict[str, object] = {
                "set": knees.name,
                "subset": label,
                "knees": sub.num_knees,
                "knees_missing": missing_knees,
                "grouping": name,
                "mean_mm": summary["mean"],
                "mean_mm_ci_low": ci["mean_mm"][0],
                "mean_mm_ci_high": ci["mean_mm"][1],
                "median_mm": summary["median"],
                "p95_mm": summary["p95"],
            }
            cells = grouped_recall(sub.errors, groups, thresholds)
            for t in thresholds:
                mean, std = cells[float(t)]
                low, high = ci[f"recall_{_t(t)}mm"]
                row[f"recall_{_t(t)}mm_mean"] = 100.0 * mean
                row[f"recall_{_t(t)}mm_std"] = 100.0 * std
                row[f"recall_{_t(t)}mm_ci_low"] = 100.0 * low
                row[f"recall_{_t(t)}mm_ci_high"] = 100.0 * high
            row["out_pct"] = outlier_percent(evaluated)
            rows.append(row)
    return pd.DataFrame(rows)


def landmark_table(sets: Sequence[MatchedKnees], thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per (prediction set, knee subset, landmark): n, mean, median, std, p95 (mm) and recall in %."""
    rows = []
    for knees in sets:
        for label, mask in knee_subsets(knees):
            sub = knees.subset(mask)
            for k in knees.evaluated_landmarks:
                summary = error_summary(sub.errors[:, k])
                row: dict[str, object] = {
                    "set": knees.name,
                    "subset": label,
                    "landmark": k,
                    "name": LANDMARKS[k].name,
                    "n": summary["n"],
                    "mean_mm": summary["mean"],
                    "median_mm": summary["median"],
                    "std_mm": summary["std"],
                    "p95_mm": summary["p95"],
                }
                for t, r in recall_at(sub.errors[:, k], thresholds).items():
                    row[f"recall_{_t(t)}mm"] = 100.0 * r
                rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.1f} ± {std:.1f}"


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def ci_cell(value: float, low: float, high: float, digits: int = 1) -> str:
    """``value (low–high)``; just ``value`` when the interval is a point (e.g. 0 % everywhere), n/a when unknown."""
    if value is None or np.isnan(value):
        return "n/a"
    if np.isnan(low) or np.isnan(high) or (round(low, digits) == round(value, digits) == round(high, digits)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def zero_recall(row: pd.Series | dict, thresholds: Sequence[float]) -> bool:
    """Whether a summary row's recall is exactly 0 at every threshold (no bone of any knee within the largest)."""
    return all(row[f"recall_{_t(t)}mm_mean"] == 0.0 for t in thresholds)


def format_summary(
    table: pd.DataFrame,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    style: str = "ci",
    subsets: bool = True,
    sets: bool | None = None,
) -> pd.DataFrame:
    """The summary table with display cells.

    ``style="ci"`` (report, Markdown): mean error and recall as ``value (95 % CI)``. ``style="paper"`` (LaTeX): recall
    as ``mean ± std`` over tibia and femur, as the KNEEL paper's tables. In both, a row whose recall is 0 at every
    threshold says so once instead of repeating zeros (its recall cells are spanned: ``display.attrs["spans"]``).
    Set / grouping columns appear only when they vary (``sets=True`` forces the set column); ``subsets=False``
    leaves out the knee-subset column.
    """
    if style not in ("ci", "paper"):
        raise ValueError(f"unknown style {style!r}")
    out = pd.DataFrame(index=range(len(table)))
    if sets or (sets is None and table["set"].nunique() > 1):
        out["Set"] = list(table["set"])
    if subsets:
        out["Knees"] = list(table["subset"])
    out["N"] = list(table["knees"])
    if (table["knees_missing"] > 0).any():
        out["Missing"] = list(table["knees_missing"])
    if style == "paper" or table["grouping"].nunique() > 1:
        out["Grouping"] = list(table["grouping"])
    if style == "ci":
        out["Mean (mm)"] = [
            ci_cell(m, lo, hi, 2)
            for m, lo, hi in zip(table["mean_mm"], table["mean_mm_ci_low"], table["mean_mm_ci_high"], strict=True)
        ]
    else:
        out["Mean (mm)"] = [_num(v) for v in table["mean_mm"]]
    out["Median (mm)"] = [_num(v) for v in table["median_mm"]]
    first = len(out.columns)
    for t in thresholds:
        key = f"recall_{_t(t)}mm"
        if style == "ci":
            cells = zip(table[f"{key}_mean"], table[f"{key}_ci_low"], table[f"{key}_ci_high"], strict=True)
            out[f"R@{_t(t)} mm (%)"] = [ci_cell(m, lo, hi) for m, lo, hi in cells]
        else:
            out[f"R@{_t(t)} mm (%)"] = [
                _pm(m, s) for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"], strict=True)
            ]
    out[f"% out (≥{OUTLIER_MM:g} mm)"] = [_num(v, 1) for v in table["out_pct"]]
    spans = {}
    text = f"0 at every threshold (none within {_t(max(thresholds))} mm)"
    for i, (_, row) in enumerate(table.iterrows()):
        if zero_recall(row, thresholds):
            out.iloc[i, first] = text
            for j in range(1, len(thresholds)):
                out.iloc[i, first + j] = ""
            spans[i] = (first, len(thresholds))
    out.attrs["spans"] = spans
    return out


def format_landmarks(table: pd.DataFrame, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """The per-landmark table with display cells (mm with 2 decimals, recall in % with 1)."""
    out = pd.DataFrame(
        {
            "Set": table["set"],
            "Knees": table["subset"],
            "Landmark": table["name"],
            "N": table["n"],
            "Mean (mm)": [_num(v) for v in table["mean_mm"]],
            "Median (mm)": [_num(v) for v in table["median_mm"]],
            "Std (mm)": [_num(v) for v in table["std_mm"]],
            "P95 (mm)": [_num(v) for v in table["p95_mm"]],
        }
    )
    for t in thresholds:
        out[f"R@{_t(t)} mm (%)"] = [_num(v, 1) for v in table[f"recall_{_t(t)}mm"]]
    return out


def landmark_overview(table: pd.DataFrame, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """All knees, one row per landmark with its anatomical name; per set the mean and median error and the recall
    at the largest threshold side by side (the long table, every subset, is ``landmarks.csv``)."""
    rows = table[table["subset"] == "all"]
    t_max = _t(max(thresholds))
    out = pd.DataFrame({"Landmark": [LANDMARKS[k].name for k in sorted(rows["landmark"].unique())]})
    out["Anatomy"] = [LANDMARKS[k].description for k in sorted(rows["landmark"].unique())]
    for name in rows["set"].unique():
        one = rows[rows["set"] == name].set_index("landmark").sort_index()
        label = f"{name}: " if rows["set"].nunique() > 1 else ""
        out[f"{label}mean (mm)"] = [_num(v) for v in one["mean_mm"]]
        out[f"{label}median (mm)"] = [_num(v) for v in one["median_mm"]]
        out[f"{label}≤{t_max} mm (%)"] = [_num(v, 1) for v in one[f"recall_{t_max}mm"]]
    return out


def to_markdown(display: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of string cells (no extra dependency)."""
    header = [str(c) for c in display.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in display.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}


def _latex_cell(value: object) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(value))
    return text.replace("±", r"$\pm$").replace("≥", r"$\geq$").replace(">=", r"$\geq$").replace("<", r"$<$")


def to_latex(display: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs LaTeX table of string cells (needs ``\\usepackage{booktabs}``)."""
    cols = "l" * min(2, len(display.columns)) + "r" * max(0, len(display.columns) - 2)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_cell(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    lines.append(" & ".join(_latex_cell(c) for c in display.columns) + r" \\")
    lines.append(r"\midrule")
    for row in display.itertuples(index=False):
        lines.append(" & ".join(_latex_cell(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    table: pd.DataFrame,
    display: pd.DataFrame,
    stem: str | os.PathLike[str],
    caption: str = "",
    latex: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``stem.csv`` (numbers), ``stem.md`` (``display``) and ``stem.tex`` (``latex``, default ``display``)."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    atomic_write_text(paths[0], table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(paths[1], to_markdown(display))
    latex = display if latex is None else latex
    atomic_write_text(paths[2], to_latex(latex, caption=caption, label=f"tab:{stem.name}"))
    return paths
