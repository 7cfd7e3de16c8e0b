"""What makes the report trustworthy: confidence intervals checked against independent oracles, far-off sets on
their own axes, example knees whose numbers sit on the right pixels, failed folds flagged, one grouping per table,
zero rows folded, and a stamp naming the code that made the report."""

from __future__ import annotations

import datetime
import importlib.metadata
import math
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import kneel
from kneel.evaluation import evaluate, evaluate_cv
from kneel.evaluation.history import FAILED_RATIO, fold_history, read_histories
from kneel.evaluation.matching import match_predictions
from kneel.evaluation.metrics import bootstrap_ci
from kneel.evaluation.plots import (
    BONE_COLOURS,
    cumulative_figure,
    examples_figure,
    knee_crop,
    landmark_boxes_figure,
    training_figure,
)
from kneel.evaluation.report import git_commit
from kneel.evaluation.tables import format_summary, knee_subsets, summary_table
from kneel.landmarks import LANDMARKS, TEST_GROUPS

SPACING = 0.2  # mm per pixel
ZERO_CELL = re.compile(r"(?<![\d.])0\.0 ± 0\.0")


def _gt(num_images: int = 6, kl: bool = True) -> pd.DataFrame:
    """Plausible knees: tibia (0-8) on a line, femur (9-15) 12 mm above, 300 px apart per knee."""
    rows = []
    rng = np.random.default_rng(3)
    for i in range(num_images):
        for side, cx in (("R", 300.0), ("L", 900.0)):
            tibia = np.stack([np.linspace(cx - 180, cx + 180, 9), np.full(9, 420.0)], axis=1)
            femur = np.stack([np.linspace(cx - 170, cx + 170, 7), np.full(7, 360.0)], axis=1)
            for k, (x, y) in enumerate(np.concatenate([tibia, femur]) + rng.normal(0, 3, (16, 2))):
                row = {"file": f"img_{i}.png", "side": side, "landmark": k, "x_px": x, "y_px": y}
                if kl:
                    row["kl"] = i % 4
                rows.append(row)
    return pd.DataFrame(rows)


