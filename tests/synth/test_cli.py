"""``kneel synth``: parses its options, calls generate_cohort, reports errors as one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kneel.cli import main


def test_synth_command(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cohort"
    args = ["synth", "--out", str(out), "--n", "1", "--seed", "4", "--layout", "flat", "--split", "test"]
    assert main([*args, "--workers", "1", "--no-progress", "--single-knee-fraction", "0"]) == 0
    assert "1 films, 2 knees" in capsys.readouterr().out
    films = pd.read_csv(out / "films.csv")
    assert (out / films.file[0]).is_file() and films.file[0].endswith(".dcm")
    assert str(films.subject_id[0]).startswith("98")  # the test split's id range


def test_synth_command_error_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path), "--n", "1", "--single-knee-fraction", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kneel synth: error:") and "\n" not in err
