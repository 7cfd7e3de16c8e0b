"""The batch engine and odd inputs: implausible films, files that are not files, skipped files, stable keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inference_helpers import knee_film, write_dicom

from kneel.inference import predict_files

KNEEL = [sys.executable, "-m", "kneel"]


def _result_keys(out: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["file"] for p in (out / "results").glob("*.json"))


@pytest.fixture(scope="module")
def odd_films(tmp_path_factory) -> Path:
    """One good film and six that no knee can be found in (each a different sanity limit)."""
    root = tmp_path_factory.mktemp("odd")
    write_dicom(root / "good.dcm", knee_film())
    write_dicom(root / "one_pixel.dcm", np.full((1, 1), 1000, np.uint16))
    write_dicom(root / "line.dcm", (np.arange(5000, dtype=np.uint16) % 4000)[None, :], spacing=(0.1, 0.1))
    write_dicom(root / "zeros.dcm", np.zeros((840, 800), np.uint16))
    write_dicom(root / "slope0.dcm", knee_film(), extra={"RescaleSlope": "0", "RescaleIntercept": "100"})
    write_dicom(root / "tiny_spacing.dcm", knee_film(), spacing=(1e-6, 1e-6))
    write_dicom(root / "huge_spacing.dcm", knee_film(), spacing=(1e30, 1e30))
    return root


def test_implausible_films_fail_alone_with_the_reason(model_dir, odd_films, tmp_path):
    out = tmp_path / "out"
    summary = predict_files([odd_films], model_dir, out, workers=0, overlays=True, progress=False)
    assert (summary.found, summary.done, summary.failed) == (7, 1, 6)
    reasons = dict(pd.read_csv(out / "errors.csv").itertuples(index=False))
    assert set(reasons) == {"one_pixel.dcm", "line.dcm", "zeros.dcm", "slope0.dcm", "tiny_spacing.dcm",
                            "huge_spacing.dcm"}  # fmt: skip
    assert "too small: 1 x 1 pixels" in reasons["one_pixel.dcm"]
    assert "too small: 1 x 5000 pixels" in reasons["line.dcm"]
    assert "blank image" in reasons["zeros.dcm"] and "blank image" in reasons["slope0.dcm"]
    assert "1e-06 mm per pixel is implausibly small" in reasons["tiny_spacing.dcm"]
    assert "1e+30 mm per pixel is implausibly large" in reasons["huge_spacing.dcm"]
    assert _result_keys(out) == ["good.dcm"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_never_hang_a_run(model_dir, films, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.dcm").write_bytes(films["bilateral"].read_bytes())
    os.mkfifo(src / "pipe.dcm")
    (src / "zero.dcm").symlink_to("/dev/zero")
    fifo_by_name = tmp_path / "named_pipe"
    os.mkfifo(fifo_by_name)
    out = tmp_path / "out"
    cmd = [*KNEEL, "predict", str(src), str(fifo_by_name), "--model", str(model_dir), "--out", str(out),
           "--workers", "0", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    # the FIFO named on the command line is an input that fails; the two found in the folder are skipped
    assert done.returncode == 1, done.stderr
    assert "1 predicted, 0 already done, 1 failed of 2" in done.stdout
    assert f"skipped {src / 'pipe.dcm'}: not a regular file (a FIFO)" in done.stderr
    assert f"skipped {src / 'zero.dcm'}: not a regular file (a character device)" in done.stderr
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors["reason"]) == ["not a regular file (a FIFO)"]


def test_keys_stay_stable_when_a_resume_adds_a_folder(model_dir, films, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    for folder in (a, b):
        folder.mkdir()
        (folder / "x.dcm").write_bytes(films["bilateral"].read_bytes())  # the same name in both folders
    out = tmp_path / "out"
    first = predict_files([a], model_dir, out, workers=0, progress=False)
    assert first.done == 1
    second = predict_files([a, b], model_dir, out, workers=0, progress=False)
    # A/x.dcm keeps its key "x.dcm" (not "A/x.dcm"): it is not predicted again, and B's file gets its own key
    assert (second.found, second.skipped, second.done) == (2, 1, 1)
    assert _result_keys(out) == sorted(["x.dcm", str(b / "x.dcm")])


def test_folders_without_radiographs_fail_and_name_what_they_skipped(model_dir, tmp_path, capsys):
    from kneel.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--model", str(model_dir), "--out", str(tmp_path / "o1")]) == 1
    assert "no radiograph in the inputs (the folders are empty)" in capsys.readouterr().err
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for name in ("a.png", "b.png", "...dcm"):
        (pngs / name).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert main(["predict", str(pngs), "--model", str(model_dir), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert f"skipped {pngs / 'a.png'}: PNG image: no pixel spacing (pass --spacing MM)" in err
    assert f"skipped {pngs / '...dcm'}: hidden file" in err
    assert "no radiograph in the inputs: 3 files skipped (2 x PNG image" in err


def test_spreadsheet_formulas_are_neutralised_in_csv_outputs(tmp_path):
    from kneel.inference.outputs import OutputFolder
    from kneel.inference.results import KneePrediction, RadiographPrediction
    from kneel.io.landmark_table import read_landmark_table
    from kneel.landmarks import KneeSide

    folder = OutputFolder(tmp_path / "out")
    folder.open({})
    knee = KneePrediction(KneeSide.R, np.full((16, 2), -3.0), (0.1, 0.1), np.zeros(16), np.ones(2), np.ones(2))
    # a file name and a DICOM string (SOPInstanceUID) that a spreadsheet would run as formulas
    folder.write_result(RadiographPrediction("=HYPERLINK(1).dcm", "x", (100, 100), (0.1, 0.1), "override",
                                             "@SUM(1+1)", "bilateral", knees={KneeSide.R: knee}))  # fmt: skip
    folder.write_failure("-2+3.dcm", "y", "+cmd|' /C calc'!A0")
    folder.rebuild_landmarks()
    folder.rebuild_errors()
    row = (folder.landmarks_csv.read_text().splitlines()[1]).split(",")
    assert row[0] == "'=HYPERLINK(1).dcm" and row[4] == "-3.000000" and row[9] == "'@SUM(1+1)"  # numbers stay numbers
    assert folder.errors_csv.read_text().splitlines()[1] == "'-2+3.dcm,'+cmd|' /C calc'!A0"
    table = read_landmark_table(folder.landmarks_csv)  # kneel's reader gives back the values as written
    assert set(table["file"]) == {"=HYPERLINK(1).dcm"} and set(table["sop_instance_uid"]) == {"@SUM(1+1)"}


def test_a_run_holding_only_the_high_cost_stage_takes_lc_model(model_dir, films, tmp_path, capsys):
    import shutil

    from kneel.cli import main
    from kneel.errors import ModelError
    from kneel.inference import Predictor

    grid = tmp_path / "GRID"  # what `kneel experiments run` leaves: one stage per run
    shutil.copytree(model_dir / "lc", grid / "lc_run" / "lc")
    shutil.copytree(model_dir / "hc", grid / "hc_run" / "hc")
    film = str(films["bilateral"])
    base = ["predict", film, "--model", str(grid / "hc_run"), "--workers", "0", "--quiet", "--force"]
    assert main([*base, "--out", str(tmp_path / "none")]) == 1
    assert "needs the low-cost run too: --lc-model DIR" in capsys.readouterr().err
    with pytest.raises(ModelError, match="lc_model=DIR"):  # the same hint in Python names the argument
        Predictor(grid / "hc_run")
    predict_files([film], model_dir, tmp_path / "together", workers=0, progress=False, force=True)
    expected = json.loads(next((tmp_path / "together" / "results").glob("*.json")).read_text())["knees"]
    for lc in (grid / "lc_run", grid / "lc_run" / "lc"):  # a model folder with lc/, or the lc/ folder itself
        out = tmp_path / f"split_{lc.name}"
        assert main([*base, "--lc-model", str(lc), "--out", str(out)]) == 0
        knees = json.loads(next((out / "results").glob("*.json")).read_text())["knees"]
        for side in ("R", "L"):
            np.testing.assert_array_equal(knees[side]["landmarks_px"], expected[side]["landmarks_px"])