def _pred(gt: pd.DataFrame, error_mm: float, seed: int = 0) -> pd.DataFrame:
    """Predictions off by ``error_mm`` in a random direction per landmark, with the mm columns."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, len(gt))
    pred = gt.drop(columns=[c for c in ("kl",) if c in gt]).copy()
    pred["x_px"] += error_mm / SPACING * np.cos(angle)
    pred["y_px"] += error_mm / SPACING * np.sin(angle)
    pred["x_mm"], pred["y_mm"] = pred["x_px"] * SPACING, pred["y_px"] * SPACING
    return pred


# ---------------------------------------------------------------------------------------------------------------
# confidence intervals


def _oracle_ci(errors: np.ndarray, thresholds, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """The documented procedure written out plainly: resample knees, recompute each statistic, take percentiles."""
    rng = np.random.default_rng(seed)
    stats = {"mean_mm": []} | {f"recall_{t:g}mm": [] for t in thresholds}
    for _ in range(resamples):
        sample = errors[rng.integers(0, len(errors), size=len(errors))]
        stats["mean_mm"].append(np.nanmean(sample))
        for t in thresholds:
            per_bone = []
            for idx in TEST_GROUPS.values():
                bone = sample[:, list(idx)].mean(axis=1)
                bone = bone[~np.isnan(bone)]
                per_bone.append(np.mean(bone <= t))
            stats[f"recall_{t:g}mm"].append(np.mean(per_bone))
    return {k: tuple(np.percentile(v, [2.5, 97.5])) for k, v in stats.items()}


def test_bootstrap_ci_is_the_documented_resampling_of_knees():
    rng = np.random.default_rng(11)
    errors = rng.gamma(2.0, 0.8, size=(41, 16))
    errors[5, 4] = np.nan  # a missing landmark: not counted, its knee's tibia missing from the test grouping
    errors[9, 12] = np.nan
    thresholds = (1.0, 1.5, 2.0, 2.5)
    got = bootstrap_ci(errors, TEST_GROUPS, thresholds, resamples=400, seed=7)
    want = _oracle_ci(errors, thresholds, resamples=400, seed=7)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # the interval brackets the point estimate
    assert got["mean_mm"][0] < np.nanmean(errors) < got["mean_mm"][1]


def _gamma3_cdf(x: float, scale: float) -> float:
    z = x / scale
    return 1.0 - math.exp(-z) * (1.0 + z + z * z / 2.0)


def test_bootstrap_ci_covers_the_true_values_at_the_nominal_rate():
    """Errors with a known distribution (exponential, mean 2 mm): the true mean error is 2 mm and the true recall at
    2 mm is the Gamma(3, 2/3) cdf at 2 (a bone error is the mean of three). About 95 % of the intervals of many
    independent cohorts must contain them."""
    true_mean, true_recall = 2.0, _gamma3_cdf(2.0, 2.0 / 3.0)
    rng = np.random.default_rng(2024)
    cohorts, hits_mean, hits_recall, widths = 200, 0, 0, []
    for c in range(cohorts):
        errors = rng.exponential(true_mean, size=(60, 16))
        ci = bootstrap_ci(errors, TEST_GROUPS, (2.0,), resamples=500, seed=c)
        hits_mean += ci["mean_mm"][0] <= true_mean <= ci["mean_mm"][1]
        hits_recall += ci["recall_2mm"][0] <= true_recall <= ci["recall_2mm"][1]
        widths.append(ci["mean_mm"][1] - ci["mean_mm"][0])
    assert 0.89 <= hits_mean / cohorts <= 0.99
    assert 0.87 <= hits_recall / cohorts <= 0.99
    # width of a 95 % interval of a mean of 60 knee means, each of 16 exponentials: 2 * 1.96 * 2 / sqrt(16 * 60)
    assert np.mean(widths) == pytest.approx(2 * 1.96 * true_mean / math.sqrt(16 * 60), rel=0.1)


def test_summary_has_one_grouping_intervals_and_folds_zero_rows():
    gt = _gt()
    good = match_predictions(_pred(gt, 0.6), gt, name="good")
    none = match_predictions(_pred(gt, 30.0), gt, name="far off")
    table = summary_table([good, none], (1.0, 2.5))
    assert not table.duplicated(["set", "subset"]).any()
    assert set(table["grouping"]) == {"test"}
    row = table[(table["set"] == "good") & (table["subset"] == "all")].iloc[0]
    assert row["mean_mm_ci_low"] <= row["mean_mm"] <= row["mean_mm_ci_high"]
    assert row["recall_1mm_mean"] == pytest.approx(100.0)
    display = format_summary(table, (1.0, 2.5))
    far_rows = [i for i, s in enumerate(table["set"]) if s == "far off"]
    assert sorted(display.attrs["spans"]) == far_rows  # every all-zero row, and only those, is folded
    text = display.to_string()
    assert not ZERO_CELL.search(text) and "(0.0–0.0)" not in text
    assert "Grouping" not in display.columns  # one grouping: said once in the caption, not on every row
    paper = format_summary(table, (1.0, 2.5), style="paper")
    assert paper.iloc[0, paper.columns.get_loc("R@1 mm (%)")] == "100.0 ± 0.0"
    assert not ZERO_CELL.search(paper.to_string())


def test_subset_identical_to_a_broader_one_is_not_repeated():
    gt = _gt(num_images=3)  # KL 0, 1, 2
    gt.loc[gt["kl"] == 1, "kl"] = 0  # now KL 0 and 2 only: KL0 = no-OA, KL2 = OA
    knees = match_predictions(_pred(gt, 1.0), gt)
    labels = [label for label, _ in knee_subsets(knees)]
    assert labels == ["all", "no-OA (KL<2)", "OA (KL>=2)"]


# ---------------------------------------------------------------------------------------------------------------
# far-off sets


def _curves(ax) -> list[str]:
    """Names of the sets drawn as curves in a panel (threshold lines have no label)."""
    return [line.get_label().split(" (n=")[0] for line in ax.lines if not line.get_label().startswith("_")]


def test_far_off_set_gets_its_own_panel_and_does_not_squash_the_others():
    gt = _gt()
    good = match_predictions(_pred(gt, 0.8), gt, name="model")
    baseline = match_predictions(_pred(gt, 40.0, seed=1), gt, name="no-learning baseline")
    fig = cumulative_figure([good, baseline])
    try:
        assert len(fig.axes) == 4  # all / no-OA / OA for the model, one panel for the baseline
        *close_axes, far_ax = fig.axes
        for ax in close_axes:
            assert ax.get_xlim()[1] <= 10.0
            assert _curves(ax) == ["model"]
        assert far_ax.get_xlim()[1] >= 40.0
        assert _curves(far_ax) == ["no-learning baseline"]
        assert any("no-learning baseline" in t.get_text() for t in fig.texts)  # the note says what moved
    finally:
        plt.close(fig)

    fig = landmark_boxes_figure([good, baseline])
    try:
        top, bottom = fig.axes
        assert top.get_ylim()[1] < 5.0 and bottom.get_ylim()[1] > 40.0
    finally:
        plt.close(fig)

    close_sets = [good, match_predictions(_pred(gt, 1.6, seed=2), gt, name="other model")]
    fig = cumulative_figure(close_sets)
    try:
        assert len(fig.axes) == 3  # nothing far off: no extra panel
    finally:
        plt.close(fig)


def test_box_axis_is_clipped_above_outliers_with_a_note():
    gt = _gt()
    pred = _pred(gt, 1.0)
    outliers = pred.index[:3]
    pred.loc[outliers, "x_px"] += 60.0 / SPACING  # three landmarks 60 mm off
    pred["x_mm"] = pred["x_px"] * SPACING
    fig = landmark_boxes_figure([match_predictions(pred, gt, name="model")])
    try:
        (ax,) = fig.axes
        assert ax.get_ylim()[1] < 5.0
        notes = [t.get_text() for t in ax.texts]
        assert any("clipped" in n and "3 landmark errors above" in n for n in notes), notes
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# example knees


def test_example_crops_number_each_landmark_on_its_pixel_and_name_the_anatomy():
    gt = _gt(num_images=2, kl=False)
    images = {}
    for file in gt["file"].unique():
        image = np.zeros((800, 1200), np.float32)
        for x, y in gt.loc[gt["file"] == file, ["x_px", "y_px"]].to_numpy():
            image[int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 1000.0
        images[file] = image
    knees = match_predictions(_pred(gt, 3.0), gt, name="model")
    fig = examples_figure(knees, lambda f: (images[f], (SPACING, SPACING)))
    assert fig is not None
    try:
        crops = [ax for ax in fig.axes if ax.images]
        assert len(crops) == 3  # best, median, worst
        for ax in crops:
            crop = ax.images[0].get_array()
            labels = {t.get_text(): t for t in ax.texts if t.get_text().isdigit()}
            assert sorted(labels, key=int) == [str(k) for k in range(16)]
            for k, label in labels.items():
                x, y = label.xy
                # the number sits on its landmark: the bright square drawn at the true point in the film
                assert crop[int(round(y)), int(round(x))] > 0.5, k
                assert label.get_color() == BONE_COLOURS[LANDMARKS[int(k)].bone]
            arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None and not t.get_text()]
            assert len(arrows) == 16  # 3 mm error vectors, one per landmark
            assert "10 mm" in [t.get_text() for t in ax.texts]
        legend = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        for lm in LANDMARKS:
            assert lm.description in legend
    finally:
        plt.close(fig)


def test_knee_crop_frames_truth_and_prediction():
    true = np.array([[100.0, 200.0], [500.0, 220.0]])
    pred = np.array([[110.0, 200.0], [520.0, 260.0]])
    transform, (h, w), out_spacing = knee_crop(true, pred, (0.1, 0.2), margin_mm=5.0)
    for p in transform.apply(np.concatenate([true, pred])):
        assert 0 <= p[0] <= w - 1 and 0 <= p[1] <= h - 1
    # mm are preserved: 400 px at 0.2 mm = 80 mm between the two true points horizontally
    a, b = transform.apply(true)
    assert (b[0] - a[0]) * out_spacing == pytest.approx(80.0)
    assert (b[1] - a[1]) * out_spacing == pytest.approx(20 * 0.1)


# ---------------------------------------------------------------------------------------------------------------
# training curves


def _log(val: list[float], best: list[int] | None = None) -> pd.DataFrame:
    n = len(val)
    table = pd.DataFrame({"epoch": range(1, n + 1), "train_loss": np.linspace(1.0, 0.5, n), "val_mean_mm": val})
    if best is not None:
        table["best"] = best
    return table


def test_failed_fold_is_flagged_by_the_documented_ratio():
    learned = fold_history(_log([50.0, 20.0, 10.0], [1, 1, 1]))
    assert not learned.failed and learned.best_epoch == 3
    stuck = fold_history(_log([50.0, 45.0, 42.0], [1, 1, 1]))
    assert stuck.failed and "FAILED" in stuck.verdict
    at_ratio = fold_history(_log([50.0, 50.0 * FAILED_RATIO], [1, 1]))
    assert at_ratio.failed  # not *below* 80 % of the first epoch's
    assert not fold_history(_log([50.0, 50.0 * FAILED_RATIO - 0.01], [1, 1])).failed
    assert fold_history(_log([50.0, float("nan")], [1, 1])).failed
    single = fold_history(_log([50.0], [1]))
    assert not single.failed and not single.judged
    # the kept epoch is the last one training flagged best (lowest validation loss), not the lowest mm
    kept = fold_history(_log([50.0, 10.0, 12.0, 30.0], [1, 0, 1, 0]))
    assert kept.best_epoch == 3 and kept.best_mm == 12.0
    assert fold_history(_log([50.0, 10.0, 12.0])).best_epoch == 2  # no 'best' column: lowest error


def test_training_figure_marks_kept_epochs_and_failed_folds(tmp_path: Path):
    for stage, fold, val, best in (
        ("hc", "fold_0", [9.0, 4.0, 3.0], [1, 1, 0]),
        ("lc", "fold_0", [60.0, 20.0, 10.0], [1, 1, 1]),
        ("lc", "fold_1", [60.0, 58.0, 57.0], [1, 1, 1]),
    ):
        (tmp_path / stage / fold).mkdir(parents=True)
        _log(val, best).to_csv(tmp_path / stage / fold / "metrics.csv", index=False)
    histories = read_histories(tmp_path)
    assert [(h.stage, h.fold, h.failed) for h in histories] == [
        ("lc", "fold_0", False),
        ("lc", "fold_1", True),
        ("hc", "fold_0", False),
    ]
    fig = training_figure(histories)
    try:
        (lc_loss, lc_val), (hc_loss, hc_val) = np.asarray(fig.axes).reshape(2, 2)
        stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in hc_val.lines if line.get_marker() == "*"]
        assert stars == [(2, 4.0)]
        assert "failed to learn" in lc_val.get_title() and "failed" not in hc_val.get_title()
        failed = [line for line in lc_val.lines if "failed" in line.get_label()]
        assert len(failed) == 1 and failed[0].get_linestyle() == "--"
        assert len([line for line in lc_loss.lines if line.get_marker() == "*"]) == 2
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# the written report


def _source_commit() -> str | None:
    source = Path(kneel.__file__).resolve().parent
    if shutil.which("git") is None:
        return None
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=source, capture_output=True, check=False
    )
    if tracked.returncode != 0:
        return None
    return subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=source, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_report_is_stamped_and_tables_read_cleanly(tmp_path: Path):
    gt = _gt()
    gt_path = tmp_path / "gt.csv"
    gt.to_csv(gt_path, index=False)
    paths = []
    for name, error in (("model", 0.7), ("baseline", 35.0)):
        paths.append(tmp_path / f"{name}.csv")
        _pred(gt, error).to_csv(paths[-1], index=False)
    report = evaluate(paths, gt_path, out=tmp_path / "out", examples=False, device="cpu")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    stamp = html.split('<p class="stamp">', 1)[1].split("</p>", 1)[0]
    assert f"kneel {kneel.__version__}" in stamp
    assert f"torch {importlib.metadata.version('torch')}" in stamp
    assert "device cpu" in stamp
    assert (
        datetime.date.today().isoformat() in stamp
        or (datetime.date.today() - datetime.timedelta(days=1)).isoformat() in stamp
    )
    commit = _source_commit()
    if commit is not None:
        assert f"git {commit}" in stamp
    else:
        assert "git " not in stamp
    assert report.stamp == stamp.replace("&#x27;", "'")
    assert stamp in (tmp_path / "out" / "summary_short.md").read_text(encoding="utf-8")
    assert not ZERO_CELL.search(html) and 'colspan="4"' in html
    assert "own axis" in html  # the baseline's move to its own panel is stated
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert set(summary["grouping"]) == {"test"} and not summary.duplicated(["set", "subset"]).any()


def test_git_commit_only_for_a_tracked_checkout(tmp_path: Path):
    copy = tmp_path / "site-packages" / "kneel"
    shutil.copytree(Path(kneel.__file__).resolve().parent / "evaluation", copy)
    assert git_commit(copy) is None  # not a repository
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "README").write_text("a project whose venv holds an installed kneel\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    assert git_commit(copy) is None  # inside a repository that does not track it (a venv inside a checkout)
    subprocess.run([*git, "add", "site-packages"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "track it"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
    assert git_commit(copy) == head.stdout.strip()  # tracked: that commit
    (copy / "metrics.py").write_text("# edited\n")
    assert git_commit(copy) == head.stdout.strip() + "+changes"


def test_cv_report_has_cv_grouping_and_training_section(tmp_path: Path):
    gt = _gt(num_images=2)
    stage = tmp_path / "MODEL" / "hc"
    stage.mkdir(parents=True)
    gt.to_csv(stage / "oof_ground_truth.csv", index=False)
    _pred(gt, 1.2).to_csv(stage / "oof_predictions.csv", index=False)
    (stage / "fold_0").mkdir()
    _log([40.0, 39.0, 38.0], [1, 1, 1]).to_csv(stage / "fold_0" / "metrics.csv", index=False)
    reports = evaluate_cv(tmp_path / "MODEL", device="cpu")
    assert set(reports["hc"].summary["grouping"]) == {"cv"}
    html = reports["hc"].html.read_text(encoding="utf-8")
    assert "training_curves.png" in html and "1 of 1 folds failed to learn" in html


def test_cli_grouping_option(tmp_path: Path):
    from kneel.cli import main as cli_main

    gt = _gt(num_images=2)
    gt.to_csv(tmp_path / "gt.csv", index=False)
    _pred(gt, 1.0).to_csv(tmp_path / "pred.csv", index=False)
    args = ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv"), "--no-examples"]
    assert cli_main([*args, "--grouping", "cv", "--out", str(tmp_path / "cv")]) == 0
    assert set(pd.read_csv(tmp_path / "cv" / "summary.csv")["grouping"]) == {"cv"}
