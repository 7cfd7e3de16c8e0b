"""``kneel evaluate`` and ``kneel evaluate-cv``: compare landmark tables with ground truth and write a full report.

One call produces, in ``out``: ``summary.{csv,md,tex}`` (mean error and the paper's grouped recall with bootstrap
95 % confidence intervals, % out, per prediction set and knee subset, one bone grouping), ``landmarks.{csv,md,tex}``
(per-landmark statistics), ``errors_<set>.csv`` (every paired landmark with its error), ``missing_<set>.csv`` when
predictions are missing, ``cumulative.{png,svg}``, ``landmark_boxes.png``, ``examples_<set>.png`` (when images are
available), ``training_curves.png`` (when given a training stage), ``uncertainty.{csv,md,tex}`` and
``calibration_<set>.png`` (sets whose table carries ``uncertainty_mm`` and ``quality``: coverage of the radius, the
quality flag's recall and precision; :mod:`kneel.evaluation.uncertainty_section`), ``summary_short.md`` and
``report.html`` (everything above in one self-contained file, stamped with the versions, commit, device and date).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kneel.errors import KneelError, option
from kneel.evaluation.history import FAILED_RATIO, FoldHistory, history_table, read_histories
from kneel.evaluation.matching import (
    EvaluationInputError,
    MatchedKnees,
    match_predictions,
    read_ground_truth,
    read_kl_table,
    read_table,
)
from kneel.evaluation.measurement_section import (
    MeasurementAgreement,
    format_agreements,
    measurement_agreements,
    write_agreements,
)
from kneel.evaluation.metrics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, DEFAULT_THRESHOLDS, OUTLIER_MM
from kneel.evaluation.plots import (
    far_note,
    plot_cumulative,
    plot_examples,
    plot_landmark_boxes,
    plot_training_curves,
    split_far_sets,
)
from kneel.evaluation.report import HtmlReport, run_stamp
from kneel.evaluation.tables import (
    format_landmarks,
    format_summary,
    landmark_overview,
    landmark_table,
    summary_table,
    to_markdown,
    write_table,
)
from kneel.evaluation.uncertainty_section import (
    UncertaintySet,
    format_uncertainty,
    uncertainty_definition,
    uncertainty_sets,
    uncertainty_table,
)
from kneel.io.atomic import atomic_write_text
from kneel.landmarks import LANDMARKS

__all__ = [
    "EvaluationReport",
    "evaluate",
    "evaluate_cv",
    "parse_thresholds",
    "headline",
    "build_html",
    "summary_sections",
    "training_section",
    "uncertainty_section",
    "recall_definition",
]

PathLike = str | os.PathLike[str]


@dataclass
class EvaluationReport:
    """What :func:`evaluate` computed and where it wrote it."""

    out: Path
    sets: list[MatchedKnees]
    summary: pd.DataFrame
    landmarks: pd.DataFrame
    thresholds: tuple[float, ...]
    html: Path
    markdown: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """The notes a reader must see first (missing predictions, unpaired knees, skipped pictures)."""
    histories: list[FoldHistory] = field(default_factory=list)
    stamp: str = ""
    uncertainty: list[UncertaintySet] = field(default_factory=list)
    """Per set with ``uncertainty_mm`` and ``quality`` columns: coverage, ranking and flag figures, calibration plot."""
    agreements: list[MeasurementAgreement] = field(default_factory=list)
    """Per set: its measurements from predicted vs true landmarks (bias, limits of agreement, Bland-Altman plot)."""

    def headline(self, name: str | None = None) -> dict[str, float | int]:
        """Key numbers of one set (default: the first) over all knees; see :func:`headline`."""
        return headline(self, name)


def headline(report: EvaluationReport, name: str | None = None) -> dict[str, float | int]:
    """Mean/median error (mm) with the mean's 95 % CI, recall at each threshold (%, the report's grouping) and % out,
    all knees; the counts (``knees``, ``knees_missing``) are ints."""
    name = name or report.sets[0].name
    rows = report.summary[(report.summary["set"] == name) & (report.summary["subset"] == "all")]
    if rows.empty:
        raise KeyError(name)
    row = rows[rows["grouping"] == "test"].iloc[0] if (rows["grouping"] == "test").any() else rows.iloc[0]
    out: dict[str, float | int] = {
        "knees": int(row["knees"]),
        "knees_missing": int(row["knees_missing"]),
        "mean_mm": float(row["mean_mm"]),
        "mean_mm_ci_low": float(row["mean_mm_ci_low"]),
        "mean_mm_ci_high": float(row["mean_mm_ci_high"]),
        "median_mm": float(row["median_mm"]),
    }
    for t in report.thresholds:
        out[f"recall_{t:g}mm"] = float(row[f"recall_{t:g}mm_mean"])
    out["out_pct"] = float(row["out_pct"])
    return out


def parse_thresholds(text: str | Sequence[float] | None) -> tuple[float, ...]:
    """'1,1.5,2,2.5' (or a sequence) -> sorted unique positive floats."""
    if text is None:
        return DEFAULT_THRESHOLDS
    values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v] if isinstance(text, str) else list(text)
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise EvaluationInputError(f"thresholds must be positive numbers, got {text!r}")
    return tuple(sorted(set(float(v) for v in values)))


def _set_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(paths):
            raise EvaluationInputError(f"{len(names)} names given for {len(paths)} prediction tables")
        return list(names)
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}/{p.stem}" for p in paths]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "set"


def _find_image(images: Path | None, file: str) -> Path | None:
    candidates = []
    if images is not None:
        candidates += [images / file, images / Path(file).name]
    candidates.append(Path(file))
    for c in candidates:
        if c.is_file():
            return c
    if images is not None:  # same stem, any suffix (e.g. table written with 'a.dcm', folder holding 'a')
        stem = Path(file).stem
        for c in sorted(images.glob(f"{glob_escape(stem)}*")):
            if c.is_file() and c.stem == stem:
                return c
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


class _Images:
    """Finds and reads the radiographs behind table rows (spacing for errors; pixels for example ROIs)."""

    def __init__(self, images: Path | None) -> None:
        self.images = images
        self._spacing: dict[str, tuple[float, float] | None] = {}
        self._pixels: dict[str, tuple[np.ndarray, tuple[float, float]] | None] = {}

    def spacing_of(self, file: str) -> tuple[float, float] | None:
        if file not in self._spacing:
            from kneel.io import read_radiograph

            path = _find_image(self.images, file)
            sp = None
            if path is not None:
                try:
                    sp = tuple(float(v) for v in read_radiograph(path).spacing)
                except KneelError:
                    sp = None
            self._spacing[file] = sp
        return self._spacing[file]

    def loader(self, knees: MatchedKnees):
        from kneel.io import read_radiograph

        spacing = dict(zip(knees.files, (tuple(s) for s in knees.spacing), strict=True))

        def load(file: str) -> tuple[np.ndarray, tuple[float, float]] | None:
            if file in self._pixels:
                return self._pixels[file]
            loaded = read(file)
            if len(self._pixels) >= 8:  # a few films stay decoded: example grids reuse the same knees' films
                self._pixels.pop(next(iter(self._pixels)))
            self._pixels[file] = loaded
            return loaded

        def read(file: str) -> tuple[np.ndarray, tuple[float, float]] | None:
            path = _find_image(self.images, file)
            if path is None:
                return None
            try:
                rg = read_radiograph(path)
            except KneelError:
                try:  # plain image (prepared PNG): the table's spacing describes its frame
                    rg = read_radiograph(path, spacing=spacing[file])
                except KneelError:
                    return None
            return rg.image, tuple(float(v) for v in rg.spacing)

        return load


def _errors_frame(knees: MatchedKnees) -> pd.DataFrame:
    """Every ground-truth landmark of every knee: truth, prediction (NaN if missing), spacing and error."""
    knee_idx, lm = np.nonzero(~np.isnan(knees.true[:, :, 0]))
    return pd.DataFrame(
        {
            "file": np.asarray(knees.files, dtype=object)[knee_idx],
            "side": np.asarray(knees.sides, dtype=object)[knee_idx],
            "landmark": lm,
            "kl": knees.kl[knee_idx],
            "x_true": knees.true[knee_idx, lm, 0],
            "y_true": knees.true[knee_idx, lm, 1],
            "x_pred": knees.pred[knee_idx, lm, 0],
            "y_pred": knees.pred[knee_idx, lm, 1],
            "row_mm": knees.spacing[knee_idx, 0],
            "col_mm": knees.spacing[knee_idx, 1],
            "error_mm": knees.errors[knee_idx, lm],
        }
    )


def evaluate(
    pred: PathLike | Sequence[PathLike],
    gt: PathLike,
    *,
    out: PathLike,
    kl: PathLike | None = None,
    thresholds: str | Sequence[float] | None = None,
    images: PathLike | None = None,
    names: Sequence[str] | None = None,
    spacing: float | None = None,
    title: str = "Landmark evaluation",
    examples: bool = True,
    grouping: str = "test",
    training: PathLike | None = None,
    device: str | None = None,
    coverage: float | None = None,
    calibration: PathLike | None = None,
    measurements: bool = True,
) -> EvaluationReport:
    """Compare one or more prediction tables with the ground truth and write tables, pictures and ``report.html``.

    Args:
        pred: prediction table(s) (long format); several are compared side by side.
        gt: ground truth: long table (``ground_truth.csv``), VIA export, or bf_landmarks CSV (needs ``images``).
        out: output folder (created).
        kl: optional ``file,side,kl`` table (overrides a ``kl`` column of the ground truth).
        thresholds: recall thresholds in mm ('1,1.5,2,2.5' or a sequence).
        images: folder of the radiographs (spacing when the tables have no mm columns; example ROIs).
        names: labels of the prediction sets (default: file stems).
        spacing: fallback pixel spacing in mm for knees with no other source.
        title: report title.
        examples: draw worst/median/best example knees when images can be found.
        grouping: bone grouping of the recall columns, ``test`` (0, 4, 8 / 9, 12, 15) or ``cv`` (0, 8 / 9, 15); the
            other one (or every landmark) when the ground truth lacks its landmarks.
        training: a training run or stage folder (``fold_<k>/metrics.csv``): adds training curves and the
            failed-fold verdicts.
        device: device named in the report's stamp (default: what torch finds here).
        coverage: stated coverage of every set's ``uncertainty_mm`` (default: what the ``kneel predict`` folder of
            each table records, see :mod:`kneel.evaluation.uncertainty_section`).
        calibration: a model folder or its ``calibration.json``: the multipliers at other coverages (the whole
            stated-vs-observed curve), and the stated coverage of tables that record none.
        measurements: measure every set's knees from the predicted and from the true landmarks and report their
            agreement (:mod:`kneel.evaluation.measurement_section`; knees with all 16 true landmarks).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pred_paths = [Path(pred)] if isinstance(pred, str | os.PathLike) else [Path(p) for p in pred]
    if not pred_paths:
        raise EvaluationInputError("no prediction table given")
    thr = parse_thresholds(thresholds)
    images_dir = Path(images) if images is not None else None
    if images_dir is not None and not images_dir.is_dir():
        raise EvaluationInputError("images folder not found", images_dir)
    img = _Images(images_dir)
    truth = read_ground_truth(gt, spacing_of=img.spacing_of if images_dir is not None else None)
    kl_table = read_kl_table(kl) if kl is not None else None
    if grouping not in ("test", "cv"):
        raise EvaluationInputError(f"grouping must be 'test' or 'cv', got {grouping!r}")
    notes: list[str] = []
    warnings: list[str] = []

    sets, tables = [], []
    for path, name in zip(pred_paths, _set_names(pred_paths, names), strict=True):
        tables.append(read_table(path))
        knees = match_predictions(
            tables[-1],
            truth,
            name=name,
            kl=kl_table,
            spacing_of=img.spacing_of if images_dir is not None else None,
            default_spacing=spacing,
        )
        sets.append(knees)

    files: list[Path] = []
    summary = summary_table(sets, thr, grouping)
    landmarks = landmark_table(sets, thr)
    files += write_table(
        summary,
        format_summary(summary, thr),
        out / "summary",
        caption=title,
        latex=format_summary(summary, thr, style="paper"),
    )
    files += write_table(landmarks, format_landmarks(landmarks, thr), out / "landmarks", caption=title)
    for knees in sets:
        slug = _slug(knees.name)
        p = out / f"errors_{slug}.csv"
        atomic_write_text(p, _errors_frame(knees).to_csv(index=False, float_format="%.6g"))
        files.append(p)
        if len(knees.missing):
            p = out / f"missing_{slug}.csv"
            atomic_write_text(p, knees.missing.to_csv(index=False))
            files.append(p)
            n_knees = len(knees.missing.drop_duplicates(["file", "side"]))
            warnings.append(
                f"{knees.name}: {len(knees.missing)} ground-truth landmarks ({n_knees} knees) have no prediction; "
                f"they are excluded from the statistics and listed in {p.name}."
            )
        if len(knees.unmatched):
            warnings.append(f"{knees.name}: {len(knees.unmatched)} predicted knees have no ground truth (ignored).")
        sources = pd.Series(knees.spacing_source).value_counts()
        notes.append(f"{knees.name}: pixel spacing from " + ", ".join(f"{s} ({n} knees)" for s, n in sources.items()))

    files += plot_cumulative(sets, out / "cumulative", thr)
    files.append(plot_landmark_boxes(sets, out / "landmark_boxes.png"))
    example_paths: dict[str, Path] = {}
    if examples:
        for knees in sets:
            path = plot_examples(knees, img.loader(knees), out / f"examples_{_slug(knees.name)}.png")
            if path is None:
                hint = option("images", "DIR")
                warnings.append(f"{knees.name}: example knees skipped: images not found (give {hint}).")
            else:
                example_paths[knees.name] = path
                files.append(path)
    histories = read_histories(training) if training is not None else []
    if histories:
        files.append(plot_training_curves(histories, out / "training_curves.png"))
    slugs = [_slug(k.name) for k in sets]
    uncertainty = uncertainty_sets(sets, tables, pred_paths, out, slugs, coverage=coverage, calibration=calibration)
    if uncertainty:
        files += write_table(
            uncertainty_table(uncertainty), format_uncertainty(uncertainty), out / "uncertainty", caption=title
        )
        files += [u.plot for u in uncertainty]
        warnings += [w for w in (u.warning() for u in uncertainty) if w]
    else:  # no stale figures from an earlier run into the same folder
        for suffix in (".csv", ".md", ".tex"):
            (out / "uncertainty").with_suffix(suffix).unlink(missing_ok=True)

    agreements = measurement_agreements(sets, out, slugs) if measurements else []
    files += write_agreements(agreements, out) + [a.plot for a in agreements]  # (an empty list removes a stale table)

    report = EvaluationReport(
        out=out,
        sets=sets,
        summary=summary,
        landmarks=landmarks,
        thresholds=thr,
        html=out / "report.html",
        markdown=out / "summary_short.md",
        files=files,
        notes=warnings + notes,
        warnings=warnings,
        histories=histories,
        stamp=run_stamp(device),
        uncertainty=uncertainty,
        agreements=agreements,
    )
    atomic_write_text(report.markdown, short_markdown(report))
    build_html(report, example_paths, title, device).write(report.html)
    files += [report.markdown, report.html]
    return report


