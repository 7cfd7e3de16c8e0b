"""``kneel evaluate`` reports measurements from predicted vs true landmarks with hand-computable differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from knee_cases import KNEE_MM, to_film

from kneel.evaluation import evaluate
from kneel.evaluation.measurement_section import format_agreements

SPACING = (0.15, 0.12)  # (row_mm, col_mm): anisotropic on purpose
JSW = [
    "jsw_lateral_15_mm",
    "jsw_lateral_25_mm",
    "jsw_medial_25_mm",
    "jsw_medial_15_mm",
    "min_jsw_lateral_mm",
    "min_jsw_medial_mm",
]


def _table(knee_mm: np.ndarray) -> pd.DataFrame:
    rows = []
    for i, angle in enumerate((0.0, 7.0, -4.0)):
        for side, offset in (("R", (150.0, 180.0)), ("L", (450.0, 190.0))):
            px = to_film(knee_mm, side, SPACING, angle_deg=angle, offset_mm=offset)
            for k, (x, y) in enumerate(px):
                rows.append(
                    {
                        "file": f"film_{i}.dcm",
                        "side": side,
                        "landmark": k,
                        "x_px": x,
                        "y_px": y,
                        "x_mm": x * SPACING[1],
                        "y_mm": y * SPACING[0],
                    }
                )
    return pd.DataFrame(rows)


def test_femur_lifted_by_one_mm_widens_every_joint_space_by_one_mm(tmp_path: Path):
    lifted = KNEE_MM.copy()
    lifted[9:, 1] -= 1.0  # every femoral landmark 1 mm further from the (flat) tibial plateau
    truth, exact, moved = tmp_path / "gt.csv", tmp_path / "same.csv", tmp_path / "lifted.csv"
    _table(KNEE_MM).to_csv(truth, index=False)
    _table(KNEE_MM).to_csv(exact, index=False)
    _table(lifted).to_csv(moved, index=False)

    report = evaluate([exact, moved], truth, out=tmp_path / "out", examples=False)

    table = pd.read_csv(tmp_path / "out" / "measurements_agreement.csv").set_index(["set", "measurement"])
    assert (tmp_path / "out" / "bland_altman_lifted.png").is_file()
    for name in JSW:
        assert table.loc[("same", name), "mad"] == pytest.approx(0.0, abs=1e-9)
        assert table.loc[("lifted", name), "n"] == 6
        assert table.loc[("lifted", name), "bias"] == pytest.approx(1.0, abs=1e-9), name
        assert table.loc[("lifted", name), "mad"] == pytest.approx(1.0, abs=1e-9), name
        assert table.loc[("lifted", name), "sd"] == pytest.approx(0.0, abs=1e-9), name
    for name in ("tibial_plateau_width_mm", "femoral_condyle_width_mm", "plateau_obliquity_deg"):
        assert table.loc[("lifted", name), "mad"] == pytest.approx(0.0, abs=1e-9), name
    assert [a.name for a in report.agreements] == ["same", "lifted"]
    shown = format_agreements(report.agreements).set_index("Measurement")
    assert list(shown.columns) == ["same: mean abs. diff.", "same: 95 % limits", "lifted: mean abs. diff.",
                                   "lifted: 95 % limits"]  # fmt: skip
    assert shown.loc["min_jsw_medial_mm (mm)", "lifted: mean abs. diff."] == "1.00"
    assert shown.loc["min_jsw_medial_mm (mm)", "lifted: 95 % limits"] == "1.00 to 1.00"
    assert shown.loc["tibial_plateau_width_mm (mm)", "lifted: mean abs. diff."] == "0.00"
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Measurements: predicted vs true landmarks" in html

    evaluate([moved], truth, out=tmp_path / "out", examples=False, measurements=False)
    assert not (tmp_path / "out" / "measurements_agreement.csv").exists()  # no stale table from the last run
