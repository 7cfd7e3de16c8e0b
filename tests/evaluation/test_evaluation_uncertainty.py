"""``kneel evaluate``'s uncertainty section, end to end on files written by kneel predict's own output folder.

Eight knees with known errors and radii (below), written with :class:`kneel.inference.outputs.OutputFolder` as
``kneel predict`` writes them (``results/*.json`` recording the stated coverage, ``landmarks.csv`` rebuilt from
them), evaluated through the Python API and the CLI. The expected figures are counted by hand:

=====  ========================  =====================  =========  ========  ========
knee   errors (mm)               radii (mm)             covered    flagged   far off
=====  ========================  =====================  =========  ========  ========
K0-K4  1.0 each                  1.5 each               16 each    no        no
K5     1.0 each                  0.5, landmark 15: 6.0  1          yes       no
K6     landmark 0: 6.0, else 1   landmark 0: 7.0, else 2  16       yes       yes
K7     landmark 0: 6.0, else 1   1.5 each               15         no        yes
=====  ========================  =====================  =========  ========  ========

Coverage 112 / 128 = 87.5 %; far off 2, flagged 2 (flag radius 5 mm: K5 and K6), recall 1 / 2, precision 1 / 2;
knees flagged ok: K0-K4 (mean error 1.0) and K7 (21 / 16 = 1.3125): 95th percentile 1.0 + 0.75 * 0.3125.
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kneel.cli import main as kneel_main
from kneel.evaluation import evaluate
from kneel.evaluation.matching import match_predictions, read_ground_truth, read_table
from kneel.evaluation.uncertainty import calibration_figure
from kneel.inference.calibration import Calibration
from kneel.inference.outputs import OutputFolder
from kneel.inference.results import KneePrediction, RadiographPrediction
from kneel.landmarks import KneeSide

SPACING = 0.2  # mm per pixel, both axes
ERRORS = np.ones((8, 16))
ERRORS[6:, 0] = 6.0
RADII = np.full((8, 16), 1.5)
RADII[5] = 0.5
RADII[5, 15] = 6.0
RADII[6] = 2.0
RADII[6, 0] = 7.0
EXPECTED = {
    "knees": 8,
    "observed_coverage": 112 / 128,
    "knees_far_off": 2,
    "flagged": 2,
    "flag_recall": 0.5,
    "flag_precision": 0.5,
    "ok_p95_mean_error_mm": 1.0 + 0.75 * 0.3125,
    "median_radius_mm": 1.5,
}
LEVELS = {"0.5": 0.4, "0.6": 0.5, "0.7": 0.6, "0.8": 0.75, "0.9": 1.0, "0.95": 4.5}


def _truth(knee: int) -> np.ndarray:
    """Knee ``knee``'s 16 true landmarks in pixels: a plausible row of points, knees 600 px apart."""
    x0 = 400.0 + 1200.0 * (knee % 2)
    tibia = np.stack([np.linspace(x0 - 200, x0 + 200, 9), np.full(9, 900.0)], axis=1)
    femur = np.stack([np.linspace(x0 - 180, x0 + 180, 7), np.full(7, 830.0)], axis=1)
    return np.concatenate([tibia, femur])


def _write_predictions(out: Path, coverage: float | None, flag_radius: float | None) -> Path:
    """kneel predict's output folder: four films, R and L knees, predictions ERRORS mm to the right of the truth."""
    folder = OutputFolder(out)
    folder.open({"uncertainty": "test"})
    for image in range(4):
        knees = {}
        for side_index, side in enumerate((KneeSide.R, KneeSide.L)):
            k = 2 * image + side_index
            pred = _truth(k) + np.stack([ERRORS[k] / SPACING, np.zeros(16)], axis=1)
            knees[side] = KneePrediction(
                side=side,
                landmarks_px=pred,
                spacing=(SPACING, SPACING),
                uncertainty_mm=RADII[k].copy(),
                centre_px=pred[4],
                lc_centre_px=pred[4],
                uncertainty_coverage=coverage,
                flag_radius_mm=flag_radius,
            )
        folder.write_result(
            RadiographPrediction(
                file=f"scans/img_{image}.dcm",  # the ground truth names the files without the folder
                path=f"/data/scans/img_{image}.dcm",
                shape=(2000, 2400),
                spacing=(SPACING, SPACING),
                spacing_source="test",
                sop_instance_uid=None,
                film="bilateral",
                knees=knees,
            )
        )
    folder.rebuild_landmarks()
    return folder.landmarks_csv