_GROUPING_TEXT = {
    "test": "test grouping: tibia = landmarks 0, 4, 8, femur = 9, 12, 15",
    "cv": "cv grouping: tibia = landmarks 0, 8, femur = 9, 15",
}


def recall_definition(report: EvaluationReport) -> str:
    """What the recall and interval cells mean, in one paragraph."""
    recall = []
    for grouping in report.summary["grouping"].unique():
        if grouping in _GROUPING_TEXT:
            recall.append(
                "share of knees whose bone error (mean of the bone's landmark errors) is ≤ t mm, averaged over tibia "
                f"and femur ({_GROUPING_TEXT[grouping]})"
            )
        else:
            names = ", ".join(LANDMARKS[k].name for k in report.sets[0].evaluated_landmarks)
            recall.append(f"share of knees whose mean error over the evaluated landmarks ({names}) is ≤ t mm")
    return (
        f"Mean: mean landmark error over all evaluated landmarks (mm). R@t: {'; '.join(recall)}. In brackets: 95 % "
        f"bootstrap confidence interval ({BOOTSTRAP_RESAMPLES} resamples of the knees with replacement, seed "
        f"{BOOTSTRAP_SEED}, percentile method). % out: knees with any landmark error ≥ {OUTLIER_MM:g} mm."
    )


