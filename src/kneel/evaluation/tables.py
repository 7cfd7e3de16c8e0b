"""Result tables: per-landmark statistics and the paper's bone-grouped recall, as CSV, Markdown and LaTeX.

Rows are computed for every knee subset that has knees: all knees, each KL grade, no-OA (KL < 2) and OA (KL >= 2).
The CSV keeps full-precision numbers (recall in %, errors in mm); Markdown and LaTeX show ``mean ± std`` cells the
way the paper's tables do (recall in %, mean ± std over tibia and femur).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.evaluation.matching import MatchedKnees
from kneel.evaluation.metrics import (
    DEFAULT_THRESHOLDS,
    OUTLIER_MM,
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
    "summary_table",
    "landmark_table",
    "format_summary",
    "format_landmarks",
    "to_markdown",
    "to_latex",
    "write_table",
]

GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {"cv": CV_GROUPS, "test": TEST_GROUPS}
"""The reference's two bone groupings: cross-validation (end points) and test (end points and centre)."""


def _t(t: float) -> str:
    return f"{t:g}"


def knee_subsets(knees: MatchedKnees) -> list[tuple[str, np.ndarray]]:
    """(label, mask) for all knees, each KL grade present, no-OA (KL < 2) and OA (KL >= 2); empty subsets dropped."""
    n = knees.num_knees
    out = [("all", np.ones(n, dtype=bool))]
    kl = knees.kl
    known = ~np.isnan(kl)
    if known.any():
        for grade in sorted({int(g) for g in kl[known]}):
            out.append((f"KL{grade}", known & (kl == grade)))
        out.append(("no-OA (KL<2)", known & (kl < 2)))
        out.append(("OA (KL>=2)", known & (kl >= 2)))
    return [(label, mask) for label, mask in out if mask.any()]


def _groupings_for(knees: MatchedKnees) -> dict[str, dict[str, tuple[int, ...]]]:
    """The groupings whose landmarks are all in the ground truth; else one group of every evaluated landmark."""
    present = set(knees.evaluated_landmarks)
    usable = {name: groups for name, groups in GROUPINGS.items() if all(set(g) <= present for g in groups.values())}
    if not usable:
        usable = {"landmarks": {"all": tuple(sorted(present))}}
    return usable


def summary_table(sets: Sequence[MatchedKnees], thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per (prediction set, knee subset, grouping): recall mean/std over bones in %, % out, mean/median mm.

    ``grouping`` is ``cv`` (tibia 0, 8; femur 9, 15) or ``test`` (tibia 0, 4, 8; femur 9, 12, 15); when the ground
    truth lacks those landmarks (e.g. the low-cost stage's single centre) it is ``landmarks`` (recall of every
    evaluated landmark, std 0).
    """
    rows = []
    for knees in sets:
        for label, mask in knee_subsets(knees):
            sub = knees.subset(mask)
            evaluated = sub.errors[:, sub.evaluated_landmarks]
            summary = error_summary(evaluated)
            missing_knees = int(np.sum(np.all(np.isnan(sub.pred[:, sub.evaluated_landmarks, 0]), axis=1)))
            for grouping, groups in _groupings_for(knees).items():
                row: dict[str, object] = {
                    "set": knees.name,
                    "subset": label,
                    "knees": sub.num_knees,
                    "knees_missing": missing_knees,
                    "grouping": grouping,
                }
                cells = grouped_recall(sub.errors, groups, thresholds)
                for t in thresholds:
                    mean, std = cells[float(t)]
                    row[f"recall_{_t(t)}mm_mean"] = 100.0 * mean
                    row[f"recall_{_t(t)}mm_std"] = 100.0 * std
                row["out_pct"] = outlier_percent(sub.errors[:, sub.evaluated_landmarks])
                row["mean_mm"] = summary["mean"]
                row["median_mm"] = summary["median"]
                row["p95_mm"] = summary["p95"]
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


def format_summary(table: pd.DataFrame, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """The summary table with display cells: ``R@t mm`` as ``mean ± std`` (%), % out and errors rounded."""
    out = pd.DataFrame(
        {
            "Set": table["set"],
            "Knees": table["subset"],
            "N": table["knees"],
            "Missing": table["knees_missing"],
            "Grouping": table["grouping"],
        }
    )
    for t in thresholds:
        out[f"R@{_t(t)} mm (%)"] = [
            _pm(m, s) for m, s in zip(table[f"recall_{_t(t)}mm_mean"], table[f"recall_{_t(t)}mm_std"], strict=True)
        ]
    out[f"% out (≥{OUTLIER_MM:g} mm)"] = [_num(v, 1) for v in table["out_pct"]]
    out["Mean (mm)"] = [_num(v) for v in table["mean_mm"]]
    out["Median (mm)"] = [_num(v) for v in table["median_mm"]]
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
    table: pd.DataFrame, display: pd.DataFrame, stem: str | os.PathLike[str], caption: str = ""
) -> list[Path]:
    """Write ``stem.csv`` (numbers), ``stem.md`` and ``stem.tex`` (display cells), atomically; returns the paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    atomic_write_text(paths[0], table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(paths[1], to_markdown(display))
    atomic_write_text(paths[2], to_latex(display, caption=caption, label=f"tab:{stem.name}"))
    return paths
