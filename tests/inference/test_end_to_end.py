"""End to end on synthetic DICOM films with exact ground truth, with trained tiny models (``configs/tiny_*.yaml``).

Trained weights are not part of the repository: the test uses the models that the default demo trains (the
``full_demo`` session fixture, shared with ``tests/test_demo_full.py``), or ``KNEEL_TINY_MODEL`` when it points at a
model directory trained with ``configs/tiny_lc.yaml`` and ``configs/tiny_hc.yaml``.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kneel.inference import predict_files

MEDIAN_ERROR_MM = 3.0
"""Tiny models work at ~1.05 mm/px (high-cost) and ~3.5 mm/px (low-cost). Measured with the default demo's 2-fold
tiny models (6/20 epochs on 400 films): 1.35 mm median on its 12 held-out films; an untrained model is off by
30-130 mm."""


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_synthetic_cohort_end_to_end(tmp_path, request):
    model = os.environ.get("KNEEL_TINY_MODEL")
    if not model or not (Path(model) / "hc").is_dir():
        model = str(request.getfixturevalue("full_demo").report_html.parent / "model")
    synth = pytest.importorskip("kneel.synth")
    cohort = tmp_path / "cohort"
    synth.generate_cohort(cohort, n=6, seed=11, layout="flat", split="test", single_knee_fraction=0.2, workers=1,
                          progress=False)  # fmt: skip
    summary = predict_files([cohort], model, tmp_path / "out", workers=1, progress=False)
    assert summary.failed == 0 and summary.done == 6
    truth = pd.read_csv(cohort / "ground_truth.csv", dtype={"file": str})
    pred = pd.read_csv(tmp_path / "out" / "landmarks.csv", dtype={"file": str})
    knees_true = set(map(tuple, truth[["file", "side"]].drop_duplicates().to_numpy()))
    knees_pred = set(map(tuple, pred[["file", "side"]].drop_duplicates().to_numpy()))
    assert knees_pred == knees_true  # the keys match the generator's, every knee present is found, no phantom knee
    joined = truth.merge(pred, on=["file", "side", "landmark"], suffixes=("_true", ""))
    films = pd.read_csv(cohort / "films.csv", dtype={"file": str}).set_index("file")
    col_mm = films.loc[joined["file"], "spacing_col_mm"].to_numpy()
    row_mm = films.loc[joined["file"], "spacing_row_mm"].to_numpy()
    err_mm = np.hypot((joined.x_px - joined.x_px_true) * col_mm, (joined.y_px - joined.y_px_true) * row_mm)
    assert float(np.median(err_mm)) < MEDIAN_ERROR_MM, np.median(err_mm)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kneel_calibrate_then_predict_carries_the_calibrated_radius(tmp_path, request):
    """``kneel calibrate`` on fresh annotated films writes ``calibration.json``; ``kneel predict`` then reports the
    radius it defines (recomputed here from the knee's own signals), its coverage and the quality it implies."""
    import json
    import shutil

    from kneel.cli import main as kneel_main
    from kneel.inference.calibration import Calibration

    source = os.environ.get("KNEEL_TINY_MODEL")
    if not source or not (Path(source) / "hc").is_dir():
        source = str(request.getfixturevalue("full_demo").report_html.parent / "model")
    model = tmp_path / "model"
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("calibration*", "tensorboard", "*.pt"))
    synth = pytest.importorskip("kneel.synth")
    films = tmp_path / "films"
    synth.generate_cohort(films, n=8, seed=31, layout="flat", split="test", workers=1, progress=False)
    gt = films / "ground_truth.csv"
    args = ["calibrate", str(films), "--model", str(model), "--gt", str(gt), "--no-progress", "--coverage", "0.8"]
    assert kneel_main(args) == 0
    calibration = Calibration.load(model)
    assert calibration.coverage == 0.8 and calibration.n_knees >= 12 and calibration.multiplier > 0

    test = tmp_path / "test"
    synth.generate_cohort(test, n=3, seed=32, layout="flat", split="test", workers=1, progress=False)
    predict_files([test], model, tmp_path / "out", workers=0, progress=False)
    pred = pd.read_csv(tmp_path / "out" / "landmarks.csv", dtype={"file": str})
    results = sorted((tmp_path / "out" / "results").glob("*.json"))
    assert results and len(pred)
    for path in results:
        data = json.loads(path.read_text())
        assert data["settings"]["uncertainty"] == "calibrated radius at 0.8 coverage"
        for side, knee in data["knees"].items():
            assert knee["uncertainty_coverage"] == 0.8 and knee["flag_radius_mm"] == calibration.flag_radius_mm
            signals = {k: np.asarray(v, dtype=float) for k, v in knee["signals"].items()}
            radius = calibration.radius_mm(signals)
            np.testing.assert_allclose(knee["uncertainty_mm"], radius, rtol=1e-6)
            rows = pred[(pred.file == data["file"]) & (pred.side == side)].sort_values("landmark")
            np.testing.assert_allclose(rows.uncertainty_mm.to_numpy(), radius, rtol=1e-5)
            # the flag: the knee's estimated chance of a landmark >= flag_radius_mm off, against 1 - coverage
            far = float(calibration.far_probability(signals))
            assert knee["far_probability"] == pytest.approx(far) and knee["flag_probability"] == pytest.approx(0.2)
            review = radius.max() > calibration.review_radius_mm  # the least certain 20 % of calibration knees
            expected = "uncertain" if far > 0.2 or review else "ok"
            assert set(rows.quality) == {expected} and knee["quality"] == expected