def short_markdown(report: EvaluationReport) -> str:
    """A compact Markdown summary: the all-knees / no-OA / OA rows of each set, and the notes."""
    keep = report.summary["subset"].isin(["all", "no-OA (KL<2)", "OA (KL>=2)"])
    text = [
        f"_{report.stamp}_",
        "",
        recall_definition(report),
        "",
        to_markdown(format_summary(report.summary[keep].reset_index(drop=True), report.thresholds)),
    ]
    if report.uncertainty:
        text += ["## Uncertainty", "", to_markdown(format_uncertainty(report.uncertainty))]
    if report.notes:
        text += [*(f"- {n}" for n in report.notes), ""]
    return "\n".join(text)


def build_html(
    report: EvaluationReport, example_paths: dict[str, Path], title: str, device: str | None = None
) -> HtmlReport:
    """The evaluation report as an :class:`HtmlReport` (the demo builds its own from the same parts)."""
    thr = report.thresholds
    doc = HtmlReport(title, stamp=report.stamp or None, device=device)
    doc.paragraph(
        "Prediction sets: "
        + "; ".join(f"{k.name} ({k.num_knees} knees, {len(k.evaluated_landmarks)} landmarks)" for k in report.sets)
    )
    for warning in report.warnings:
        doc.paragraph(warning, css="note")
    for knees in report.sets:
        if len(knees.missing):
            doc.paragraph(f"Missing predictions in {knees.name} (first 20):", css="note")
            doc.table(knees.missing.head(20))
    summary_sections(doc, report)
    close, far = split_far_sets(report.sets)
    doc.heading("Cumulative error curves")
    doc.image(
        report.out / "cumulative.png",
        "Share of landmarks with error ≤ x mm (all evaluated landmarks); dotted lines at the recall thresholds. "
        + far_note(close, far),
    )
    doc.heading("Error per landmark")
    doc.image(report.out / "landmark_boxes.png", "Landmark errors (mm), all knees. " + far_note(close, far))
    doc.table(
        landmark_overview(report.landmarks, thr),
        f"All knees; the last column of each set: landmarks with error ≤ {max(thr):g} mm (%). Every knee subset "
        "and statistic (std, 95th percentile, recall at each threshold): landmarks.csv.",
    )
    if example_paths:
        doc.heading("Examples")
        for name, path in example_paths.items():
            doc.image(path, f"{name}: best, median and worst knees of each KL group.")
    if report.uncertainty:
        uncertainty_section(doc, report.uncertainty)
    if report.agreements:
        measurement_section(doc, report.agreements)
    if report.histories:
        training_section(doc, report.histories, report.out / "training_curves.png")
    if len(report.notes) > len(report.warnings):
        doc.heading("Notes")
        doc.bullets([n for n in report.notes if n not in report.warnings])
    doc.heading("Files")
    doc.bullets(sorted({p.name for p in report.files} | {"report.html", "summary_short.md"}))
    return doc


