"""End-to-end evaluation on small hand-made tables: matching, missing rows, tables, pictures and the report."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kneel.cli import main as cli_main
from kneel.evaluation import evaluate, evaluate_cv
from kneel.evaluation.matching import EvaluationInputError, match_predictions, read_table
from kneel.evaluation.tables import summary_table

SPACING = 0.2  # mm per pixel


def _gt(num_images: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        for side, cx in (("R", 300.0), ("L", 900.0)):
            base = np.stack([np.linspace(cx - 200, cx + 200, 16), np.full(16, 400.0)], axis=1)
            base += rng.normal(0, 5, base.shape)
            for k, (x, y) in enumerate(base):
                rows.append({"file": f"img_{i}.png", "side": side, "landmark": k, "x_px": x, "y_px": y, "kl": i % 4})
    return pd.DataFrame(rows)


def _pred(gt: pd.DataFrame, offset_px: float, with_mm: bool = True) -> pd.DataFrame:
    pred = gt.drop(columns=["kl"]).copy()
    pred["x_px"] = pred["x_px"] + offset_px
    if with_mm:
        pred["x_mm"] = pred["x_px"] * SPACING
        pred["y_mm"] = pred["y_px"] * SPACING
    return pred


def test_matching_reports_missing_and_uses_mm_ratio():
    gt = _gt(2)
    pred = _pred(gt, offset_px=5.0)  # 5 px * 0.2 mm = 1 mm everywhere
    pred = pred[~((pred["file"] == "img_1.png") & (pred["side"] == "L") & (pred["landmark"] == 3))]
    pred.loc[:, "file"] = "/some/where/" + pred["file"]  # absolute paths still pair by base name
    knees = match_predictions(pred, gt, name="p")
    assert knees.num_knees == 4
    assert list(knees.missing[["file", "side", "landmark"]].itertuples(index=False, name=None)) == [
        ("img_1.png", "L", 3)
    ]
    finite = knees.errors[~np.isnan(knees.errors)]
    assert finite.size == 4 * 16 - 1
    assert np.allclose(finite, 1.0)
    assert set(knees.spacing_source) == {"prediction x_mm/x_px"}
    assert knees.kl.tolist() == [0, 0, 1, 1]


def test_matching_never_merges_files_with_the_same_base_name():
    gt = _gt(1)
    gt = pd.concat([gt.assign(file="A/001"), gt.assign(file="B/001", x_px=gt["x_px"] + 50)], ignore_index=True)
    pred = _pred(gt, 0.0)  # exact paths: zero error; pairing by base name would mix A and B
    knees = match_predictions(pred, gt)
    assert knees.num_knees == 4 and np.allclose(knees.errors, 0.0)


def test_matching_without_spacing_fails_loudly():
    gt = _gt(1)
    with pytest.raises(EvaluationInputError, match="no pixel spacing"):
        match_predictions(_pred(gt, 1.0, with_mm=False), gt)
    knees = match_predictions(_pred(gt, 1.0, with_mm=False), gt, default_spacing=0.5)
    assert np.allclose(knees.errors, 0.5)


def test_summary_rows_for_kl_subsets():
    gt = _gt(4)
    knees = match_predictions(_pred(gt, 10.0), gt, name="p")  # 2 mm everywhere
    table = summary_table([knees], (1.0, 2.0), grouping="cv")
    assert set(table["subset"]) == {"all", "KL0", "KL1", "KL2", "KL3", "no-OA (KL<2)", "OA (KL>=2)"}
    assert set(table["grouping"]) == {"cv"}  # one grouping per table: no duplicated rows
    assert not table.duplicated(["set", "subset"]).any()
    assert set(summary_table([knees], (1.0, 2.0))["grouping"]) == {"test"}
    row = table[table["subset"] == "all"].iloc[0]
    assert row["knees"] == 8
    assert row["recall_1mm_mean"] == 0.0 and row["recall_2mm_mean"] == pytest.approx(100.0)
    assert row["out_pct"] == 0.0 and row["mean_mm"] == pytest.approx(2.0)


def test_evaluate_writes_tables_curves_examples_and_report(tmp_path: Path):
    gt = _gt(3)
    gt_path, a_path, b_path = tmp_path / "gt.csv", tmp_path / "good.csv", tmp_path / "bad.csv"
    gt.to_csv(gt_path, index=False)
    good = _pred(gt, 2.0)
    good = good[~((good["file"] == "img_2.png") & (good["side"] == "R"))]  # a whole knee missing
    good.to_csv(a_path, index=False)
    bad = _pred(gt, 60.0)  # 12 mm: every knee is an outlier
    bad.to_csv(b_path, index=False)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        img = np.zeros((800, 1200), np.uint8)
        cv2.circle(img, (300, 400), 150, 200, -1)
        cv2.circle(img, (900, 400), 150, 200, -1)
        cv2.imwrite(str(images / f"img_{i}.png"), img)

    report = evaluate([a_path, b_path], gt_path, out=tmp_path / "out", images=images, thresholds="0.5,1")
    out = tmp_path / "out"
    for name in (
        "summary.csv",
        "summary.md",
        "summary.tex",
        "landmarks.csv",
        "landmarks.md",
        "landmarks.tex",
        "cumulative.png",
        "cumulative.svg",
        "landmark_boxes.png",
        "examples_good.png",
        "examples_bad.png",
        "missing_good.csv",
        "errors_good.csv",
        "report.html",
        "summary_short.md",
    ):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "missing_good.csv")) == 16
    good_head, bad_head = report.headline("good"), report.headline("bad")
    assert good_head["knees"] == 6 and good_head["knees_missing"] == 1 and good_head["mean_mm"] == pytest.approx(0.4)
    assert "'knees': 6, 'knees_missing': 1," in repr(good_head)  # counts print as counts, not 6.0
    assert good_head["recall_0.5mm"] == pytest.approx(100.0)
    assert bad_head["out_pct"] == pytest.approx(100.0) and bad_head["recall_1mm"] == 0.0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "Missing predictions" in html
    assert r"\pm" in (out / "summary.tex").read_text()


def test_evaluate_cli_and_cv(tmp_path: Path, capsys):
    gt = _gt(2)
    stage = tmp_path / "MODEL" / "hc"
    stage.mkdir(parents=True)
    gt_mm = gt.copy()
    gt_mm["x_mm"], gt_mm["y_mm"] = gt["x_px"] * 0.3, gt["y_px"] * 0.3
    gt_mm.to_csv(stage / "oof_ground_truth.csv", index=False)
    pred = _pred(gt, 1.0, with_mm=False)
    pred["x_mm"], pred["y_mm"] = pred["x_px"] * 0.3, pred["y_px"] * 0.3
    pred.to_csv(stage / "oof_predictions.csv", index=False)
    reports = evaluate_cv(tmp_path / "MODEL")
    assert list(reports) == ["hc"]
    assert reports["hc"].headline()["mean_mm"] == pytest.approx(0.3)
    assert (tmp_path / "MODEL" / "evaluation" / "hc" / "report.html").is_file()

    rc = cli_main(
        [
            "evaluate",
            "--pred",
            str(stage / "oof_predictions.csv"),
            "--gt",
            str(stage / "oof_ground_truth.csv"),
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert rc == 0
    assert "report.html" in capsys.readouterr().out
    assert read_table(stage / "oof_predictions.csv").shape[0] == 64
    rc = cli_main(
        [
            "evaluate",
            "--pred",
            str(tmp_path / "nope.csv"),
            "--gt",
            str(stage / "oof_ground_truth.csv"),
            "--out",
            str(tmp_path / "cli2"),
        ]
    )
    assert rc == 1


def test_kl_table_overrides_ground_truth_grades(tmp_path: Path):
    gt = _gt(2)
    gt_path, pred_path, kl_path = tmp_path / "gt.csv", tmp_path / "pred.csv", tmp_path / "kl.csv"
    gt.drop(columns=["kl"]).to_csv(gt_path, index=False)
    _pred(gt, 5.0).to_csv(pred_path, index=False)
    pd.DataFrame({"file": ["img_0.png", "img_0.png", "img_1.png"], "side": ["R", "L", "R"], "kl": [3, 4, 1]}).to_csv(
        kl_path, index=False
    )
    report = evaluate(pred_path, gt_path, out=tmp_path / "out", kl=kl_path, examples=False)
    knees = report.sets[0]
    assert np.array_equal(knees.kl, [3, 4, 1, np.nan], equal_nan=True)
    subsets = set(report.summary["subset"])
    assert {"KL3", "KL4", "no-OA (KL<2)", "OA (KL>=2)"} <= subsets
    assert "KL1" not in subsets  # the only no-OA knee: its row would repeat the no-OA row
    oa = report.summary[report.summary["subset"] == "OA (KL>=2)"].iloc[0]
    assert oa["knees"] == 2