def _write_truth(path: Path) -> Path:
    rows = [
        {"file": f"img_{k // 2}.dcm", "side": "RL"[k % 2], "landmark": j, "x_px": x, "y_px": y, "kl": k % 4}
        for k in range(8)
        for j, (x, y) in enumerate(_truth(k))
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _write_baseline(path: Path) -> Path:
    """A table without uncertainty columns (another tool, a baseline): it gets no uncertainty section."""
    rows = [
        {
            "file": f"img_{k // 2}.dcm",
            "side": "RL"[k % 2],
            "landmark": j,
            "x_px": x + 10,
            "y_px": y,
            "x_mm": (x + 10) * SPACING,
            "y_mm": y * SPACING,
        }
        for k in range(8)
        for j, (x, y) in enumerate(_truth(k))
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _spearman_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks (the definition of Spearman's rho with ties)."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture()
def cohort(tmp_path: Path) -> dict[str, Path]:
    return {
        "pred": _write_predictions(tmp_path / "preds", coverage=0.9, flag_radius=5.0),
        "gt": _write_truth(tmp_path / "ground_truth.csv"),
        "baseline": _write_baseline(tmp_path / "baseline.csv"),
        "out": tmp_path / "eval",
    }


def _embedded_png(html: str, name: str) -> bytes:
    match = re.search(rf'<img alt="{re.escape(name)}" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match, f"{name} not embedded in report.html"
    return base64.b64decode(match.group(1))


def test_evaluate_reports_the_figures_counted_by_hand(cohort: dict[str, Path]) -> None:
    report = evaluate(
        [cohort["pred"], cohort["baseline"]], cohort["gt"], out=cohort["out"], names=["exact", "baseline"]
    )
    assert [u.name for u in report.uncertainty] == ["exact"]  # the baseline has no uncertainty columns
    table = pd.read_csv(cohort["out"] / "uncertainty.csv")
    assert table["set"].tolist() == ["exact"]
    row = table.iloc[0]
    figures = report.uncertainty[0].report.as_dict()
    for key, value in EXPECTED.items():
        assert figures[key] == pytest.approx(value, abs=1e-9), key
        assert row[key] == pytest.approx(value, abs=1e-5), key  # the CSV keeps 6 significant digits
    assert row["stated_coverage"] == pytest.approx(0.9)
    assert row["flag_radius_mm"] == pytest.approx(5.0)
    assert row["coverage_source"].startswith("results/")
    knee_radius, knee_error = RADII.mean(axis=1), ERRORS.mean(axis=1)
    rho_knee, rho_landmark = (
        _spearman_by_hand(knee_radius, knee_error),
        _spearman_by_hand(RADII.ravel(), ERRORS.ravel()),
    )
    assert figures["knee_rank_correlation"] == pytest.approx(rho_knee, abs=1e-9)
    assert figures["landmark_rank_correlation"] == pytest.approx(rho_landmark, abs=1e-9)

    html = report.html.read_text(encoding="utf-8")
    assert "Uncertainty and the quality flag" in html
    assert "87.5 %" in html and "50 % (1 of 2)" in html and "radius at a stated 90% coverage" in html
    png = _embedded_png(html, "calibration_exact.png")
    assert png == (cohort["out"] / "calibration_exact.png").read_bytes()
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[1] > 800 and picture.std() > 10
    assert "calibration_baseline.png" not in html and not (cohort["out"] / "calibration_baseline.png").exists()

    short = report.markdown.read_text(encoding="utf-8")
    assert "## Uncertainty" in short and "87.5 %" in short
    assert "87.5 %" in (cohort["out"] / "uncertainty.md").read_text(encoding="utf-8")
    assert (cohort["out"] / "uncertainty.tex").is_file()


def test_uncalibrated_predictions_say_so(tmp_path: Path) -> None:
    """A model without calibration.json: uncertainty_mm is the fold spread; the flag figures stay, no coverage."""
    pred = _write_predictions(tmp_path / "preds", coverage=None, flag_radius=None)
    report = evaluate(pred, _write_truth(tmp_path / "gt.csv"), out=tmp_path / "eval", examples=False)
    row = pd.read_csv(tmp_path / "eval" / "uncertainty.csv").iloc[0]
    assert math.isnan(row["stated_coverage"])
    assert "not calibrated" in row["coverage_source"]
    assert row["observed_coverage"] == pytest.approx(EXPECTED["observed_coverage"])
    assert row["knees_far_off"] == 2
    html = report.html.read_text(encoding="utf-8")
    assert "no stated coverage" in html


def test_cli_coverage_for_a_table_moved_away_from_its_results(cohort: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "landmarks.csv"
    moved.parent.mkdir()
    moved.write_bytes(cohort["pred"].read_bytes())
    out = tmp_path / "eval_moved"
    assert kneel_main(["evaluate", "--pred", str(moved), "--gt", str(cohort["gt"]), "--out", str(out)]) == 0
    row = pd.read_csv(out / "uncertainty.csv").iloc[0]
    assert math.isnan(row["stated_coverage"]) and "give --coverage" in row["coverage_source"]
    assert row["flag_recall"] == pytest.approx(0.5)

    args = ["evaluate", "--pred", str(moved), "--gt", str(cohort["gt"]), "--out", str(out), "--coverage", "0.8"]
    assert kneel_main(args) == 0
    row = pd.read_csv(out / "uncertainty.csv").iloc[0]
    assert row["stated_coverage"] == pytest.approx(0.8) and row["coverage_source"] == "given"


def test_no_uncertainty_columns_no_section_and_no_stale_files(cohort: dict[str, Path]) -> None:
    evaluate(cohort["pred"], cohort["gt"], out=cohort["out"], examples=False)
    assert (cohort["out"] / "uncertainty.csv").is_file()
    report = evaluate(cohort["baseline"], cohort["gt"], out=cohort["out"], examples=False)
    assert report.uncertainty == []
    assert not (cohort["out"] / "uncertainty.csv").exists()
    assert "Uncertainty and the quality flag" not in report.html.read_text(encoding="utf-8")


def test_calibration_curve_uses_the_stored_multipliers(cohort: dict[str, Path], tmp_path: Path) -> None:
    """With --calibration the left panel is the whole curve: at level c the radii are scaled by
    levels[c] / levels[stated] (0.9 here: multiplier 1.0), and the share inside is counted by hand."""
    model = tmp_path / "model"
    model.mkdir()
    Calibration(
        coverage=0.9,
        signals=["spread"],
        weights=[1.0],
        intercept=0.0,
        offsets=[0.0] * 16,
        multiplier=1.0,
        levels=LEVELS,
    ).save(model)
    report = evaluate(cohort["pred"], cohort["gt"], out=cohort["out"], examples=False, calibration=model)
    assert report.uncertainty[0].stated.levels == LEVELS

    # by hand: scale 0.4 -> radii 0.6 / 0.2 (K5) / 0.8 (K6) / 2.4 (K5 lm 15) / 2.8 (K6 lm 0): none holds a 1 mm error
    # except K5's landmark 15 (2.4): 1 of 128. Scale 0.75: 1.125 holds 1 mm (K0-K4: 80, K7: 15), K5 only lm 15,
    # K6: 1.5 holds its 15 ones, 5.25 misses 6 -> 111. Scale 4.5: every landmark -> 128.
    expected = {0.5: 1, 0.8: 111, 0.9: 112, 0.95: 128}
    pred = read_table(cohort["pred"])
    knees = match_predictions(pred, read_ground_truth(cohort["gt"]), name="exact")
    figure = calibration_figure(knees, pred, LEVELS, 0.9)
    xs, ys = figure.axes[0].lines[0].get_xydata().T
    assert xs.tolist() == sorted(float(k) for k in LEVELS)
    for level, covered in expected.items():
        assert ys[xs.tolist().index(level)] == pytest.approx(covered / 128), level


def test_empty_radii_are_counted_and_warned_about(cohort: dict[str, Path], tmp_path: Path) -> None:
    """A run whose calibration could not be applied leaves uncertainty_mm empty: the section says so."""
    table = pd.read_csv(cohort["pred"], dtype={"file": str})
    table.loc[(table["file"] == "scans/img_3.dcm") & (table["side"] == "L"), "uncertainty_mm"] = np.nan  # K7
    table.to_csv(cohort["pred"], index=False)
    report = evaluate(cohort["pred"], cohort["gt"], out=cohort["out"], examples=False)
    row = pd.read_csv(cohort["out"] / "uncertainty.csv").iloc[0]
    assert row["landmarks_without_radius"] == 16 and row["knees"] == 7
    assert row["knees_far_off"] == 1 and row["flag_recall"] == 1.0  # K6 alone is far off now, and flagged
    assert row["observed_coverage"] == pytest.approx((112 - 15) / 112)
    html = report.html.read_text(encoding="utf-8")
    assert "uncertainty_mm is empty for 16 of 128 predicted landmarks" in html
