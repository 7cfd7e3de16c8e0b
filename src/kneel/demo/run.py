"""``kneel demo``: from nothing to a trained, evaluated two-stage model on synthetic data, resumable step by step."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneel.demo.pipeline import (
    DemoError,
    DemoPaths,
    DemoSettings,
    drop_films,
    films_missing,
    find_config,
    no_learning_baseline,
    require,
    set_threads,
)
from kneel.demo.steps import StepRunner
from kneel.io.atomic import atomic_write_text

__all__ = ["DemoResult", "run_demo", "GEOMETRIES"]

GEOMETRIES = {"exact": False, "reference": True}
"""Prediction runs: name -> ``reference_geometry`` flag (same weights)."""
SET_NAMES = {"exact": "exact geometry", "reference": "reference geometry", "baseline": "no-learning baseline"}


@dataclass
class DemoResult:
    """Where the demo wrote its report and the numbers it found."""

    out: Path
    report_html: Path
    summary_md: Path
    headline: dict[str, dict[str, float]]
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def run_demo(
    out: str | os.PathLike[str] = "demo_output",
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
    stream: Any = None,
) -> DemoResult:
    """Run (or resume) the whole demo under ``out`` and return where the report is.

    Steps: synthetic training and held-out cohorts; prepared datasets; tiny LC then HC models (``settings.folds``
    folds, HC initialised from LC); predictions on the held-out films with the exact geometry and with the
    reference's geometry (same weights); a no-learning baseline; evaluation of the test predictions and of the
    out-of-fold predictions; ``report.html`` and ``summary.md``. Each finished step is reused when run again with
    the same settings.
    """
    settings = settings or DemoSettings()
    stream = stream or sys.stdout
    paths = DemoPaths(Path(out))
    paths.out.mkdir(parents=True, exist_ok=True)
    threads = set_threads(settings.threads)
    runner = StepRunner(paths.out, total=13, stream=stream)
    runner._say(f"kneel demo -> {paths.out.resolve()} ({threads} torch threads; settings {settings.as_dict()})")
    started = time.perf_counter()

    def synth(split: str, n: int, seed: int, cohort: Path) -> dict[str, Any]:
        mod = require("kneel.synth", f"synth {split}")
        summary = mod.generate_cohort(
            cohort, n, seed=seed, layout="flat", split=split, workers=settings.workers, progress=progress
        )
        return {"films": summary.n_images, "knees": summary.n_knees}

    def films_present(split: str, n: int, seed: int, cohort: Path) -> None:
        """Re-render a cohort's films if an earlier run removed them (films are a pure function of the seed)."""
        if films_missing(cohort):
            runner._say(f"re-rendering the {cohort.name} films (removed after their last use)")
            synth(split, n, seed, cohort)

    def drop(cohort: Path) -> None:
        if not settings.keep_films:
            freed = drop_films(cohort)
            if freed:
                runner._say(
                    f"removed the {cohort.name} cohort's films ({freed / 2**30:.1f} GiB; --keep-films keeps them)"
                )

    params_synth = {"n": settings.train_images, "seed": settings.seed}
    runner.run(
        "synth_train",
        "synthetic training cohort",
        params_synth,
        lambda: synth("train", settings.train_images, settings.seed, paths.train_cohort),
        outputs=[paths.train_cohort / "ground_truth.csv"],
        clear=[paths.train_cohort],
    )
    params_test = {"n": settings.test_images, "seed": settings.seed + 1}
    runner.run(
        "synth_test",
        "synthetic held-out test cohort",
        params_test,
        lambda: synth("test", settings.test_images, settings.seed + 1, paths.test_cohort),
        outputs=[paths.test_cohort / "ground_truth.csv"],
        clear=[paths.test_cohort],
    )

    def prepare() -> dict[str, Any]:
        mod = require("kneel.data.prepare", "prepare")
        films_present("train", settings.train_images, settings.seed, paths.train_cohort)
        report = mod.prepare_datasets(
            paths.train_cohort / "ground_truth.csv",
            paths.data,
            images=paths.train_cohort,
            workers=settings.workers,
            folds=settings.folds,
            seed=settings.seed,
            progress=progress,
        )
        if report.knees_prepared == 0:
            raise DemoError("dataset preparation produced no knees", paths.data)
        return {"knees": report.knees_prepared, "unreadable": len(report.unreadable)}

    runner.run(
        "prepare",
        "prepare the training datasets (lc 1 mm, hc 0.3 mm ROIs)",
        {"folds": settings.folds},
        prepare,
        outputs=[paths.data / "hc" / "metadata.csv"],
        clear=[paths.data],
        after=["synth_train"],
    )
    drop(paths.train_cohort)  # everything later reads the prepared data and the cohort's tables only

    def train(stage: str, params: dict[str, Any]) -> dict[str, Any]:
        mod = require("kneel.training", f"train {stage}")
        config = find_config(settings.lc_config if stage == "lc" else settings.hc_config)
        epochs = settings.lc_epochs if stage == "lc" else settings.hc_epochs
        stage_dir = paths.model / stage
        # Long runs (larger presets) must survive an interruption: the folds' last.pt continue (kneel train --resume)
        # when they were made by this very step (same settings, same upstream runs); anything else starts afresh.
        upstream = ["prepare"] + (["train_lc"] if stage == "hc" else [])
        key = json.dumps({"params": params, "upstream": [runner.results[u].run_id for u in upstream]}, sort_keys=True)
        marker = stage_dir / ".demo_step"
        same_step = marker.is_file() and marker.read_text(encoding="utf-8") == key
        resume = same_step and any(stage_dir.glob("fold_*/last.pt"))
        if not resume and stage_dir.exists():
            shutil.rmtree(stage_dir)
        if resume:
            runner._say(f"resuming the {stage} folds from their last finished epoch")
        stage_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, key)
        result = mod.train(
            config,
            paths.data,
            paths.model,
            # num_threads=0: the demo's own thread count (set_threads above), not the config's single thread.
            overrides=[
                f"epochs={epochs}",
                f"folds={settings.folds}",
                f"members={settings.hc_members if stage == 'hc' else 1}",
                "num_threads=0",
                f"fold_processes={settings.fold_processes}",
                f"val_from={settings.lc_val_from if stage == 'lc' else settings.hc_val_from}",
            ],
            init_from=paths.model / "lc" if stage == "hc" else None,
            device="cpu",
            progress=progress,
            resume=resume,
        )
        if result.oof_predictions is None:
            raise DemoError(f"training the {stage} stage wrote no out-of-fold predictions", result.stage_dir)
        return {
            "folds": len(result.folds),  # networks: folds x members
            "best_val_mean_mm": [float(f.best.get("val_mean_mm", float("nan"))) for f in result.folds],
            "config": str(config),
        }

    for stage in ("lc", "hc"):
        cfg = settings.lc_config if stage == "lc" else settings.hc_config
        params = {
            "config": cfg,
            "config_text": find_config(cfg).read_text(encoding="utf-8"),
            "folds": settings.folds,
            **({"members": settings.hc_members} if stage == "hc" and settings.hc_members > 1 else {}),
            "epochs": settings.lc_epochs if stage == "lc" else settings.hc_epochs,
            "val_from": settings.lc_val_from if stage == "lc" else settings.hc_val_from,
        }
        runner.run(
            f"train_{stage}",
            f"train the {stage.upper()} model ({cfg}, {settings.folds} folds"
            + (f" x {settings.hc_members} members" if stage == "hc" and settings.hc_members > 1 else "")
            + (", initialised from LC)" if stage == "hc" else ")"),
            params,
            lambda s=stage, p=params: train(s, p),
            outputs=[paths.model / stage / "oof_predictions.csv"],
            after=["prepare"] + (["train_lc"] if stage == "hc" else []),
        )

    # Calibration films: shapes from the held-out subjects (never trained on), films of their own seed, disjoint from
    # the test films; they fit the uncertainty radius (kneel calibrate) that the test predictions then carry.
    params_cal = {"n": settings.calibration_images, "seed": settings.seed + 2}
    runner.run(
        "synth_calibration",
        "synthetic calibration cohort (held-out subjects, own films)",
        params_cal,
        lambda: synth("test", settings.calibration_images, settings.seed + 2, paths.calibration_cohort),
        outputs=[paths.calibration_cohort / "ground_truth.csv"],
        clear=[paths.calibration_cohort],
    )

    def calibrate() -> dict[str, Any]:
        mod = require("kneel.inference.calibrate", "calibrate")
        from kneel.inference.calibration import CALIBRATION_FILE, CalibrationError

        (paths.model / CALIBRATION_FILE).unlink(missing_ok=True)  # a stale one would change the calibration run
        if settings.calibration_images == 0:
            return {"calibrated": False, "reason": "no calibration films (calibration_images 0)"}
        films_present("test", settings.calibration_images, settings.seed + 2, paths.calibration_cohort)
        try:
            run = mod.calibrate_model(
                paths.model,
                [paths.calibration_cohort],
                paths.calibration_cohort / "ground_truth.csv",
                out=paths.out / "predictions" / "calibration",
                progress=progress,
            )
        except CalibrationError as exc:  # e.g. toy models that find too few knees: report, do not stop
            return {"calibrated": False, "reason": str(exc)}
        cal = run.calibration
        return {"calibrated": True, "knees": run.knees, "coverage": cal.coverage, "multiplier": cal.multiplier}

    runner.run(
        "calibrate",
        "calibrate the uncertainty radius on the calibration films",
        {"version": 2},  # 2: the knee flag's far probability (knee_ratios)
        calibrate,
        clear=[paths.out / "predictions" / "calibration"],
        after=["synth_calibration", "train_hc"],
    )
    drop(paths.calibration_cohort)

    def predict(geometry: str) -> dict[str, Any]:
        mod = require("kneel.inference", f"predict {geometry}")
        summary = mod.predict_files(
            [paths.test_cohort],
            paths.model,
            paths.predictions(geometry),
            device="cpu",
            workers=0,
            reference_geometry=GEOMETRIES[geometry],
            progress=progress,
        )
        table = paths.predictions(geometry) / "landmarks.csv"
        if not table.is_file() or summary.done + summary.skipped == 0:
            raise DemoError(f"prediction ({geometry} geometry) produced no landmarks", paths.predictions(geometry))
        return {"done": summary.done, "failed": summary.failed, "seconds": summary.seconds}

    for geometry in GEOMETRIES:
        runner.run(
            f"predict_{geometry}",
            f"predict the held-out films ({geometry} geometry)",
            {"geometry": geometry},
            lambda g=geometry: predict(g),
            outputs=[paths.predictions(geometry) / "landmarks.csv"],
            clear=[paths.predictions(geometry)],
            after=["synth_test", "train_hc", "calibrate"],
        )

    def baseline() -> dict[str, Any]:
        no_learning_baseline(paths.train_cohort, paths.test_cohort, paths.baseline)
        return {}

    runner.run(
        "baseline",
        "no-learning baseline (mean training shape at each half's centre)",
        {"version": 1},
        baseline,
        outputs=[paths.baseline],
        after=["synth_train", "synth_test"],
    )

    def evaluate_test() -> dict[str, Any]:
        mod = require("kneel.evaluation", "evaluate")
        report = mod.evaluate(
            [paths.predictions(g) / "landmarks.csv" for g in GEOMETRIES] + [paths.baseline],
            paths.test_cohort / "ground_truth.csv",
            out=paths.evaluation,
            images=paths.test_cohort,
            names=[SET_NAMES[g] for g in GEOMETRIES] + [SET_NAMES["baseline"]],
            title="Held-out synthetic films: exact vs reference geometry (same weights)",
            device="cpu",
        )
        return {"headline": {s.name: report.headline(s.name) for s in report.sets}, "notes": report.notes}

    runner.run(
        "evaluate",
        "evaluate the held-out predictions",
        {"version": 3},  # 2: one grouping, bootstrap confidence intervals; 3: measurement agreement
        evaluate_test,
        outputs=[paths.evaluation / "report.html"],
        clear=[paths.evaluation],
        after=["predict_exact", "predict_reference", "baseline"],
    )

    def evaluate_cv() -> dict[str, Any]:
        mod = require("kneel.evaluation", "evaluate-cv")
        reports = mod.evaluate_cv(paths.model, out=paths.evaluation_cv, device="cpu")
        return {"headline": {stage: r.headline() for stage, r in reports.items()}}

    runner.run(
        "evaluate_cv",
        "evaluate the out-of-fold (cross-validation) predictions",
        {"version": 2},
        evaluate_cv,
        outputs=[paths.evaluation_cv / "hc" / "report.html"],
        clear=[paths.evaluation_cv],
        after=["train_lc", "train_hc"],
    )

    from kneel.demo.summary import write_demo_report

    def report() -> dict[str, Any]:
        html, md = write_demo_report(paths, settings, runner)
        return {"html": str(html), "markdown": str(md)}

    final = runner.run("report", "write report.html and summary.md", {"version": 1, "time": time.time()}, report)
    seconds = time.perf_counter() - started
    steps = [{"step": r.name, "seconds": r.seconds, "reused": r.reused} for r in runner.results.values()]
    return DemoResult(
        out=paths.out,
        report_html=Path(final.info["html"]),
        summary_md=Path(final.info["markdown"]),
        headline={
            **runner.results["evaluate"].info["headline"],
            **{f"{stage} out-of-fold": h for stage, h in runner.results["evaluate_cv"].info["headline"].items()},
        },
        steps=steps,
        seconds=seconds,
    )
