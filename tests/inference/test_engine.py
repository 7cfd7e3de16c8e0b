"""The batch engine and ``kneel predict``: inputs, outputs, errors, resume (also after kill -9), shards.

The models are random (plumbing, not accuracy): they find no knee, so the runs pass ``force`` (``--force``) to get
landmarks from them; the presence decision has its own tests (``test_presence.py``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kneel.cli import main
from kneel.errors import ConfigError
from kneel.inference import discover_inputs, predict_files
from kneel.inference.discovery import in_shard, parse_shard
from kneel.inference.results import CSV_COLUMNS

KNEEL = [sys.executable, "-m", "kneel"]


@pytest.fixture(scope="module")
def cohort(films, tmp_path_factory) -> Path:
    """A folder: a/bilateral.dcm, a/aniso (no extension), b/missing_left.dcm, b/single.dcm, b/broken.dcm, notes."""
    root = tmp_path_factory.mktemp("cohort")
    for sub in ("a", "b"):
        shutil.copytree(films["bilateral"].parent.parent / sub, root / sub)
    (root / "b" / "notes.csv").write_text("not,an,image\n")
    return root


def test_folder_run_writes_every_output(model_dir, cohort, tmp_path):
    out = tmp_path / "out"
    summary = predict_files([cohort], model_dir, out, workers=1, overlays=True, npz=True, progress=False, force=True)
    assert (summary.found, summary.done, summary.failed, summary.no_knee) == (5, 4, 1, 0)
    table = pd.read_csv(out / "landmarks.csv", dtype={"file": str})
    assert tuple(table.columns) == CSV_COLUMNS
    files = sorted(table["file"].unique())
    assert files == ["a/aniso", "a/bilateral.dcm", "b/missing_left.dcm", "b/single.dcm"]  # relative to the folder
    assert table.groupby(["file", "side"]).size().eq(16).all()
    assert list(table.loc[table.file == "b/single.dcm", "side"].unique()) == ["L"]
    np.testing.assert_allclose(table.x_mm, table.x_px * np.where(table.file == "a/aniso", 0.4, 0.5))
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors["file"]) == ["b/broken.dcm"] and errors["reason"].str.len().min() > 5
    assert len(list((out / "results").glob("*.json"))) == 4
    assert len(list((out / "overlays").glob("*.png"))) == 4
    npz = np.load(out / "preds.npz")
    assert npz["preds"].shape == (4, 2, 16, 2)
    assert list(npz["imgs"]) == ["aniso", "bilateral", "missing_left", "single"]
    single = list(npz["files"]).index("b/single.dcm")
    assert np.isnan(npz["preds"][single, 0]).all() and np.isfinite(npz["preds"][single, 1]).all()


def test_cli_resume_and_exit_status(model_dir, cohort, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(cohort), "--model", str(model_dir), "--out", str(out), "--workers", "0", "--quiet",
            "--force"]  # fmt: skip
    assert main(argv) == 1  # the broken file fails, the others do not
    first = capsys.readouterr()
    assert "4 predicted" in first.out and "broken.dcm" in first.err
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert main(argv) == 1
    assert "0 predicted, 4 already done, 1 failed" in capsys.readouterr().out
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    good = ["predict", str(cohort / "a"), "--model", str(model_dir), "--out", str(tmp_path / "good"), "--quiet",
            "--force"]  # fmt: skip
    assert main(good) == 0
    assert main(["predict", str(tmp_path / "nowhere"), "--model", str(model_dir), "--out", str(out)]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_other_settings_refuse_to_mix(model_dir, cohort, tmp_path):
    out = tmp_path / "out"
    predict_files([cohort / "a"], model_dir, out, workers=0, progress=False, force=True)
    with pytest.raises(ConfigError, match="other settings"):
        predict_files([cohort / "a"], model_dir, out, workers=0, refine=False, progress=False, force=True)
    with pytest.raises(ConfigError, match="other settings"):
        predict_files([cohort / "a"], model_dir, out, workers=0, progress=False)  # without force


def test_kill_9_loses_nothing_finished(model_dir, films, tmp_path, capsys):
    src = tmp_path / "many"
    for i in range(12):
        (src / f"{i:02d}").mkdir(parents=True)
        shutil.copy(films["bilateral"], src / f"{i:02d}" / "film.dcm")
    out = tmp_path / "out"
    cmd = [*KNEEL, "predict", str(src), "--model", str(model_dir), "--out", str(out), "--workers", "0",
           "--batch-size", "2", "--quiet", "--force"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(list((out / "results").glob("*.json"))) < 3:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    finished = sorted((out / "results").glob("*.json"))
    assert 3 <= len(finished) < 12, "the run must be killed in the middle"
    for path in finished:  # every result on disk is complete
        data = json.loads(path.read_text())
        assert len(data["knees"]) == 2
    assert main(cmd[3:]) == 0  # resume in this process
    assert f"{12 - len(finished)} predicted, {len(finished)} already done" in capsys.readouterr().out
    table = pd.read_csv(out / "landmarks.csv", dtype={"file": str})
    assert len(table) == 12 * 32 and not table.duplicated(["file", "side", "landmark"]).any()


def test_shards_partition_the_inputs(model_dir, cohort, tmp_path):
    files = discover_inputs([cohort])
    parts = [in_shard(files, (k, 3)) for k in range(3)]
    keys = [f.key for part in parts for f in part]
    assert sorted(keys) == sorted(f.key for f in files) and len(keys) == len(set(keys))
    assert in_shard(list(reversed(files)), (1, 3)) == list(reversed(parts[1]))  # independent of order
    out = tmp_path / "out"
    a = predict_files([cohort], model_dir, out, shard="0/2", workers=0, progress=False, force=True)
    b = predict_files([cohort], model_dir, out, shard="1/2", workers=0, progress=False, force=True)
    assert a.found + b.found == 5
    assert len(pd.read_csv(out / "landmarks.csv")["file"].unique()) == 4
    for bad in ("2/2", "x", "1/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_inputs_globs_lists_and_files(cohort, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two files\n{cohort / 'a' / 'aniso'}\n\n{cohort / 'b' / 'single.dcm'}\n")
    found = discover_inputs([listing, str(cohort / "a" / "*.dcm"), cohort / "b" / "single.dcm"])
    assert [f.key for f in found] == [
        str(cohort / "a" / "aniso"),
        str(cohort / "b" / "single.dcm"),
        str(cohort / "a" / "bilateral.dcm"),
    ]
    with pytest.raises(ConfigError):
        discover_inputs([str(tmp_path / "nothing*.dcm")])
    with pytest.raises(ConfigError):
        discover_inputs([tmp_path / "missing"])


@pytest.mark.parametrize(("cpus", "expected"), [(1, 0), (2, 0), (3, 2), (4, 3), (16, 4), (None, 0)])
def test_default_workers_leave_small_machines_to_the_networks(monkeypatch, cpus, expected):
    """No reading worker on two CPUs or fewer (it slowed the networks more than it saved there), else CPUs - 1, <= 4."""
    from kneel.inference.engine import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert default_workers() == expected
