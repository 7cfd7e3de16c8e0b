"""The knee presence decision: no landmarks where there is no knee, every knee kept where there is one.

Real files everywhere: pydicom's own CT, MR and CR test images, DICOM films written here, generated negatives
(:mod:`kneel.synth.negatives`) and held-out synthetic films, through ``kneel predict`` and :class:`Predictor`. The
DICOM-tag tests need no trained model (the tags decide before any network runs); the image tests use trained tiny
models (``KNEEL_TINY_MODEL`` or the default demo's, see ``tests/conftest.py``).
"""

import csv
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from inference_helpers import knee_film, write_dicom

from kneel.cli import main
from kneel.inference import Predictor, predict_files
from kneel.inference.presence import header_tags, tag_refusal


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data, a dev dependency)")
    return Path(path)


def _untagged(src: Path, dst: Path, spacing: float | None = None) -> Path:
    """A copy that says DX and no body part (only the image can tell); with a spacing if given."""
    ds = pydicom.dcmread(src)
    ds.Modality = "DX"
    if "BodyPartExamined" in ds:
        del ds.BodyPartExamined
    if spacing is not None:
        ds.ImagerPixelSpacing = [spacing, spacing]
        if "PixelSpacing" in ds:
            del ds.PixelSpacing
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


def _status(out: Path) -> dict[str, tuple[str, str, str]]:
    with open(out / "status.csv", newline="") as handle:
        return {r["file"]: (r["status"], r["knees_found"], r["reason"]) for r in csv.DictReader(handle)}


@pytest.mark.parametrize(
    ("modality", "body_part", "refused"),
    [
        ("CT", None, "Modality CT"),
        ("MR", "KNEE", "Modality MR"),  # the modality decides: an MR of the knee is no radiograph
        ("US", None, "Modality US"),
        ("NM", None, "Modality NM"),
        ("PT", None, "Modality PT"),
        ("MG", None, "Modality MG"),
        ("CR", "CHEST", "BodyPartExamined 'CHEST'"),
        ("DX", "Abdomen", "BodyPartExamined 'Abdomen'"),
        ("DX", "C SPINE", "BodyPartExamined 'C SPINE'"),
        ("DX", "HEAD", "BodyPartExamined 'HEAD'"),
        ("DX", "KNEE", None),
        ("CR", "LEG", None),
        ("DX", "LOWER LIMB", None),
        ("DX", "HIP KNEE", None),  # a knee word keeps it
        ("CR", "EXTREMITY", None),
        ("DX", "Knie bds.", None),
        ("DX", "", None),
        (None, None, None),  # absent tags refuse nothing
        ("OT", None, None),
    ],
)
def test_tags_that_refuse_and_tags_that_do_not(modality, body_part, refused):
    reason = tag_refusal(modality, body_part)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason and "\n" not in reason


def test_pydicom_ct_mr_and_chest_films_are_refused_by_their_tags(model_dir):
    """Before any network runs: no_knee with the reason, no landmarks, even for an MR slice 20 mm wide."""
    predictor = Predictor(model_dir)
    for name, words in (("CT_small.dcm", "Modality CT"), ("MR_small.dcm", "Modality MR")):
        result = predictor.predict(_pydicom_file(name))
        assert result.status == "no_knee" and words in result.reason and not result.knees
        assert list(result.rows()) == [] and result.to_dict()["status"] == "no_knee"
    chest = Predictor(model_dir, spacing=0.2).predict(_pydicom_file("RG1_UNCI.dcm"))  # PixelSpacing 0.000
    assert chest.status == "no_knee" and "BodyPartExamined 'CHEST'" in chest.reason
    forced = Predictor(model_dir, force=True).predict(_pydicom_file("CT_small.dcm"))  # 85 mm: a single-knee film
    assert forced.status == "ok" and len(forced.knees) == 1


