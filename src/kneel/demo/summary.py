"""The demo's own report: headline numbers, did the models learn, exact vs reference geometry, steps and timings.

It reads what the evaluation steps wrote (``summary.csv``, ``landmarks.csv``, pictures) and the training logs
(``fold_<k>/metrics.csv``), adds two pictures (training curves with failed folds flagged, a film overlay) and writes
``report.html`` (one self-contained, stamped file) and ``summary.md`` (the same numbers in Markdown, for notes and
the README).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from kneel.evaluation.history import FAILED_RATIO, FoldHistory, history_table, read_histories  # noqa: E402
from kneel.evaluation.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED  # noqa: E402
from kneel.evaluation.plots import plot_training_curves  # noqa: E402
from kneel.evaluation.report import HtmlReport  # noqa: E402
from kneel.evaluation.tables import format_summary, to_markdown  # noqa: E402
from kneel.io.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from kneel.landmarks import CENTRE_LANDMARK, LANDMARKS  # noqa: E402

if TYPE_CHECKING:
    from kneel.demo.pipeline import DemoPaths, DemoSettings
    from kneel.demo.steps import StepRunner

__all__ = ["write_demo_report", "headline_table", "plot_film_overlay", "DEVICE"]

DEVICE = "cpu"
"""The demo trains and predicts on the CPU; its report's stamp names that device."""

SYNTHETIC_NOTE = (
    "SYNTHETIC DATA. These numbers come from synthetic radiographs (kneel synth) and tiny CPU models trained for a "
    "few minutes; they show that the pipeline works end to end and that the models learn. They are not the "
    "KNEEL paper's results and say nothing about accuracy on real radiographs."
)


def _save(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _row(summary: pd.DataFrame, subset: str, grouping: str, set_name: str | None = None) -> pd.Series | None:
    rows = summary[(summary["subset"] == subset) & (summary["grouping"] == grouping)]
    if set_name is not None:
        rows = rows[rows["set"] == set_name]
    return None if rows.empty else rows.iloc[0]


def headline_table(paths: DemoPaths, thresholds: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5)) -> pd.DataFrame:
    """One row per result: held-out sets (test grouping) and out-of-fold stages (cv grouping, or LC's centre).

    Cells are ``value (95 % CI)``; a result with 0 recall at every threshold says so once
    (:func:`kneel.evaluation.tables.format_summary`).
    """
    rows: list[pd.Series] = []
    test = pd.read_csv(paths.evaluation / "summary.csv")
    for name in test["set"].unique():
        row = _row(test, "all", test.loc[test["set"] == name, "grouping"].iloc[0], name)
        if row is not None:
            row = row.copy()
            row["set"] = f"held-out films: {name}"
            rows.append(row)
    for stage, label in (("hc", "HC out-of-fold (ROI on true T4)"), ("lc", "LC out-of-fold (knee centre T4)")):
        path = paths.evaluation_cv / stage / "summary.csv"
        if path.is_file():
            cv = pd.read_csv(path)
            row = _row(cv, "all", cv["grouping"].iloc[0])
            if row is not None:
                row = row.copy()
                row["set"] = label
                rows.append(row)
    table = pd.DataFrame(rows).reset_index(drop=True)
    display = format_summary(table, thresholds, subsets=False, sets=True)
    return display.rename(columns={"Set": "Result", "N": "Knees"})


def _histories(paths: DemoPaths) -> list[FoldHistory]:
    return read_histories(paths.model)


