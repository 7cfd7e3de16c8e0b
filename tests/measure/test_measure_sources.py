"""Where landmarks and spacing come from (tables, prediction folders), the files ``kneel measure`` writes, and the
agreement statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from knee_cases import EXPECTED, KNEE_MM, to_film

from kneel.cli import main
from kneel.inference.outputs import OutputFolder
from kneel.inference.results import KneePrediction, RadiographPrediction
from kneel.landmarks import KneeSide
from kneel.measure import MEASUREMENT_NAMES, agreement, load_knees, measure

SPACING = (0.12, 0.16)


def _rows(file: str, side: str, spacing=SPACING, **extra) -> list[dict]:
    px = to_film(KNEE_MM, side, spacing, angle_deg=0.0)
    return [{"file": file, "side": side, "landmark": k, "x_px": x, "y_px": y, **extra} for k, (x, y) in enumerate(px)]


def _check(row: pd.Series) -> None:
    for name in MEASUREMENT_NAMES:
        assert row[name] == pytest.approx(EXPECTED[name], abs=1e-9), name


def test_table_spacing_sources_in_order(tmp_path):
    rows = _rows("a.dcm", "R", row_mm=SPACING[0], col_mm=SPACING[1])  # spacing columns
    mm = pd.DataFrame(_rows("b.dcm", "L"))
    mm["x_mm"], mm["y_mm"] = mm["x_px"] * SPACING[1], mm["y_px"] * SPACING[0]  # like kneel predict's table
    rows += mm.to_dict("records")
    rows += _rows("c.dcm", "R", spacing=(0.2, 0.2))  # nothing: --spacing
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    table = measure(tmp_path / "t.csv", spacing=0.2).set_index("file")
    assert table.at["a.dcm", "spacing_source"] == "table row_mm,col_mm"
    assert table.at["b.dcm", "spacing_source"] == "table x_mm/x_px"
    assert table.at["c.dcm", "spacing_source"] == "--spacing"
    for file in ("a.dcm", "b.dcm", "c.dcm"):
        _check(table.loc[file])
    # Without --spacing the last knee is reported, not fatal.
    table = measure(tmp_path / "t.csv").set_index("file")
    assert "no other pixel spacing" in table.at["c.dcm", "status"]
    assert np.isnan(table.at["c.dcm", "min_jsw_medial_mm"])
    _check(table.loc["a.dcm"])


def _prediction(file: str, sides=("R", "L"), radius: float = 1.0) -> RadiographPrediction:
    knees = {}
    for side in sides:
        px = to_film(KNEE_MM, side, SPACING, offset_mm=(100.0 if side == "R" else 300.0, 150.0))
        knees[KneeSide(side)] = KneePrediction(
            side=KneeSide(side),
            landmarks_px=px,
            spacing=SPACING,
            uncertainty_mm=np.full(16, radius),
            centre_px=px[4],
            lc_centre_px=px[4],
        )
    return RadiographPrediction(file, file, (3000, 2600), SPACING, "ImagerPixelSpacing", None, "bilateral", knees)


def test_predictions_folder_with_a_broken_result(tmp_path):
    folder = OutputFolder(tmp_path / "pred")
    folder.open({"test": 1})
    folder.write_result(_prediction("x/one.dcm"))
    folder.write_result(_prediction("two.dcm", sides=("L",), radius=2.0))
    (folder.results / "broken.json").write_text("{not json", encoding="utf-8")
    table = measure(tmp_path / "pred", samples=300)
    assert len(table) == 4
    broken = table[table["status"] != "ok"]
    assert len(broken) == 1 and "unreadable prediction JSON" in broken["status"].iloc[0]
    good = table[table["status"] == "ok"]
    assert (good["spacing_source"] == "prediction JSON").all()
    assert (good["coverage"] == 0.9).all()
    for _, row in good.iterrows():
        _check(row)
    # Twice the landmark radius gives twice the half-width (same draws; the width is linear up to its curvature).
    one = good[(good["file"] == "x/one.dcm") & (good["side"] == "L")].iloc[0]
    two = good[good["file"] == "two.dcm"].iloc[0]
    assert two["tibial_plateau_width_mm_uncertainty"] == pytest.approx(
        2 * one["tibial_plateau_width_mm_uncertainty"], rel=1e-3
    )
    # The folder's landmarks.csv (6 decimals, spacing from x_mm/x_px) gives the same numbers within rounding.
    from_csv = measure(tmp_path / "pred" / "landmarks.csv", samples=300)
    merged = from_csv.merge(good, on=["file", "side"], suffixes=("", "_json"))
    assert len(merged) == 3
    for name in MEASUREMENT_NAMES:
        assert np.allclose(merged[name], merged[f"{name}_json"], atol=1e-4), name


def test_stated_coverage_is_read_and_can_be_overridden(tmp_path):
    rows = pd.DataFrame(_rows("a.dcm", "R", row_mm=SPACING[0], col_mm=SPACING[1]))
    rows["uncertainty_mm"] = 1.0
    rows["uncertainty_coverage"] = 0.5
    rows.to_csv(tmp_path / "t.csv", index=False)
    stated = measure(tmp_path / "t.csv", samples=2000).iloc[0]
    assert stated["coverage"] == 0.5
    # Same radius, higher coverage: the landmarks are *more* precise (sigma = r / 2.15 instead of r / 1.18), and
    # the half-width at 90 % of a linear measure is then 1.645 sd instead of 0.674 sd: ratio (1.645 / 2.146) /
    # (0.674 / 1.177) = 1.339.
    override = measure(tmp_path / "t.csv", coverage=0.9, samples=2000).iloc[0]
    assert override["coverage"] == 0.9
    ratio = override["tibial_plateau_width_mm_uncertainty"] / stated["tibial_plateau_width_mm_uncertainty"]
    assert ratio == pytest.approx((1.6448536 / 2.1459660) / (0.6744898 / 1.1774100), rel=0.06)


def test_cli_measure_with_truth_writes_tables_json_and_agreement(tmp_path, capsys):
    truth = pd.DataFrame(_rows("a.dcm", "R") + _rows("b.dcm", "L"))
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pred = truth.copy()
    pred.loc[(pred["landmark"] == 8) & (pred["side"] == "R"), "x_px"] += 2.0 / SPACING[1]  # 2 mm medially
    pred["uncertainty_mm"] = 1.0
    pred.to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "out"
    code = main(["measure", str(tmp_path / "pred.csv"), "--truth", str(tmp_path / "truth.csv"), "--spacing",
                 "0.12,0.16", "--samples", "200", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "2 of 2 knees measured" in capsys.readouterr().out
    table = pd.read_csv(out / "measurements.csv")
    assert list(table["status"]) == ["ok", "ok"]
    body = json.loads((out / "measurements.json").read_text())
    assert body["uncertainty"]["method"] == "monte-carlo"
    assert set(body["knees"][0]["measurements"]) == set(MEASUREMENT_NAMES)
    stats = pd.read_csv(out / "agreement.csv").set_index("measurement")
    # T8 moved 2 mm medially on the right knee only (along the plateau): the plateau width grows by 2 mm there.
    assert stats.at["tibial_plateau_width_mm", "bias"] == pytest.approx(1.0)
    assert stats.at["tibial_plateau_width_mm", "mad"] == pytest.approx(1.0)
    assert stats.at["femoral_condyle_width_mm", "mad"] == pytest.approx(0.0, abs=1e-9)
    assert (out / "bland_altman.png").stat().st_size > 10_000
    assert "tibial_plateau_width_mm" in (out / "agreement.md").read_text()


def test_agreement_statistics_and_pairing_by_stem():
    names = ["tibial_plateau_width_mm"]
    reference = pd.DataFrame({"file": ["d/a.dcm", "d/b.dcm", "d/c.dcm"], "side": ["R", "L", "R"]})
    reference["tibial_plateau_width_mm"] = [80.0, 75.0, 70.0]
    measured = pd.DataFrame({"file": ["a", "b", "c"], "side": ["R", "L", "R"]})
    measured["tibial_plateau_width_mm"] = [81.0, 74.0, 73.0]
    measured["tibial_plateau_width_mm_uncertainty"] = [1.5, 0.5, 2.0]
    measured["coverage"] = 0.9
    row = agreement(measured, reference, names).iloc[0]
    diffs = np.array([1.0, -1.0, 3.0])
    assert row["n"] == 3
    assert row["bias"] == pytest.approx(diffs.mean())
    assert row["mad"] == pytest.approx(np.abs(diffs).mean())
    assert row["sd"] == pytest.approx(diffs.std(ddof=1))
    assert row["loa_high"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1))
    assert row["within_uncertainty"] == pytest.approx(1 / 3)  # only |1| <= 1.5
    assert row["coverage"] == 0.9


def test_load_knees_keeps_missing_landmarks_as_nan(tmp_path):
    rows = [r for r in _rows("a.dcm", "R", row_mm=0.1, col_mm=0.1) if r["landmark"] != 5]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    knees = load_knees(tmp_path / "t.csv")
    assert np.isnan(knees.points_px[0, 5]).all() and np.isfinite(knees.points_px[0, 4]).all()
    table = measure(tmp_path / "t.csv")
    assert table["status"].iloc[0] == "1 landmark(s) missing"


def test_measure_prediction_for_the_service():
    from kneel.measure import measure_prediction

    out = measure_prediction(_prediction("one.dcm", radius=1.0), samples=300)
    assert set(out) == {"R", "L"}
    for side in ("R", "L"):
        for name in MEASUREMENT_NAMES:
            assert out[side][name]["value"] == pytest.approx(EXPECTED[name], abs=1e-9)
            assert out[side][name]["uncertainty"] > 0
    json.dumps(out, allow_nan=False)  # the response body must be valid JSON
    assert measure_prediction(_prediction("none.dcm", sides=())) == {}


def test_duplicate_rows_and_a_missing_source_are_one_line_errors(tmp_path):
    from kneel.measure import MeasureInputError

    rows = _rows("a.dcm", "R", row_mm=0.1, col_mm=0.1)
    pd.DataFrame(rows + rows[3:4]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(MeasureInputError, match="1 duplicate file,side,landmark rows"):
        measure(tmp_path / "t.csv")
    with pytest.raises(MeasureInputError, match="not found"):
        measure(tmp_path / "nothing.csv")


def test_cli_truth_without_spacing_takes_each_films_spacing_from_the_predictions(tmp_path, capsys):
    """A bare ground-truth table (file, side, landmark, x_px, y_px: what the synthetic cohorts and the published
    annotations give) measured against predictions that know each film's spacing: the same films, the same spacing.
    The two films have different spacings, so one shared value could not give zero bias on both."""
    other = (0.2, 0.1)
    truth = pd.DataFrame(_rows("d/a.dcm", "R") + _rows("d/b.dcm", "L", spacing=other))
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pred = truth.copy()
    pred["file"] = pred["file"].str.removeprefix("d/")
    pred["row_mm"] = np.where(pred["file"] == "a.dcm", SPACING[0], other[0])
    pred["col_mm"] = np.where(pred["file"] == "a.dcm", SPACING[1], other[1])
    pred.to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "out"
    code = main(["measure", str(tmp_path / "pred.csv"), "--truth", str(tmp_path / "truth.csv"), "--samples", "0",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    stats = pd.read_csv(out / "agreement.csv").set_index("measurement")
    assert (stats["n"] == 2).all()
    assert stats.at["tibial_plateau_width_mm", "reference_mean"] == pytest.approx(EXPECTED["tibial_plateau_width_mm"])
    assert stats["mad"].abs().max() == pytest.approx(0.0, abs=1e-9)
    # without any spacing for the truth (the predictions have none either): a clear error, not an empty table
    pred.drop(columns=["row_mm", "col_mm"]).to_csv(tmp_path / "bare.csv", index=False)
    with pytest.raises(SystemExit, match="ground truth .* could be measured .*--images or --spacing"):
        main(["measure", str(tmp_path / "bare.csv"), "--truth", str(tmp_path / "truth.csv"), "--samples", "0",
              "--out", str(tmp_path / "out2")])  # fmt: skip