def test_tags_refuse_a_file_that_cannot_even_be_read(model_dir, tmp_path):
    """A CT slice without a spacing is no knee radiograph (no_knee), not a failure; a DX one without spacing fails."""
    ct = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    del ct.PixelSpacing
    ct.save_as(tmp_path / "ct_nospacing.dcm")
    write_dicom(tmp_path / "dx_nospacing.dcm", knee_film(), spacing=None)
    summary = predict_files([tmp_path], model_dir, tmp_path / "out", workers=0, progress=False)
    assert (summary.found, summary.failed, summary.no_knee) == (2, 1, 1)
    status = _status(tmp_path / "out")
    assert status["ct_nospacing.dcm"][0] == "no_knee" and "Modality CT" in status["ct_nospacing.dcm"][2]
    assert status["dx_nospacing.dcm"][0] == "failed" and "spacing" in status["dx_nospacing.dcm"][2].lower()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_failing_to_read_is_not_opened_for_its_tags(tmp_path):
    """The tag fallback of a file that failed to read must not open a FIFO (it would block until a writer comes)."""
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    found: list[tuple[str | None, str | None]] = []
    reader = threading.Thread(target=lambda: found.append(header_tags(str(fifo))), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "header_tags blocked on a FIFO"
    assert found == [(None, None)]
    assert header_tags("/dev/zero") == (None, None)  # a device that never ends


def test_cli_lists_every_status_exits_0_and_strict_fails(model_dir, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(_pydicom_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(_pydicom_file("MR_small.dcm"), src / "mr.dcm")
    chest = pydicom.dcmread(write_dicom(src / "chest.dcm", knee_film()))
    chest.BodyPartExamined = "CHEST"
    chest.save_as(src / "chest.dcm")
    out = tmp_path / "out"
    argv = ["predict", str(src), "--model", str(model_dir), "--out", str(out), "--workers", "0", "--quiet"]
    assert main(argv) == 0  # every file was read
    captured = capsys.readouterr()
    assert "3 without a knee" in captured.out
    for name in ("ct.dcm", "mr.dcm", "chest.dcm"):
        assert f"{name}: no knee: " in captured.err
    status = _status(out)
    assert {k: v[0] for k, v in status.items()} == {"ct.dcm": "no_knee", "mr.dcm": "no_knee", "chest.dcm": "no_knee"}
    assert "Modality MR" in status["mr.dcm"][2] and "CHEST" in status["chest.dcm"][2]
    assert len(pd.read_csv(out / "landmarks.csv")) == 0
    assert main([*argv, "--strict"]) == 1
    assert "--strict: 3 files hold no knee" in capsys.readouterr().err
    forced = tmp_path / "forced"
    (src / "mr.dcm").unlink()  # 20 mm: too small to predict anything in, even when forced
    assert main(["predict", str(src), "--model", str(model_dir), "--out", str(forced), "--quiet", "--force"]) == 0
    assert {k: v[0] for k, v in _status(forced).items()} == {"ct.dcm": "ok", "chest.dcm": "ok"}
    assert len(pd.read_csv(forced / "landmarks.csv")) == 16 + 32  # a single-knee CT slice, a bilateral film


# ---------------------------------------------------------------------------------------------------------------
# with trained tiny models: the image decides


@pytest.fixture(scope="module")
def non_knee_set(tmp_path_factory) -> Path:
    """Generated negatives (seed 0, two of each kind) and pydicom's images with their tags removed."""
    from kneel.synth.negatives import write_negatives

    root = tmp_path_factory.mktemp("non_knee")
    write_negatives(root, n_per_kind=2, seed=0)
    (root / "negatives.csv").unlink()
    for name in ("CT_small.dcm", "693_UNCI.dcm", "MR2_UNCI.dcm"):
        _untagged(_pydicom_file(name), root / f"untagged_{name}")
    for name in ("RG1_UNCI.dcm", "RG3_UNCI.dcm"):  # chest and distal tibia, read at 0.2 mm
        _untagged(_pydicom_file(name), root / f"untagged_{name}", spacing=0.2)
    return root


@pytest.mark.slow
@pytest.mark.timeout(3600)  # may train the default demo first (trained_model)
def test_non_knee_set_gives_no_landmarks(trained_model, non_knee_set, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(non_knee_set), "--model", str(trained_model), "--out", str(out), "--workers", "0",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    status = _status(out)
    files = sorted(p.name for p in non_knee_set.iterdir())
    assert sorted(status) == files and len(files) == 17
    assert {k: v[0] for k, v in status.items() if v[0] != "no_knee"} == {}
    assert len(pd.read_csv(out / "landmarks.csv")) == 0
    assert capsys.readouterr().err.count(": no knee: ") == len(files)
    assert main([*argv, "--strict"]) == 1


@pytest.mark.slow
@pytest.mark.timeout(3600)  # may train the default demo first (trained_model)
def test_synthetic_knees_are_kept_and_empty_halves_refused(trained_model, tmp_path):
    """Held-out synthetic films: bilateral, one knee on a full-width film, single-knee films 18-27 cm wide."""
    from kneel.synth import generate_cohort
    from kneel.synth.negatives import write_single_knee_films

    generate_cohort(tmp_path / "films", n=4, seed=7, layout="flat", split="test", single_knee_fraction=0.5,
                    workers=1, progress=False)  # fmt: skip
    summary = predict_files([tmp_path / "films"], trained_model, tmp_path / "out", workers=0, progress=False)
    assert summary.failed == 0 and summary.no_knee == 0
    truth = pd.read_csv(tmp_path / "films" / "ground_truth.csv", dtype={"file": str})
    pred = pd.read_csv(tmp_path / "out" / "landmarks.csv", dtype={"file": str})
    expected = set(map(tuple, truth[["file", "side"]].drop_duplicates().to_numpy()))
    assert set(map(tuple, pred[["file", "side"]].drop_duplicates().to_numpy())) == expected
    assert len(expected) < 8  # some films show one knee: their empty half was refused

    written = write_single_knee_films(tmp_path / "single", n=4, seed=3, laterality_fraction=1.0)
    summary = predict_files([tmp_path / "single"], trained_model, tmp_path / "out1", workers=0, progress=False)
    assert summary.failed == 0 and summary.no_knee == 0
    pred = pd.read_csv(tmp_path / "out1" / "landmarks.csv", dtype={"file": str})
    assert set(map(tuple, pred[["file", "side"]].drop_duplicates().to_numpy())) == set(written)
    single = pd.read_csv(tmp_path / "single" / "ground_truth.csv", dtype={"file": str})
    joined = single.merge(pred, on=["file", "side", "landmark"], suffixes=("_true", ""))
    error_px = np.hypot(joined.x_px - joined.x_px_true, joined.y_px - joined.y_px_true)
    assert float(np.median(error_px)) < 100  # the knee found is the knee on the film (~15 mm), not a phantom
