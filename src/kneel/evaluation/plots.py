"""Pictures of a result: cumulative error curves, per-landmark box plots and worst / median / best example ROIs.

Everything is drawn with matplotlib's Agg backend (no display needed) and written atomically. Example ROIs are cut
from the original image with :mod:`kneel.geometry` (a square of ``roi_mm`` around the true tibial landmark 4), so the
plotted points go through the same transform as the pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kneel.evaluation.matching import MatchedKnees  # noqa: E402
from kneel.evaluation.metrics import cumulative_curve  # noqa: E402
from kneel.evaluation.tables import knee_subsets  # noqa: E402
from kneel.geometry import roi_transform, warp  # noqa: E402
from kneel.io.atomic import atomic_write_bytes  # noqa: E402
from kneel.landmarks import CENTRE_LANDMARK, LANDMARKS  # noqa: E402

__all__ = [
    "RANKING_LANDMARKS",
    "ImageLoader",
    "plot_cumulative",
    "plot_landmark_boxes",
    "select_examples",
    "plot_examples",
]

RANKING_LANDMARKS: tuple[int, ...] = (0, 4, 8, 12, 15)
"""Landmarks whose mean error ranks the example knees (the reference's choice)."""
ImageLoader = Callable[[str], "tuple[np.ndarray, tuple[float, float]] | None"]
"""Maps a table's ``file`` to (image HxW, spacing (row_mm, col_mm)), or None when the image is unavailable."""


def _save(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip("."), dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_cumulative(
    sets: Sequence[MatchedKnees], stem: str | os.PathLike[str], max_mm: float = 10.0, title: str = ""
) -> list[Path]:
    """Cumulative distribution of landmark errors, one line per prediction set, one panel per knee group.

    Panels: all knees, and no-OA / OA when KL grades are known. Writes ``stem.png`` and ``stem.svg``.
    """
    stem = Path(stem)
    panels = [label for label, _ in knee_subsets(sets[0]) if label in ("all", "no-OA (KL<2)", "OA (KL>=2)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for knees in sets:
            masks = dict(knee_subsets(knees))
            if panel not in masks:
                continue
            sub = knees.subset(masks[panel])
            grid, frac = cumulative_curve(sub.errors[:, sub.evaluated_landmarks], max_mm=max_mm)
            ax.plot(grid, 100.0 * frac, label=f"{knees.name} (n={sub.num_knees})", linewidth=1.6)
        ax.set_xlim(0, max_mm)
        ax.set_ylim(0, 100)
        ax.set_xlabel("error (mm)")
        ax.set_ylabel("landmarks with error ≤ x (%)")
        ax.set_title(f"{panel} knees" if panel == "all" else panel)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths = [_save(fig, stem.with_suffix(".png")), _save(fig, stem.with_suffix(".svg"))]
    plt.close(fig)
    return paths


def plot_landmark_boxes(sets: Sequence[MatchedKnees], path: str | os.PathLike[str], title: str = "") -> Path:
    """Box plots of the error of each landmark (outliers shown), prediction sets side by side; one PNG."""
    path = Path(path)
    landmarks = sorted(set().union(*(k.evaluated_landmarks for k in sets)))
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.3 * len(landmarks) * len(sets) + 2)), 4.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, knees in enumerate(sets):
        data = [knees.errors[:, k][~np.isnan(knees.errors[:, k])] for k in landmarks]
        positions = np.arange(len(landmarks)) + (j - (len(sets) - 1) / 2) * width
        colour = colours[j % len(colours)]
        ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            showfliers=True,
            boxprops={"facecolor": colour, "alpha": 0.45},
            medianprops={"color": "black"},
            flierprops={"markersize": 2, "markeredgecolor": colour},
            manage_ticks=False,
        )
        ax.plot([], [], color=colour, linewidth=6, alpha=0.45, label=knees.name)
    values = np.concatenate([k.errors[~np.isnan(k.errors)] for k in sets] or [np.zeros(1)])
    if values.size and np.median(values) > 0 and values.max() / np.median(values) > 20:
        ax.set_yscale("log")  # one set far worse than another: keep the good ones readable
    ax.set_xticks(np.arange(len(landmarks)))
    ax.set_xticklabels([LANDMARKS[k].name for k in landmarks])
    ax.set_ylabel("error (mm)")
    ax.set_xlabel("landmark")
    ax.grid(axis="y", alpha=0.3)
    if len(sets) > 1:
        ax.legend(fontsize=8)
    ax.set_title(title or "error per landmark")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _kl_groups(knees: MatchedKnees) -> list[tuple[str, np.ndarray]]:
    kl = knees.kl
    if np.all(np.isnan(kl)):
        return [("all knees", np.ones(knees.num_knees, dtype=bool))]
    groups = [("KL 0-1", kl < 2), ("KL 2", kl == 2), ("KL 3-4", kl >= 3)]
    return [(label, mask) for label, mask in groups if mask.any()]


def select_examples(knees: MatchedKnees, mask: np.ndarray | None = None) -> dict[str, int]:
    """Indices of the best, median and worst knee by mean error over landmarks 0, 4, 8, 12, 15 (those evaluated)."""
    lms = [k for k in RANKING_LANDMARKS if k in knees.evaluated_landmarks] or knees.evaluated_landmarks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # knees without predictions: NaN score, dropped below
        score = np.nanmean(knees.errors[:, lms], axis=1)
    candidates = np.flatnonzero((mask if mask is not None else True) & ~np.isnan(score))
    if candidates.size == 0:
        return {}
    order = candidates[np.argsort(score[candidates], kind="stable")]
    return {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}


def plot_examples(
    knees: MatchedKnees,
    load_image: ImageLoader,
    path: str | os.PathLike[str],
    roi_mm: float = 115.0,
    roi_px: int = 384,
) -> Path | None:
    """Best / median / worst knee of each KL group (0-1, 2, 3-4; or all) as ROIs with true and predicted points.

    The ROI is ``roi_mm`` wide around the true tibial landmark 4, resampled to ``roi_px`` pixels. Returns None when no
    example image can be loaded.
    """
    path = Path(path)
    groups = [(label, select_examples(knees, mask)) for label, mask in _kl_groups(knees)]
    groups = [(label, picks) for label, picks in groups if picks]
    if not groups:
        return None
    fig, axes = plt.subplots(len(groups), 3, figsize=(9.6, 3.8 * len(groups)), squeeze=False)
    drawn = 0
    for row, (label, picks) in enumerate(groups):
        for col, which in enumerate(("best", "median", "worst")):
            ax = axes[row, col]
            ax.set_axis_off()
            if which not in picks:
                continue
            i = picks[which]
            loaded = load_image(knees.files[i])
            err = np.nanmean(knees.errors[i, knees.evaluated_landmarks])
            ax.set_title(
                f"{label}, {which}: {Path(knees.files[i]).name} {knees.sides[i]}\nmean {err:.2f} mm", fontsize=8
            )
            if loaded is None:
                ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", transform=ax.transAxes)
                continue
            image, spacing = loaded
            true, pred = knees.true[i], knees.pred[i]
            centre = true[CENTRE_LANDMARK] if not np.isnan(true[CENTRE_LANDMARK, 0]) else np.nanmean(true, axis=0)
            transform = roi_transform(centre, spacing, roi_px, roi_mm / roi_px)
            roi = warp(np.asarray(image, dtype=np.float32), transform, (roi_px, roi_px))
            lo, hi = np.percentile(roi, [1, 99])
            ax.imshow(np.clip((roi - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray", vmin=0, vmax=1)
            t_roi, p_roi = transform.apply(true), transform.apply(pred)
            ax.scatter(t_roi[:, 0], t_roi[:, 1], s=18, facecolors="none", edgecolors="lime", linewidths=1.0)
            ax.scatter(p_roi[:, 0], p_roi[:, 1], s=14, c="red", marker="x", linewidths=1.0)
            ax.set_xlim(-0.5, roi_px - 0.5)
            ax.set_ylim(roi_px - 0.5, -0.5)
            drawn += 1
    if drawn == 0:
        plt.close(fig)
        return None
    axes[0, 0].scatter([], [], facecolors="none", edgecolors="lime", label="ground truth")
    axes[0, 0].scatter([], [], c="red", marker="x", label=f"prediction ({knees.name})")
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{knees.name}: best / median / worst knees ({roi_mm:g} mm ROIs around T4)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    _save(fig, path)
    plt.close(fig)
    return path