def summary_sections(doc: HtmlReport, report: EvaluationReport, heading: str = "Summary") -> None:
    """The summary table (all knees, one row per set), the per-KL-group table and the paper-style cells."""
    thr = report.thresholds
    table = report.summary
    doc.heading(heading)
    doc.paragraph(recall_definition(report))
    overall = table[table["subset"] == "all"].reset_index(drop=True)
    doc.table(format_summary(overall, thr), "All knees.")
    by_group = table[table["subset"] != "all"].reset_index(drop=True)
    if len(by_group):
        doc.heading("By knee group", level=3)
        doc.table(format_summary(by_group, thr), "KL grades from the ground truth; no-OA = KL 0-1, OA = KL 2-4.")
    doc.details(
        "Paper-style cells: recall as mean ± std over tibia and femur, every knee group (as in summary.tex)",
        format_summary(table, thr, style="paper"),
    )


def uncertainty_section(doc: HtmlReport, items: list[UncertaintySet]) -> None:
    """The uncertainty figures of every set that has them (table) and each set's calibration plot."""
    doc.heading("Uncertainty and the quality flag")
    doc.paragraph(uncertainty_definition(items))
    doc.table(format_uncertainty(items), "Every figure as a number: uncertainty.csv.")
    for item in items:
        doc.image(
            item.plot,
            f"{item.name}: left, stated vs observed coverage (the whole curve needs the calibration's multipliers at "
            "other coverages: --calibration MODEL); right, each knee's mean radius against its mean error.",
        )


