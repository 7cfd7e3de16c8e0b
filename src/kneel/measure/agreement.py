"""Agreement of measurements with a reference (predictions vs ground truth): differences, Bland-Altman, coverage.

:func:`agreement` pairs two wide measurement tables knee by knee (``file, side``; file names compared exactly, else
by base name, else by stem) and gives per measurement: knees paired, mean of the reference, bias (mean of
``measured - reference``), mean absolute difference, standard deviation of the difference, the 95 % limits of
agreement ``bias ± 1.96 sd`` (Bland and Altman, Lancet 1986) and, where the measured table has uncertainties, the
share of knees whose reference value lies within ``± uncertainty`` (to compare with the stated coverage).
:func:`plot_bland_altman` draws one Bland-Altman panel per measurement.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.io.atomic import atomic_write_bytes
from kneel.measure.definitions import MEASUREMENT_NAMES, MEASUREMENTS
from kneel.measure.run import uncertainty_column

__all__ = ["pair_tables", "agreement", "plot_bland_altman", "agreement_markdown", "write_agreement"]

LOA_Z = 1.96
"""Limits of agreement: bias ± 1.96 standard deviations of the differences (95 % under normality)."""


def _file_keys() -> list[Callable[[str], str]]:
    return [lambda f: f, lambda f: Path(f).name, lambda f: Path(f).stem]


def pair_tables(measured: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Inner join on ``file, side`` (columns of ``reference`` suffixed ``_ref``), choosing the strictest file-name
    rule (exact, base name, stem) that pairs the most knees without merging two files of either table."""
    best, best_n = _file_keys()[0], -1
    for fn in _file_keys():
        if any(len({fn(f) for f in t["file"]}) != t["file"].nunique() for t in (measured, reference)):
            continue
        n = len({fn(f) for f in measured["file"]} & {fn(f) for f in reference["file"]})
        if n > best_n:
            best, best_n = fn, n
    left = measured.assign(_key=measured["file"].astype(str).map(best))
    right = reference.assign(_key=reference["file"].astype(str).map(best)).drop(columns=["file"])
    return left.merge(right, on=["_key", "side"], suffixes=("", "_ref"), how="inner").drop(columns=["_key"])


def agreement(
    measured: pd.DataFrame, reference: pd.DataFrame, names: Sequence[str] = MEASUREMENT_NAMES
) -> pd.DataFrame:
    """One row per measurement: ``n, reference_mean, bias, mad, sd, loa_low, loa_high, within_uncertainty,
    coverage`` (see the module docstring); ``measured`` and ``reference`` are :func:`kneel.measure.measure` tables."""
    paired = pair_tables(measured, reference)
    rows = []
    units = {m.name: m.unit for m in MEASUREMENTS}
    for name in names:
        a = pd.to_numeric(paired[name], errors="coerce").to_numpy(dtype=np.float64)
        b = pd.to_numeric(paired[f"{name}_ref"], errors="coerce").to_numpy(dtype=np.float64)
        diff = a - b
        if units.get(name) == "deg":
            diff = 180.0 - np.mod(180.0 - diff, 360.0)
        ok = np.isfinite(diff)
        d = diff[ok]
        row: dict[str, object] = {"measurement": name, "unit": units.get(name, ""), "n": int(ok.sum())}
        row["reference_mean"] = float(np.mean(b[ok])) if d.size else np.nan
        row["bias"] = float(np.mean(d)) if d.size else np.nan
        row["mad"] = float(np.mean(np.abs(d))) if d.size else np.nan
        row["sd"] = float(np.std(d, ddof=1)) if d.size > 1 else np.nan
        row["loa_low"] = row["bias"] - LOA_Z * row["sd"]  # type: ignore[operator]
        row["loa_high"] = row["bias"] + LOA_Z * row["sd"]  # type: ignore[operator]
        ucol = uncertainty_column(name)
        within, cov = np.nan, np.nan
        if ucol in paired.columns:
            u = pd.to_numeric(paired[ucol], errors="coerce").to_numpy(dtype=np.float64)
            has = ok & np.isfinite(u)
            if has.any():
                within = float(np.mean(np.abs(diff[has]) <= u[has]))
                if "coverage" in paired.columns:
                    cov = float(np.nanmean(pd.to_numeric(paired["coverage"], errors="coerce").to_numpy()[has]))
        row["within_uncertainty"] = within
        row["coverage"] = cov
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_markdown(table: pd.DataFrame) -> str:
    """The agreement table as Markdown (2-3 significant decimals)."""
    header = "| measurement | n | reference mean | bias | mean abs. diff. | 95 % limits of agreement | within ± u |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        digits = 3 if r.unit == "1" else 2
        unit = "" if r.unit == "1" else f" {r.unit}"

        def f(v: float) -> str:
            return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"  # noqa: B023 - digits of this row

        within = "n/a" if not np.isfinite(r.within_uncertainty) else f"{100 * r.within_uncertainty:.0f} %"
        if np.isfinite(r.coverage) and np.isfinite(r.within_uncertainty):
            within += f" (stated {100 * r.coverage:.0f} %)"
        lines.append(
            f"| {r.measurement} | {r.n} | {f(r.reference_mean)}{unit} | {f(r.bias)} | {f(r.mad)} | "
            f"{f(r.loa_low)} to {f(r.loa_high)} | {within} |"
        )
    return "\n".join(lines) + "\n"


def plot_bland_altman(
    measured: pd.DataFrame,
    reference: pd.DataFrame,
    path: str | os.PathLike[str],
    names: Sequence[str] = MEASUREMENT_NAMES,
    title: str = "",
) -> Path:
    """Bland-Altman panels (difference vs mean, bias and 95 % limits) for each measurement; PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paired = pair_tables(measured, reference)
    units = {m.name: m.unit for m in MEASUREMENTS}
    cols = 4
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.1 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        a = pd.to_numeric(paired[name], errors="coerce").to_numpy(dtype=np.float64)
        b = pd.to_numeric(paired[f"{name}_ref"], errors="coerce").to_numpy(dtype=np.float64)
        diff = a - b
        if units.get(name) == "deg":
            diff = 180.0 - np.mod(180.0 - diff, 360.0)
        ok = np.isfinite(diff)
        mean = (a + b) / 2.0
        ax.scatter(mean[ok], diff[ok], s=12, alpha=0.7, color="#1f77b4")
        if ok.sum() > 1:
            bias, sd = float(np.mean(diff[ok])), float(np.std(diff[ok], ddof=1))
            ax.axhline(bias, color="k", lw=1)
            for z in (-LOA_Z, LOA_Z):
                ax.axhline(bias + z * sd, color="#d62728", lw=1, ls="--")
        ax.axhline(0.0, color="0.6", lw=0.8, ls=":")
        unit = "" if units.get(name) == "1" else f" ({units.get(name)})"
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"mean of both{unit}", fontsize=8)
        ax.set_ylabel(f"measured - reference{unit}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_agreement(
    measured: pd.DataFrame, reference: pd.DataFrame, out: str | os.PathLike[str], title: str = ""
) -> list[Path]:
    """Write ``agreement.csv``, ``agreement.md`` and ``bland_altman.png`` into ``out``; returns the paths."""
    from kneel.io.atomic import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = agreement(measured, reference)
    paths = [out / "agreement.csv", out / "agreement.md", out / "bland_altman.png"]
    atomic_write_text(paths[0], table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths[1], agreement_markdown(table))
    plot_bland_altman(measured, reference, paths[2], title=title)
    return paths
