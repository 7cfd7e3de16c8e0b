"""Pictures of a result: cumulative error curves, per-landmark box plots, example knees and training curves.

Everything is drawn with matplotlib's Agg backend (no display needed) and written atomically. Each picture has a
``*_figure`` function returning the matplotlib figure (what the tests inspect) and a ``plot_*`` function that writes
it.

A prediction set far worse than the best one (a no-learning baseline, a failed model) would squash the others'
curves and boxes into a corner. :func:`split_far_sets` separates the sets whose median landmark error exceeds
``FAR_RATIO`` (3) times the best set's median; they get their own panel with their own axis, and the note says so.
Example knees are cut from the original image with :mod:`kneel.geometry`, so the plotted points go through the same
transform as the pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from kneel.evaluation.history import FoldHistory  # noqa: E402
from kneel.evaluation.matching import MatchedKnees  # noqa: E402
from kneel.evaluation.metrics import DEFAULT_THRESHOLDS, cumulative_curve  # noqa: E402
from kneel.evaluation.tables import knee_subsets  # noqa: E402
from kneel.geometry import Affine, warp  # noqa: E402
from kneel.io.atomic import atomic_write_bytes  # noqa: E402
from kneel.landmarks import LANDMARKS  # noqa: E402

__all__ = [
    "FAR_RATIO",
    "RANKING_LANDMARKS",
    "BONE_COLOURS",
    "ImageLoader",
    "split_far_sets",
    "cumulative_figure",
    "plot_cumulative",
    "landmark_boxes_figure",
    "plot_landmark_boxes",
    "select_examples",
    "examples_figure",
    "plot_examples",
    "training_figure",
    "plot_training_curves",
]

FAR_RATIO = 3.0
"""A set whose median landmark error exceeds this multiple of the best set's median is drawn on its own axis."""
RANKING_LANDMARKS: tuple[int, ...] = (0, 4, 8, 12, 15)
"""Landmarks whose mean error ranks the example knees (the reference's choice)."""
BONE_COLOURS = {"T": "#ffb000", "F": "#00c8ff"}
"""Tibia amber, femur cyan, in every example picture."""
ERROR_COLOUR = "#ff3b3b"
ImageLoader = Callable[[str], "tuple[np.ndarray, tuple[float, float]] | None"]
"""Maps a table's ``file`` to (image HxW, spacing (row_mm, col_mm)), or None when the image is unavailable."""
_NICE = (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)


def _save(fig: plt.Figure, path: Path, dpi: int = 120) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip("."), dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _nice_ceiling(value: float) -> float:
    """The smallest 1-1.5-2-2.5-3-4-5-6-8 x 10^k at or above ``value``."""
    if not np.isfinite(value) or value <= 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    for step in _NICE:
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


def _finite(knees: MatchedKnees) -> np.ndarray:
    err = knees.errors[:, knees.evaluated_landmarks]
    return err[~np.isnan(err)]


def _median(knees: MatchedKnees) -> float:
    values = _finite(knees)
    return float(np.median(values)) if values.size else float("nan")


def split_far_sets(
    sets: Sequence[MatchedKnees], ratio: float = FAR_RATIO
) -> tuple[list[MatchedKnees], list[MatchedKnees]]:
    """(close, far): far sets have a median landmark error above ``ratio`` x the lowest median of all sets.

    With one set, or when every set is within the ratio, everything is close.
    """
    medians = [_median(k) for k in sets]
    finite = [m for m in medians if np.isfinite(m)]
    if len(sets) < 2 or not finite:
        return list(sets), []
    best = min(finite)
    far_flags = [np.isfinite(m) and m > ratio * best for m in medians]
    close = [k for k, f in zip(sets, far_flags, strict=True) if not f]
    far = [k for k, f in zip(sets, far_flags, strict=True) if f]
    return close, far


def far_note(close: Sequence[MatchedKnees], far: Sequence[MatchedKnees]) -> str:
    """One sentence naming the sets drawn on their own axis, with their medians."""
    if not far:
        return ""
    best = min(_median(k) for k in close)
    names = ", ".join(f"{k.name} (median {_median(k):.1f} mm)" for k in far)
    return (
        f"Drawn on their own axis (median error > {FAR_RATIO:g}x the best set's {best:.2f} mm, they would squash "
        f"the other curves): {names}."
    )