def measurement_section(doc: HtmlReport, items: list[MeasurementAgreement]) -> None:
    """Each set's measurements from predicted landmarks against the same measurements from the true landmarks."""
    doc.heading("Measurements: predicted vs true landmarks")
    doc.paragraph(
        "Joint-space widths, plateau and condyle widths and joint-line angles (kneel measure, docs/measurements.md) "
        "of each knee with all 16 true landmarks, computed from the predicted and from the true landmarks with the "
        "same pixel spacing. Mean absolute difference and 95 % limits of agreement (bias ± 1.96 SD of the "
        "differences, Bland and Altman 1986); every figure: measurements_agreement.csv."
    )
    doc.table(format_agreements(items), ", ".join(f"{i.name}: {i.knees} knees" for i in items) + ".")
    for item in items:
        doc.image(item.plot, f"{item.name}: Bland-Altman plot per measurement (predicted - true against their mean).")


def training_section(doc: HtmlReport, histories: list[FoldHistory], picture: Path) -> None:
    """Training curves and the per-fold verdicts (a fold failed to learn when its kept epoch's validation error is
    not below 80 % of its first epoch's)."""
    doc.heading("Training")
    failed = [h for h in histories if h.failed]
    if failed:
        doc.paragraph(
            f"{len(failed)} of {len(histories)} folds failed to learn: "
            + ", ".join(f"{h.stage} {h.fold} ({h.first_mm:.2f} → {h.best_mm:.2f} mm)" for h in failed)
            + ". Their weights are in the ensemble; retrain them (more epochs, another seed) before trusting it.",
            css="note",
        )
    doc.image(
        picture,
        "Training loss and validation mean error per epoch, every fold; ★ the kept epoch (lowest validation loss); "
        "dashed: failed to learn.",
    )
    doc.table(
        history_table(histories),
        f"Failed to learn: validation mean error at the kept epoch not below {FAILED_RATIO:.0%} of the first "
        "epoch's. Folds trained for one epoch are not judged.",
    )