def plot_film_overlay(paths: DemoPaths, errors_exact: pd.DataFrame, errors_reference: pd.DataFrame | None, path: Path):
    """The held-out film of the median knee: whole film with landmarks, and a 50 mm zoom on that knee.

    Green circles: ground truth; red crosses: exact geometry; blue pluses: reference geometry (same weights).
    """
    from kneel.geometry import resample_transform, roi_transform, warp
    from kneel.io import read_radiograph

    per_knee = errors_exact.groupby(["file", "side"])["error_mm"].mean().sort_values()
    if per_knee.empty:
        return None
    file, side = per_knee.index[len(per_knee) // 2]
    rg = read_radiograph(paths.test_cohort / file)
    film = errors_exact[errors_exact["file"] == file]
    ref = errors_reference[errors_reference["file"] == file] if errors_reference is not None else None
    whole = resample_transform(rg.spacing, 1.0)
    h, w = (int(round(n * s)) for n, s in zip(rg.image.shape, rg.spacing, strict=True))
    small = warp(rg.image, whole, (h, w))
    knee = film[film["side"] == side].sort_values("landmark")
    centre = knee.loc[knee["landmark"] == CENTRE_LANDMARK, ["x_true", "y_true"]].to_numpy()[0]
    roi_px, roi_mm = 500, 100.0
    zoom_t = roi_transform(centre, rg.spacing, roi_px, roi_mm / roi_px)
    zoom = warp(rg.image, zoom_t, (roi_px, roi_px))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), gridspec_kw={"width_ratios": [1.4, 1]})
    for ax, img, t in ((axes[0], small, whole), (axes[1], zoom, zoom_t)):
        lo, hi = np.percentile(img, [1, 99.5])
        ax.imshow(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1), cmap="gray")
        sel = film if ax is axes[0] else knee
        gt = t.apply(sel[["x_true", "y_true"]].to_numpy(dtype=float))
        pr = t.apply(sel[["x_pred", "y_pred"]].to_numpy(dtype=float))
        ax.scatter(
            gt[:, 0],
            gt[:, 1],
            s=28 if ax is axes[1] else 10,
            facecolors="none",
            edgecolors="lime",
            label="ground truth",
        )
        ax.scatter(pr[:, 0], pr[:, 1], s=28 if ax is axes[1] else 10, c="red", marker="x", label="exact geometry")
        if ref is not None:
            rsel = ref if ax is axes[0] else ref[ref["side"] == side]
            rp = t.apply(rsel[["x_pred", "y_pred"]].to_numpy(dtype=float))
            ax.scatter(
                rp[:, 0],
                rp[:, 1],
                s=28 if ax is axes[1] else 10,
                c="deepskyblue",
                marker="+",
                label="reference geometry",
            )
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_axis_off()
    axes[0].set_title(f"held-out synthetic film {file} (1 mm/px)", fontsize=9)
    err = knee["error_mm"].mean()
    axes[1].set_title(f"{side} knee, {roi_mm:g} mm around the true T4: exact mean error {err:.2f} mm", fontsize=9)
    axes[1].legend(loc="lower right", fontsize=8)
    for k, (x, y) in enumerate(zoom_t.apply(knee[["x_true", "y_true"]].to_numpy(dtype=float))):
        axes[1].annotate(
            LANDMARKS[int(knee["landmark"].iloc[k])].name,
            (x, y),
            xytext=(3, -8),
            textcoords="offset points",
            fontsize=6,
            color="yellow",
        )
    fig.suptitle("SYNTHETIC DATA: kneel demo, tiny CPU models", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _short(value: object) -> str:
    """Floats with 2 decimals (also inside lists) for the steps table."""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def _exact_vs_reference(paths: DemoPaths) -> pd.DataFrame | None:
    table = pd.read_csv(paths.evaluation / "landmarks.csv")
    table = table[table["subset"] == "all"]
    if not {"exact geometry", "reference geometry"} <= set(table["set"]):
        return None
    a = table[table["set"] == "exact geometry"].set_index("landmark")
    b = table[table["set"] == "reference geometry"].set_index("landmark")
    out = pd.DataFrame(
        {
            "Landmark": [LANDMARKS[k].name for k in a.index],
            "Exact mean (mm)": [f"{v:.2f}" for v in a["mean_mm"]],
            "Reference mean (mm)": [f"{v:.2f}" for v in b.loc[a.index, "mean_mm"]],
            "Reference - exact (mm)": [f"{v:+.2f}" for v in b.loc[a.index, "mean_mm"] - a["mean_mm"]],
            "Exact R@2 mm (%)": [f"{v:.1f}" for v in a["recall_2mm"]] if "recall_2mm" in a else "",
            "Reference R@2 mm (%)": [f"{v:.1f}" for v in b.loc[a.index, "recall_2mm"]] if "recall_2mm" in b else "",
        }
    )
    return out


def _learned_statements(paths: DemoPaths, runner: StepRunner) -> list[str]:
    lines = []
    test = pd.read_csv(paths.evaluation / "summary.csv")
    exact = _row(test, "all", "test", "exact geometry")
    ref = _row(test, "all", "test", "reference geometry")
    base = _row(test, "all", "test", "no-learning baseline")
    if exact is not None and base is not None:
        ratio = base["mean_mm"] / exact["mean_mm"] if exact["mean_mm"] > 0 else float("inf")
        verdict = (
            f"{ratio:.1f}x lower: the models learned"
            if ratio >= 2.0
            else "NOT clearly better: the models did not learn enough (train longer or on more films)"
        )
        lines.append(
            f"Held-out films: mean landmark error {exact['mean_mm']:.2f} mm (median {exact['median_mm']:.2f} mm) with "
            f"the trained LC+HC pipeline, against {base['mean_mm']:.2f} mm for the no-learning baseline (the mean "
            f"training shape at each image half's centre): {verdict}; recall at 2.5 mm "
            f"{exact['recall_2.5mm_mean']:.1f} % vs {base['recall_2.5mm_mean']:.1f} %."
        )
    if exact is not None and ref is not None:
        paired = ""
        a_path, b_path = (
            paths.evaluation / "errors_exact_geometry.csv",
            paths.evaluation / "errors_reference_geometry.csv",
        )
        if a_path.is_file() and b_path.is_file():
            a = pd.read_csv(a_path, dtype={"file": str}).groupby(["file", "side"])["error_mm"].mean()
            b = pd.read_csv(b_path, dtype={"file": str}).groupby(["file", "side"])["error_mm"].mean()
            both = pd.concat([a.rename("exact"), b.rename("reference")], axis=1).dropna()
            if len(both):
                paired = f"; the exact geometry is better on {int((both['exact'] < both['reference']).sum())} of "
                paired += f"{len(both)} knees"
        lines.append(
            f"Same weights, reference geometry (reference section 8 item 1): mean error {ref['mean_mm']:.2f} mm vs "
            f"{exact['mean_mm']:.2f} mm with the exact geometry ({ref['mean_mm'] - exact['mean_mm']:+.2f} mm){paired}; "
            f"recall at 2.5 mm {ref['recall_2.5mm_mean']:.1f} % vs {exact['recall_2.5mm_mean']:.1f} %."
        )
    histories = _histories(paths)
    for stage in dict.fromkeys(h.stage for h in histories):
        folds = [h for h in histories if h.stage == stage]
        first = float(np.mean([h.first_mm for h in folds]))
        kept = float(np.mean([h.best_mm for h in folds]))
        failed = [h.fold for h in folds if h.failed]
        verdict = (
            f" {len(failed)} of {len(folds)} folds FAILED TO LEARN ({', '.join(failed)}: kept error not below "
            f"{FAILED_RATIO:.0%} of the first epoch's)."
            if failed
            else ""
        )
        lines.append(
            f"{stage.upper()} training: validation mean error {first:.2f} mm after the first epoch, {kept:.2f} mm at "
            f"the kept epoch (mean over folds).{verdict}"
        )
    return lines


def measurement_agreement(paths: DemoPaths) -> pd.DataFrame | None:
    """Mean absolute difference and limits of agreement per measurement, exact geometry vs the no-learning baseline
    (from the evaluation step's ``measurements_agreement.csv``), or None when it has none."""
    from kneel.evaluation.measurement_section import format_agreement_table

    path = paths.evaluation / "measurements_agreement.csv"
    if not path.is_file():
        return None
    display = format_agreement_table(pd.read_csv(path), ["exact geometry", "no-learning baseline"])
    return None if display.empty else display


def uncertainty_section(paths: DemoPaths) -> tuple[pd.DataFrame, Path] | None:
    """Coverage, ranking and flag figures of the exact-geometry test predictions, and the calibration plot."""
    from kneel.evaluation.matching import match_predictions, read_ground_truth, read_table
    from kneel.evaluation.uncertainty import plot_calibration, uncertainty_report
    from kneel.inference.calibration import Calibration

    table = paths.predictions("exact") / "landmarks.csv"
    calibration = Calibration.find(paths.model)
    if calibration is None or not table.is_file():
        return None
    pred = read_table(table)
    knees = match_predictions(pred, read_ground_truth(paths.test_cohort / "ground_truth.csv"), name="exact geometry")
    report = uncertainty_report(knees, pred, calibration.coverage)
    rows = [
        ("stated coverage of uncertainty_mm", f"{report.stated_coverage:.0%}"),
        ("observed coverage (landmarks within the radius)", f"{report.observed_coverage:.1%}"),
        ("median radius", f"{report.median_radius_mm:.2f} mm"),
        ("rank correlation, knee mean radius vs knee mean error", f"{report.knee_rank_correlation:.2f}"),
        ("rank correlation per landmark", f"{report.landmark_rank_correlation:.2f}"),
        (
            "knees with a landmark >= 5 mm off: flagged 'uncertain'",
            f"{report.flag_recall:.0%} of {report.knees_far_off}" if report.knees_far_off else "none such knee",
        ),
        (
            "knees flagged 'uncertain': with a landmark >= 5 mm off",
            f"{report.flag_precision:.0%} of {report.flagged}" if report.flagged else "no knee flagged",
        ),
        ("95th percentile of the mean error of knees flagged 'ok'", f"{report.ok_p95_mean_error_mm:.2f} mm"),
        (
            "calibration knees",
            f"{calibration.n_knees} (cross-fitted, {calibration.cross_folds} folds)"
            if calibration.cross_folds
            else f"{calibration.n_fit} fit / {calibration.n_conformal} conformal",
        ),
    ]
    frame = pd.DataFrame(rows, columns=["Uncertainty (held-out films, exact geometry)", "Value"])
    plot = plot_calibration(
        knees, pred, calibration.levels, calibration.coverage, paths.out / "uncertainty_calibration.png"
    )
    return frame, plot


def write_demo_report(paths: DemoPaths, settings: DemoSettings, runner: StepRunner) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.md`` in the demo folder; returns their paths."""
    out = paths.out
    members = f" × {settings.hc_members} HC networks each" if settings.hc_members > 1 else ""
    headline = headline_table(paths)
    learned = _learned_statements(paths, runner)
    comparison = _exact_vs_reference(paths)
    histories = _histories(paths)
    curves = plot_training_curves(histories, out / "training_curves.png")
    errors_exact = paths.evaluation / "errors_exact_geometry.csv"
    errors_ref = paths.evaluation / "errors_reference_geometry.csv"
    overlay = None
    if errors_exact.is_file():
        overlay = plot_film_overlay(
            paths,
            pd.read_csv(errors_exact, dtype={"file": str}),
            pd.read_csv(errors_ref, dtype={"file": str}) if errors_ref.is_file() else None,
            out / "overlay.png",
        )
    steps = pd.DataFrame(
        [
            {
                "Step": r.name,
                "Seconds": f"{r.seconds:.1f}",
                "This run": "reused" if r.reused else "ran",
                "Info": ", ".join(
                    f"{k}={_short(v)}" for k, v in r.info.items() if k not in ("headline", "notes", "config")
                ),
            }
            for r in runner.results.values()
        ]
    )
    total = sum(r.seconds for r in runner.results.values())
    timing = (
        f"Wall time of this run: {runner.elapsed:.0f} s; sum of the step times (a run from scratch): {total:.0f} s."
    )
    cohorts = {r: runner.results[r].info for r in ("synth_train", "synth_test") if r in runner.results}

    recall_note = (
        "Mean: mean landmark error (mm). R@t: share of knees whose bone error (mean of the bone's landmark errors) "
        "is ≤ t mm, averaged over tibia and femur (test grouping 0,4,8 / 9,12,15 for held-out films; cv grouping "
        "0,8 / 9,15 out of fold; the LC stage's knee centre T4 alone). In brackets: 95 % bootstrap confidence "
        f"interval ({BOOTSTRAP_RESAMPLES} resamples of the knees, seed {BOOTSTRAP_SEED}). % out: knees with any "
        "landmark ≥ 10 mm."
    )
    doc = HtmlReport("kneel demo: synthetic cohort → prepare → train → predict → evaluate", device=DEVICE)
    doc.paragraph(SYNTHETIC_NOTE, css="note")
    doc.paragraph(
        f"Training cohort: {cohorts.get('synth_train', {}).get('films', '?')} films "
        f"({cohorts.get('synth_train', {}).get('knees', '?')} knees); held-out test cohort: "
        f"{cohorts.get('synth_test', {}).get('films', '?')} films ({cohorts.get('synth_test', {}).get('knees', '?')} "
        f"knees), shapes drawn from disjoint halves of the published annotations. Models: {settings.lc_config}, "
        f"{settings.hc_config}, {settings.folds} folds{members}, {settings.lc_epochs} / {settings.hc_epochs} epochs, "
        f"HC initialised from LC. The held-out films go through the whole pipeline (LC knee centres, HC landmarks, "
        f"{settings.folds}-fold ensembles)."
    )
    doc.heading("Headline numbers")
    doc.table(headline, recall_note)
    doc.heading("Did the models learn?")
    doc.bullets(learned)
    if curves is not None:
        doc.image(
            curves,
            "Training loss and validation mean error per epoch, every fold; ★ the kept epoch (lowest validation "
            f"loss); dashed: failed to learn (kept error not below {FAILED_RATIO:.0%} of the first epoch's).",
        )
        doc.table(history_table(histories))
    if overlay is not None:
        doc.image(
            overlay, "Median held-out knee: ground truth (green), exact geometry (red), reference geometry (blue)."
        )
    doc.heading("Exact vs reference geometry (same weights)")
    doc.paragraph(
        "The reference maps network outputs back without inverting pad and crop (reference section 8 item 1): "
        "low-cost knee centres are pulled toward the centre of the image half, so the high-cost ROI is cut in the "
        "wrong place, and high-cost outputs are stretched about the ROI centre (466/450 with the paper's geometry), "
        "which adds most at the end landmarks (T0, T8, F9, F15); the smaller the field of view the model was trained "
        "with, the larger the stretch (the tiny high-cost model sees 120 mm of the 140 mm ROI). The reference rows "
        "also prepare the inputs as the original code does (plain bilinear resizing, int sizes; checked against the "
        "original KNEEL code with benchmarks/vs_reference.py). The same weights and the same films are used for "
        "both rows."
    )
    if comparison is not None:
        doc.table(comparison)
    doc.heading("Held-out films")
    doc.image(
        paths.evaluation / "cumulative.png",
        "Cumulative error curves on the held-out films; a set far worse than the best (the no-learning baseline) "
        "is drawn in its own panel with its own axis.",
    )
    doc.image(paths.evaluation / "landmark_boxes.png", "Error per landmark on the held-out films.")
    test_summary = pd.read_csv(paths.evaluation / "summary.csv")
    by_group = test_summary[test_summary["subset"] != "all"].reset_index(drop=True)
    if len(by_group):
        doc.heading("By knee group", level=3)
        doc.table(format_summary(by_group), "KL grades from the ground truth; no-OA = KL 0-1, OA = KL 2-4.")
    doc.image(
        paths.evaluation / "examples_exact_geometry.png",
        "Best / median / worst held-out knees of each KL group (exact geometry).",
    )
    doc.paragraph(f"Complete evaluation report: {paths.evaluation / 'report.html'}")
    uncertainty = uncertainty_section(paths)
    if uncertainty is not None:
        doc.heading("Uncertainty: does the radius mean something?")
        doc.paragraph(
            "uncertainty_mm is a calibrated radius (kneel calibrate, fitted on the calibration films, none of them "
            "used in training): the true landmark should lie within it as often as the stated coverage says. A knee "
            "is flagged 'uncertain' when the calibration estimates more than a 1 - coverage chance that one of its "
            "landmarks lies the flag radius (5 mm) or more off."
        )
        doc.table(uncertainty[0])
        doc.image(
            uncertainty[1],
            "Left: stated vs observed coverage on the held-out films (radii rescaled to each coverage level with the "
            "calibration's own multipliers). Right: each knee's mean radius against its mean error.",
        )
    agreement = measurement_agreement(paths)
    if agreement is not None:
        doc.heading("Measurements: are the landmarks precise enough to measure the joint?")
        doc.paragraph(
            "Joint-space widths, plateau and condyle widths and joint-line angles (kneel measure) of each held-out "
            "knee, from the predicted landmarks (exact geometry) and from the true ones. Mean absolute difference "
            "and 95 % limits of agreement (Bland-Altman); the no-learning baseline shows what the mean shape alone "
            "gives. Every figure: evaluation/measurements_agreement.csv."
        )
        doc.table(agreement)
        doc.image(
            paths.evaluation / "bland_altman_exact_geometry.png",
            "Bland-Altman plots, exact geometry: predicted - true against their mean, bias and 95 % limits.",
        )
    doc.heading("Cross-validation (out-of-fold) results")
    doc.paragraph(
        "The headline table has every stage's all-knee row; the curves below show the whole distribution. Tables "
        "per knee group, box plots and training curves of each stage: evaluation/cv/<stage>/report.html."
    )
    for stage in ("lc", "hc"):
        if (paths.evaluation_cv / stage / "summary.csv").is_file():
            doc.image(
                paths.evaluation_cv / stage / "cumulative.png",
                f"{stage.upper()} stage, out-of-fold predictions (prepared-image frame).",
            )
    doc.heading("Steps")
    doc.table(steps, timing)
    doc.heading("Reproduce")
    doc.code(
        f"kneel demo --out {out} --train-images {settings.train_images} --test-images {settings.test_images} "
        f"--lc-epochs {settings.lc_epochs} --hc-epochs {settings.hc_epochs} --folds {settings.folds} "
        f"--hc-members {settings.hc_members} --seed {settings.seed}"
    )
    html = doc.write(out / "report.html")

    md = [
        "# kneel demo: results on synthetic data",
        "",
        f"_{doc.stamp}_",
        "",
        f"> {SYNTHETIC_NOTE}",
        "",
        f"Training cohort {cohorts.get('synth_train', {}).get('films', '?')} synthetic films, held-out cohort "
        f"{cohorts.get('synth_test', {}).get('films', '?')} films; tiny models ({settings.folds} folds{members}, "
        f"{settings.lc_epochs}/{settings.hc_epochs} epochs, LC → HC transfer), CPU only.",
        "",
        to_markdown(headline),
        recall_note,
        "",
        "## Did the models learn?",
        "",
        *(f"- {line}" for line in learned),
        "",
    ]
    if comparison is not None:
        md += [
            "## Exact vs reference geometry (same weights)",
            "",
            "Same held-out films, same weights; the reference rows prepare the inputs and map the outputs back as the "
            "original KNEEL code does (reference section 8 item 1: pad and crop not inverted, which stretches the "
            "landmarks about the ROI centre).",
            "",
            to_markdown(comparison),
        ]
    if uncertainty is not None:
        md += ["## Uncertainty (calibrated radius)", "", to_markdown(uncertainty[0]), ""]
    if agreement is not None:
        md += ["## Measurements from predicted vs true landmarks (mm, degrees)", "", to_markdown(agreement), ""]
    md += [
        "## Steps",
        "",
        to_markdown(steps),
        timing,
        "",
        f"Full report: `{html}`",
        "",
    ]
    md_path = out / "summary.md"
    atomic_write_text(md_path, "\n".join(md))
    return html, md_path