# ----------------------------------------------------------------------------------------------------------------
# cumulative curves


def cumulative_figure(
    sets: Sequence[MatchedKnees], thresholds: Sequence[float] = DEFAULT_THRESHOLDS, title: str = ""
) -> plt.Figure:
    """Share of landmarks with error <= x, one line per set; panels all / no-OA / OA for the close sets, and one
    panel with its own x axis for the far sets (:func:`split_far_sets`). Thresholds are dotted lines.

    The close panels' x axis ends at a round number covering twice the largest threshold and the close sets' 95th
    percentile, so a precise model's curve is not pressed against the left edge.
    """
    close, far = split_far_sets(sets)
    panels = [label for label, _ in knee_subsets(close[0]) if label in ("all", "no-OA (KL<2)", "OA (KL>=2)")]
    close_values = np.concatenate([_finite(k) for k in close] or [np.zeros(0)])
    p95 = float(np.percentile(close_values, 95)) if close_values.size else 0.0
    max_mm = _nice_ceiling(max(2.0 * max(thresholds), p95))
    n_axes = len(panels) + (1 if far else 0)
    fig, axes = plt.subplots(1, n_axes, figsize=(4.2 * n_axes, 3.7), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {k.name: colours[i % len(colours)] for i, k in enumerate(sets)}

    def draw(ax: plt.Axes, group: Sequence[MatchedKnees], panel: str, limit: float) -> None:
        for knees in group:
            masks = dict(knee_subsets(knees))
            if panel not in masks:
                continue
            sub = knees.subset(masks[panel])
            grid, frac = cumulative_curve(sub.errors[:, sub.evaluated_landmarks], max_mm=limit, num=401)
            label = f"{knees.name} (n={sub.num_knees})"
            ax.plot(grid, 100.0 * frac, label=label, linewidth=1.7, color=colour_of[knees.name])
        if limit <= 20 * max(thresholds):  # on a far-off set's long axis the threshold lines would merge
            for t in thresholds:
                ax.axvline(t, color="0.55", linestyle=":", linewidth=0.9)
        ax.set_xlim(0, limit)
        ax.set_ylim(0, 100)
        ax.set_xlabel("landmark error (mm)")
        ax.set_ylabel("landmarks with error ≤ x (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7.5)

    for ax, panel in zip(axes[0], panels, strict=False):
        draw(ax, close, panel, max_mm)
        ax.set_title(f"{panel} knees" if panel == "all" else panel, fontsize=10)
    if far:
        ax = axes[0, -1]
        far_values = np.concatenate([_finite(k) for k in far])
        draw(ax, far, "all", _nice_ceiling(max(float(np.percentile(far_values, 95)), max_mm)))
        ax.set_title("far-off sets, own x axis (all knees)", fontsize=10, color="#a40")
        fig.text(0.01, 0.01, far_note(close, far), fontsize=8, color="#a40", va="bottom")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if far else 0, 1, 1))
    return fig


def plot_cumulative(
    sets: Sequence[MatchedKnees],
    stem: str | os.PathLike[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    title: str = "",
) -> list[Path]:
    """:func:`cumulative_figure` as ``stem.png`` and ``stem.svg``."""
    stem = Path(stem)
    fig = cumulative_figure(sets, thresholds, title)
    paths = [_save(fig, stem.with_suffix(".png")), _save(fig, stem.with_suffix(".svg"))]
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------------------------
# box plots


def _boxes(ax: plt.Axes, group: Sequence[MatchedKnees], landmarks: list[int], colour_of: dict[str, str]) -> None:
    width = 0.8 / len(group)
    for j, knees in enumerate(group):
        data = [knees.errors[:, k][~np.isnan(knees.errors[:, k])] for k in landmarks]
        positions = np.arange(len(landmarks)) + (j - (len(group) - 1) / 2) * width
        colour = colour_of[knees.name]
        ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            showfliers=True,
            boxprops={"facecolor": colour, "alpha": 0.45},
            medianprops={"color": "black"},
            flierprops={"markersize": 2.5, "markeredgecolor": colour},
            manage_ticks=False,
        )
        ax.plot([], [], color=colour, linewidth=6, alpha=0.45, label=knees.name)
    ax.set_xticks(np.arange(len(landmarks)))
    ax.set_xticklabels([LANDMARKS[k].name for k in landmarks])
    ax.set_ylabel("error (mm)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left")


