"""The cohort breakdown script groups knees by the right film attributes and computes each level's mean by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("breakdown", ROOT / "benchmarks" / "breakdown.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_knees_get_their_films_attributes():
    bd = _script()
    films = pd.DataFrame(
        {
            "file": ["a.dcm", "b.dcm", "c.dcm"],
            "sides": ["RL", "R", "L"],
            "implants": [np.nan, np.nan, "R"],
            "spacing_row_mm": [0.1, 0.15, 0.2],
            "photometric": ["MONOCHROME2", "MONOCHROME1", "MONOCHROME2"],
            "compression": ["none", "rle", "jpeg2000"],
            "modality": ["DX", "CR", "DX"],
            "response": ["log", "film", "log"],
        }
    )
    knees = bd.knee_attributes(films)
    assert list(zip(knees["file"], knees["side"], strict=True)) == [
        ("a.dcm", "R"),
        ("a.dcm", "L"),
        ("b.dcm", "R"),
        ("c.dcm", "L"),
    ]
    assert list(knees["film"]) == ["bilateral", "bilateral", "single knee", "implant on the other knee"]
    assert list(knees["spacing"]) == ["0.10-0.12 mm", "0.10-0.12 mm", "0.15-0.16 mm", "0.17-0.20 mm"]


def test_levels_means_ratios_and_missed_knees():
    bd = _script()
    knees = pd.DataFrame({"kl": ["KL0", "KL0", "KL4", "KL4"]})
    errors = np.full((4, 16), np.nan)
    errors[0] = 1.0
    errors[1] = 2.0
    errors[2] = 6.0
    # knee 3 was missed: all NaN
    table = bd.breakdown(knees, errors, ["kl"]).set_index("level")
    assert table.loc["all", "mean_mm"] == 3.0  # (16 + 32 + 96) / 48
    assert table.loc["KL0", "mean_mm"] == 1.5 and table.loc["KL0", "ratio"] == 0.5
    assert table.loc["KL4", "mean_mm"] == 6.0 and table.loc["KL4", "ratio"] == 2.0
    assert table.loc["KL4", "missed"] == 1 and table.loc["KL4", "knees"] == 2
    text = bd.markdown(table.reset_index(), "t")
    assert "over 2x" not in text  # exactly 2x is within the bar
    errors[2] = 6.5
    assert "over 2x" in bd.markdown(bd.breakdown(knees, errors, ["kl"]), "t")