def evaluate_cv(
    run_dir: PathLike,
    *,
    out: PathLike | None = None,
    thresholds: str | Sequence[float] | None = None,
    images: PathLike | None = None,
    device: str | None = None,
) -> dict[str, EvaluationReport]:
    """Report on the out-of-fold predictions of a training run, one report per stage.

    Looks for ``oof_predictions.csv`` + ``oof_ground_truth.csv`` in ``run_dir`` and in each of its sub-folders
    (``MODEL/lc``, ``MODEL/hc``). Reports go to ``out/<stage>`` (default ``run_dir/evaluation/<stage>``); they use
    the cv bone grouping and include the stage's training curves (``fold_<k>/metrics.csv``). ``device`` is named in
    the stamp.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvaluationInputError("training run folder not found", run_dir)
    stages = [d for d in [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())] if _has_oof(d)]
    if not stages:
        raise EvaluationInputError("no oof_predictions.csv + oof_ground_truth.csv here or in a sub-folder", run_dir)
    out_root = Path(out) if out is not None else run_dir / "evaluation"
    reports = {}
    for stage_dir in stages:
        stage = stage_dir.name
        reports[stage] = evaluate(
            stage_dir / "oof_predictions.csv",
            stage_dir / "oof_ground_truth.csv",
            out=out_root / stage,
            thresholds=thresholds,
            images=images,
            names=[f"{stage} out-of-fold"],
            title=f"Cross-validation ({stage}): out-of-fold predictions of {run_dir.name}",
            examples=images is not None,
            grouping="cv",
            training=stage_dir,
            device=device,
        )
    return reports


def _has_oof(folder: Path) -> bool:
    return (folder / "oof_predictions.csv").is_file() and (folder / "oof_ground_truth.csv").is_file()