def _whisker_top(values: np.ndarray) -> float:
    if values.size == 0:
        return 0.0
    q1, q3 = np.percentile(values, [25, 75])
    return float(min(values.max(), q3 + 1.5 * (q3 - q1)))


def landmark_boxes_figure(sets: Sequence[MatchedKnees], title: str = "") -> plt.Figure:
    """Box plots of each landmark's error, sets side by side; far sets (:func:`split_far_sets`) in a second panel
    with their own y axis.

    The close panel's y axis ends just above the highest whisker; when single outlying knees lie far above it, the
    axis is clipped there and a note in the panel counts the points above (with the largest value).
    """
    close, far = split_far_sets(sets)
    landmarks = sorted(set().union(*(k.evaluated_landmarks for k in sets)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {k.name: colours[i % len(colours)] for i, k in enumerate(sets)}
    width_in = min(14.0, max(6.5, 0.32 * len(landmarks) * max(len(close), len(far)) + 2))
    fig, axes = plt.subplots(
        2 if far else 1,
        1,
        figsize=(width_in, 6.8 if far else 4.0),
        squeeze=False,
        gridspec_kw={"height_ratios": [1.4, 1]} if far else None,
    )
    ax = axes[0, 0]
    _boxes(ax, close, landmarks, colour_of)
    per_box = [k.errors[:, lm][~np.isnan(k.errors[:, lm])] for k in close for lm in landmarks]
    top = 1.1 * max([_whisker_top(v) for v in per_box] + [0.0])
    values = np.concatenate([_finite(k) for k in close] or [np.zeros(0)])
    if values.size and values.max() > 1.25 * top > 0:
        above = int(np.sum(values > top))
        ax.set_ylim(0, top)
        ax.text(
            0.99,
            0.97,
            f"axis clipped at {top:.1f} mm: {above} landmark error{'s' if above != 1 else ''} above "
            f"(largest {values.max():.1f} mm)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7.5,
            color="#a40",
        )
    else:
        ax.set_ylim(0, max(1.05 * (values.max() if values.size else 1.0), 1e-3))
    ax.set_title(title or "error per landmark", fontsize=10)
    if far:
        ax_far = axes[1, 0]
        _boxes(ax_far, far, landmarks, colour_of)
        far_values = np.concatenate([_finite(k) for k in far])
        ax_far.set_ylim(0, 1.05 * float(far_values.max()))
        ax_far.set_title("far-off sets, own y axis", fontsize=10, color="#a40")
        ax_far.set_xlabel("landmark")
    else:
        ax.set_xlabel("landmark")
    fig.tight_layout()
    return fig


def plot_landmark_boxes(sets: Sequence[MatchedKnees], path: str | os.PathLike[str], title: str = "") -> Path:
    """:func:`landmark_boxes_figure` as one PNG."""
    path = Path(path)
    fig = landmark_boxes_figure(sets, title)
    _save(fig, path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# example knees


def _kl_groups(knees: MatchedKnees) -> list[tuple[str, np.ndarray]]:
    kl = knees.kl
    if np.all(np.isnan(kl)):
        return [("all knees", np.ones(knees.num_knees, dtype=bool))]
    groups = [("KL 0-1", kl < 2), ("KL 2", kl == 2), ("KL 3-4", kl >= 3)]
    return [(label, mask) for label, mask in groups if mask.any()]


def select_examples(knees: MatchedKnees, mask: np.ndarray | None = None) -> dict[str, int]:
    """Indices of the best, median and worst knee by mean error over landmarks 0, 4, 8, 12, 15 (those evaluated);
    with fewer than three knees, each is shown once."""
    lms = [k for k in RANKING_LANDMARKS if k in knees.evaluated_landmarks] or knees.evaluated_landmarks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # knees without predictions: NaN score, dropped below
        score = np.nanmean(knees.errors[:, lms], axis=1)
    candidates = np.flatnonzero((mask if mask is not None else True) & ~np.isnan(score))
    if candidates.size == 0:
        return {}
    order = candidates[np.argsort(score[candidates], kind="stable")]
    picks = {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}
    if len(order) < 3:  # one or two knees: show each once
        picks = {"best": int(order[0])} | ({"worst": int(order[-1])} if len(order) == 2 else {})
    return picks


def knee_crop(
    true: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    margin_mm: float = 8.0,
    min_mm: tuple[float, float] = (60.0, 36.0),
    max_mm: float = 200.0,
    long_side_px: int = 480,
) -> tuple[Affine, tuple[int, int], float]:
    """Original pixels -> a crop framing the knee's true and predicted landmarks (``margin_mm`` around them).

    The crop is at least ``min_mm`` (width, height) and at most ``max_mm`` on a side (a prediction farther away
    leaves the crop, centred then on the truth); its longer side has ``long_side_px`` pixels. Returns the transform,
    the output size (height, width) and the output spacing in mm per pixel.
    """
    row_mm, col_mm = (float(v) for v in spacing)
    scale = np.array([col_mm, row_mm])
    t_mm = true[~np.isnan(true[:, 0])] * scale
    p_mm = pred[~np.isnan(pred[:, 0])] * scale
    points = np.concatenate([t_mm, p_mm]) if p_mm.size else t_mm
    lo, hi = points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm
    size = np.maximum(hi - lo, np.array(min_mm))
    size[1] = max(size[1], 0.5 * size[0])
    centre = (lo + hi) / 2
    if np.any(size > max_mm):
        size = np.minimum(size, max_mm)
        centre = (t_mm.min(axis=0) + t_mm.max(axis=0)) / 2
    out_spacing = float(size.max() / long_side_px)
    width, height = (int(round(v / out_spacing)) for v in size)
    transform = (
        Affine.translation(-centre[0] / col_mm, -centre[1] / row_mm)
        .then(Affine.scaling(col_mm / out_spacing, row_mm / out_spacing))
        .then(Affine.translation((width - 1) / 2, (height - 1) / 2))
    )
    return transform, (height, width), out_spacing


def _outline(width: float = 2.2) -> list:
    return [path_effects.withStroke(linewidth=width, foreground="black")]


def _draw_knee(ax: plt.Axes, image: np.ndarray, spacing: Sequence[float], true: np.ndarray, pred: np.ndarray) -> int:
    """One example crop: numbered true landmarks coloured by bone and red vectors to the predictions; returns how
    many predictions fall outside the crop."""
    transform, (h, w), out_spacing = knee_crop(true, pred, spacing)
    crop = warp(np.asarray(image, dtype=np.float32), transform, (h, w))
    lo, hi = np.percentile(crop, [1, 99.5])
    ax.imshow(np.clip((crop - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray", vmin=0, vmax=1)
    t_px, p_px = transform.apply(true), transform.apply(pred)
    for k in range(len(LANDMARKS)):
        if np.isnan(t_px[k, 0]):
            continue
        colour = BONE_COLOURS[LANDMARKS[k].bone]
        if not np.isnan(p_px[k, 0]):
            if np.hypot(*(p_px[k] - t_px[k])) > 2.0:  # shorter than 2 crop pixels: the cross says enough
                ax.annotate(
                    "",
                    xy=tuple(p_px[k]),
                    xytext=tuple(t_px[k]),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": ERROR_COLOUR,
                        "lw": 1.1,
                        "mutation_scale": 7,
                        "shrinkA": 0,
                        "shrinkB": 0,
                    },
                )
            ax.plot(*p_px[k], marker="x", color=ERROR_COLOUR, markersize=4, mew=1.2)
        ax.plot(*t_px[k], marker="o", color=colour, markersize=4.2, mec="black", mew=0.6)
        below = LANDMARKS[k].bone == "T"
        ax.annotate(
            str(k),
            tuple(t_px[k]),
            xytext=(0, -10 if below else 6),
            textcoords="offset points",
            ha="center",
            fontsize=6.5,
            fontweight="bold",
            color=colour,
            path_effects=_outline(),
        )
    bar_px = 10.0 / out_spacing
    x0, y0 = 0.04 * w, 0.93 * h
    ax.plot([x0, x0 + bar_px], [y0, y0], color="white", linewidth=2.5, path_effects=_outline(3.5))
    ax.text(x0 + bar_px / 2, y0 - 0.03 * h, "10 mm", color="white", ha="center", fontsize=6.5, path_effects=_outline())
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    inside = (p_px[:, 0] >= 0) & (p_px[:, 0] <= w - 1) & (p_px[:, 1] >= 0) & (p_px[:, 1] <= h - 1)
    return int(np.sum(~np.isnan(p_px[:, 0]) & ~inside))


def _legend(ax: plt.Axes, name: str) -> None:
    ax.set_axis_off()
    columns = [
        ("Tibia", [lm for lm in LANDMARKS if lm.bone == "T"]),
        ("Femur", [lm for lm in LANDMARKS if lm.bone == "F"]),
    ]
    for c, (bone, lms) in enumerate(columns):
        colour = BONE_COLOURS[lms[0].bone]
        x = 0.0 + 0.36 * c
        ax.text(
            x,
            1.0,
            bone,
            color=colour,
            fontsize=8,
            fontweight="bold",
            va="top",
            transform=ax.transAxes,
            path_effects=_outline(1.6),
        )
        for i, lm in enumerate(lms):
            ax.text(
                x,
                0.88 - 0.095 * i,
                f"{lm.index:>2}  {lm.name}  {lm.description}",
                fontsize=7,
                va="top",
                transform=ax.transAxes,
            )
    x = 0.70
    for bone, y in (("T", 0.92), ("F", 0.80)):
        ax.plot([x + 0.01], [y], marker="o", color=BONE_COLOURS[bone], mec="black", transform=ax.transAxes)
        ax.text(
            x + 0.03,
            y,
            f"ground truth, {'tibia' if bone == 'T' else 'femur'} (number = landmark index)",
            fontsize=7,
            va="center",
            transform=ax.transAxes,
        )
    ax.annotate(
        "",
        xy=(x + 0.025, 0.66),
        xytext=(x - 0.005, 0.66),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "-|>", "color": ERROR_COLOUR, "lw": 1.2},
    )
    ax.text(
        x + 0.03, 0.66, "error vector, ground truth → prediction (×)", fontsize=7, va="center", transform=ax.transAxes
    )
    ax.text(
        x,
        0.48,
        f"predictions: {name}\nranked by the mean error of landmarks 0, 4, 8, 12, 15\nwhite bar: 10 mm",
        fontsize=7,
        va="top",
        transform=ax.transAxes,
        color="0.3",
    )


def examples_figure(knees: MatchedKnees, load_image: ImageLoader) -> plt.Figure | None:
    """Best / median / worst knee of each KL group (0-1, 2, 3-4; or all) as zoomed crops of the original image.

    Each crop frames the knee's true and predicted landmarks; true landmarks are numbered and coloured by bone
    (tibia amber, femur cyan), red arrows run from each true landmark to its prediction, a 10 mm bar gives the
    scale, and a legend lists the anatomical names. Returns None when no image can be loaded.
    """
    groups = [(label, select_examples(knees, mask)) for label, mask in _kl_groups(knees)]
    groups = [(label, picks) for label, picks in groups if picks]
    if not groups:
        return None
    fig = plt.figure(figsize=(13.0, 2.9 * len(groups) + 1.8))
    grid = fig.add_gridspec(len(groups) + 1, 3, height_ratios=[2.9] * len(groups) + [1.6])
    drawn = 0
    for row, (label, picks) in enumerate(groups):
        for col, which in enumerate(("best", "median", "worst")):
            ax = fig.add_subplot(grid[row, col])
            ax.set_xticks([])
            ax.set_yticks([])
            if which not in picks:
                ax.set_axis_off()
                continue
            i = picks[which]
            err = knees.errors[i]
            worst = int(np.nanargmax(err))
            loaded = load_image(knees.files[i])
            title = (
                f"{label} · {which}: {Path(knees.files[i]).name} {knees.sides[i]}\n"
                f"mean {np.nanmean(err[knees.evaluated_landmarks]):.2f} mm · largest {err[worst]:.2f} mm "
                f"({LANDMARKS[worst].name})"
            )
            if loaded is None:
                ax.text(0.5, 0.5, "image unavailable", ha="center", va="center", transform=ax.transAxes)
            else:
                image, spacing = loaded
                outside = _draw_knee(ax, image, spacing, knees.true[i], knees.pred[i])
                if outside:
                    title += f"\n{outside} prediction{'s' if outside > 1 else ''} outside the crop"
                drawn += 1
            ax.set_title(title, fontsize=7.5)
    if drawn == 0:
        plt.close(fig)
        return None
    _legend(fig.add_subplot(grid[len(groups), :]), knees.name)
    fig.suptitle(f"{knees.name}: best / median / worst knees", fontsize=10)
    fig.tight_layout()
    return fig


def plot_examples(knees: MatchedKnees, load_image: ImageLoader, path: str | os.PathLike[str]) -> Path | None:
    """:func:`examples_figure` as one PNG; None when no example image could be loaded."""
    fig = examples_figure(knees, load_image)
    if fig is None:
        return None
    path = Path(path)
    _save(fig, path, dpi=100)  # 13 inches wide: the crops keep about their own resolution
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# training curves


def training_figure(histories: Sequence[FoldHistory]) -> plt.Figure | None:
    """Per stage (rows): training loss and validation mean error (mm; log scale when it spans a decade) per epoch,
    one line per fold.

    The kept epoch of each fold is a star on both curves; a fold that failed to learn
    (:attr:`FoldHistory.failed`) is dashed, named in the legend and counted in the panel title.
    """
    if not histories:
        return None
    stages = list(dict.fromkeys(h.stage for h in histories))
    fig, axes = plt.subplots(len(stages), 2, figsize=(11.0, 3.4 * len(stages)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, stage in enumerate(stages):
        ax_loss, ax_val = axes[row]
        folds = [h for h in histories if h.stage == stage]
        for j, h in enumerate(folds):
            colour = colours[j % len(colours)]
            style = "--" if h.failed else "-"
            label = h.fold + (" (failed to learn)" if h.failed else "")
            at = list(h.epochs).index(h.best_epoch)
            ax_loss.plot(h.epochs, h.train_loss, style, color=colour, marker="o", markersize=2.5, label=label)
            ax_loss.plot(h.best_epoch, h.train_loss[at], marker="*", color=colour, markersize=11, mec="black")
            ax_val.plot(h.epochs, h.val_mean_mm, style, color=colour, marker="o", markersize=2.5, label=label)
            ax_val.plot(h.best_epoch, h.val_mean_mm[at], marker="*", color=colour, markersize=11, mec="black")
        failed = sum(h.failed for h in folds)
        ax_loss.set_title(f"{stage.upper()}: training loss", fontsize=10)
        val_title = f"{stage.upper()}: validation mean error (★ kept epoch)"
        if failed:
            val_title += f"\n{failed} of {len(folds)} folds failed to learn"
        ax_val.set_title(val_title, fontsize=10, color="#b00" if failed else "black")
        values = np.concatenate([h.val_mean_mm for h in folds])
        values = values[np.isfinite(values) & (values > 0)]
        if values.size and values.max() / values.min() > 8:  # errors over a decade or more: log scale
            ax_val.set_yscale("log")
            ticks = [m * 10.0**e for e in range(-2, 4) for m in (1, 2, 3, 5)]
            ax_val.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
            ax_val.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax_val.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax_val.set_ylabel("mm")
        ax_loss.set_ylabel("loss")
        for ax in (ax_loss, ax_val):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_training_curves(histories: Sequence[FoldHistory], path: str | os.PathLike[str]) -> Path | None:
    """:func:`training_figure` as one PNG; None without histories."""
    fig = training_figure(histories)
    if fig is None:
        return None
    path = Path(path)
    _save(fig, path)
    plt.close(fig)
    return path
