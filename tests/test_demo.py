"""The demo end to end at toy sizes: every real step runs, the report exists, the numbers are finite, re-runs reuse."""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import pandas as pd
import pytest

NEEDED = ["kneel.synth", "kneel.data.prepare", "kneel.training", "kneel.inference", "kneel.models"]
MISSING = [m for m in NEEDED if importlib.util.find_spec(m) is None]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(bool(MISSING), reason=f"demo dependency missing: {', '.join(MISSING)}")
def test_reduced_demo_writes_report_with_finite_numbers(tmp_path: Path):
    from kneel.demo import DemoSettings, run_demo

    # one network per fold: the pipeline's mechanics, not its precision (members are tested in tests/training)
    settings = DemoSettings(train_images=16, test_images=2, folds=2, hc_members=1, lc_epochs=1, hc_epochs=1, workers=1)
    log = io.StringIO()
    result = run_demo(tmp_path / "demo", settings, progress=False, stream=log)

    assert result.report_html.is_file() and result.summary_md.is_file()
    html = result.report_html.read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in html and "data:image/png;base64" in html
    assert "exact geometry" in html and "reference geometry" in html
    for name in ("exact geometry", "reference geometry", "no-learning baseline", "hc out-of-fold", "lc out-of-fold"):
        numbers = result.headline[name]
        assert numbers["knees"] > 0, name
        if numbers.get("knees_missing", 0) == numbers["knees"]:
            # one-epoch toy models: the presence decision finds no knee in their vague answers; nothing to measure
            assert math.isnan(numbers["mean_mm"]), name
            continue
        assert math.isfinite(numbers["mean_mm"]) and numbers["mean_mm"] >= 0, name
        assert all(0.0 <= numbers[f"recall_{t}mm"] <= 100.0 for t in ("1", "1.5", "2", "2.5")), name
    summary = pd.read_csv(tmp_path / "demo" / "evaluation" / "test" / "summary.csv")
    assert set(summary["set"]) == {"exact geometry", "reference geometry", "no-learning baseline"}
    # One-epoch toy models may leave a knee undetected (the low-cost folds disagree): such a knee is reported as
    # missing, and a row of only missing knees has no errors. Every row with a predicted knee has numbers.
    predicted = summary[summary["knees"] > summary["knees_missing"]]
    assert len(predicted) > 0
    assert predicted["mean_mm"].notna().all()
    assert "step 13/13" in log.getvalue()

    # the training and calibration films are removed after their last use (the held-out films stay, with the tables)
    cohorts = tmp_path / "demo" / "cohorts"
    for name, kept in (("train", False), ("calibration", False), ("test", True)):
        films = pd.read_csv(cohorts / name / "films.csv", dtype={"file": str})["file"]
        assert len(films) > 0 and all((cohorts / name / f).is_file() == kept for f in films), name
        assert (cohorts / name / "ground_truth.csv").is_file(), name

    # a step that needs removed films again re-renders them: the same films, so the same prepared data
    prepared = (tmp_path / "demo" / "data" / "hc" / "metadata.csv").read_bytes()
    (tmp_path / "demo" / "data" / "hc" / "metadata.csv").unlink()
    log2 = io.StringIO()
    second = run_demo(tmp_path / "demo", settings, progress=False, stream=log2)
    assert "re-rendering the train films" in log2.getvalue()
    assert not next(s for s in second.steps if s["step"] == "prepare")["reused"]
    assert (tmp_path / "demo" / "data" / "hc" / "metadata.csv").read_bytes() == prepared

    # an interrupted high-cost training (its outputs gone, the folds' last.pt kept) resumes instead of starting over
    hc = tmp_path / "demo" / "model" / "hc"
    metrics = {f: (hc / f / "metrics.csv").read_bytes() for f in ("fold_0", "fold_1")}
    (hc / "oof_predictions.csv").unlink()
    log_resume = io.StringIO()
    resumed = run_demo(tmp_path / "demo", settings, progress=False, stream=log_resume)
    assert "resuming the hc folds" in log_resume.getvalue()
    assert not next(s for s in resumed.steps if s["step"] == "train_hc")["reused"]
    assert {f: (hc / f / "metrics.csv").read_bytes() for f in metrics} == metrics  # no epoch trained again
    second = resumed

    # third run: every step but the report is reused, with the same numbers
    log3 = io.StringIO()
    again = run_demo(tmp_path / "demo", settings, progress=False, stream=log3)
    reused = [s["step"] for s in again.steps if s["reused"]]
    assert len(reused) == len(again.steps) - 1 and "report" not in reused
    assert again.headline["exact geometry"]["mean_mm"] == pytest.approx(
        second.headline["exact geometry"]["mean_mm"], nan_ok=True
    )


def test_steps_are_reused_and_invalidated_downstream(tmp_path: Path):
    from kneel.demo.steps import StepRunner

    calls: list[str] = []

    def make(name: str, out: Path):
        def fn():
            calls.append(name)
            out.mkdir(parents=True, exist_ok=True)
            (out / "done").write_text(name)
            return {"n": len(calls)}

        return fn

    def pipeline(size: int) -> StepRunner:
        runner = StepRunner(tmp_path, total=2, stream=io.StringIO())
        runner.run(
            "a",
            "first",
            {"size": size},
            make("a", tmp_path / "a"),
            outputs=[tmp_path / "a" / "done"],
            clear=[tmp_path / "a"],
        )
        runner.run("b", "second", {}, make("b", tmp_path / "b"), outputs=[tmp_path / "b" / "done"], after=["a"])
        return runner

    pipeline(1)
    assert calls == ["a", "b"]
    runner = pipeline(1)
    assert calls == ["a", "b"] and all(r.reused for r in runner.results.values())
    pipeline(2)  # a changed: both run again
    assert calls == ["a", "b", "a", "b"]
    (tmp_path / "a" / "done").unlink()  # an output vanished: a runs again, and b after it
    pipeline(2)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    pipeline(2)
    assert len(calls) == 6


def test_demo_presets_and_options_on_the_command_line() -> None:
    """``--preset small`` selects the small configs and epochs; an option beside it overrides one setting only."""
    import argparse

    from kneel.cli.demo import add_arguments, settings_from_args
    from kneel.demo import DEMO_PRESETS, DemoSettings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert settings_from_args(parser.parse_args([])) == DemoSettings()
    small = settings_from_args(parser.parse_args(["--preset", "small"]))
    assert small == DEMO_PRESETS["small"]
    assert (small.lc_config, small.hc_config) == ("small_lc.yaml", "small_hc.yaml") and small.hc_epochs > 16
    mixed = settings_from_args(parser.parse_args(["--preset", "small", "--hc-epochs", "3", "--keep-films"]))
    assert mixed.hc_epochs == 3 and mixed.keep_films and mixed.hc_config == "small_hc.yaml"
    assert mixed.lc_epochs == small.lc_epochs and mixed.hc_val_from == small.hc_val_from
    assert settings_from_args(parser.parse_args(["--hc-val-from", "2"])).hc_val_from == 2
