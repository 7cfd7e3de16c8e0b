"""The batch engine when things go wrong around it: a killed run's readers, unwritable or full output folders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kneel.inference.outputs import OutputFolder
from kneel.inference.results import KneePrediction, RadiographPrediction
from kneel.landmarks import KneeSide

KNEEL = [sys.executable, "-m", "kneel"]


def _copies(film: Path, folder: Path, n: int) -> Path:
    for i in range(n):
        (folder / f"{i:02d}").mkdir(parents=True)
        shutil.copy(film, folder / f"{i:02d}" / "film.dcm")
    return folder


def _readers_of(pid: int) -> list[int]:
    """PIDs of the DataLoader worker processes (multiprocessing spawn children) of process ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent may not reap it in a container)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_readers_die_with_a_killed_run(model_dir, films, tmp_path):
    src = _copies(films["bilateral"], tmp_path / "in", 24)
    out = tmp_path / "out"
    cmd = [*KNEEL, "predict", str(src), "--model", str(model_dir), "--out", str(out), "--workers", "2",
           "--batch-size", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    readers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            readers = _readers_of(proc.pid)
            if len(readers) == 2 and len(list((out / "results").glob("*.json"))) >= 1:
                break
            time.sleep(0.05)
        assert len(readers) == 2 and proc.poll() is None, "the run must be killed while its readers work"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in readers):
        time.sleep(0.2)
    left = [pid for pid in readers if _alive(pid)]
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, "reader processes outlived the killed run"


def test_an_output_that_cannot_be_written_stops_with_one_line_and_the_resume_redoes_lost_overlays(
    model_dir, films, tmp_path, capsys
):
    from kneel.cli import main

    src = _copies(films["bilateral"], tmp_path / "in", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlays").write_text("a file where the overlays folder goes: every overlay write fails\n")
    argv = ["predict", str(src), "--model", str(model_dir), "--out", str(out), "--workers", "0", "--overlays",
            "--quiet"]  # fmt: skip
    assert main(argv) == 1  # an exception other than KneelError would reach pytest as a traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kneel predict: error: {out / 'overlays'}"), err
    assert "cannot write:" in err[0] and err[0].endswith("(finished results are kept; re-run to resume)")
    assert len(list((out / "results").glob("*.json"))) == 1  # the first result was written before its overlay
    (out / "overlays").unlink()  # space is back
    assert main(argv) == 0
    assert "3 predicted, 0 already done" in capsys.readouterr().out  # the radiograph without its overlay is redone
    names = {p.stem for p in (out / "results").glob("*.json")}
    assert len(names) == 3 and names == {p.stem for p in (out / "overlays").glob("*.png")}


def test_an_unwritable_output_folder_is_one_line(model_dir, films, tmp_path, capsys):
    from kneel.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    argv = ["predict", str(films["bilateral"]), "--model", str(model_dir), "--out", str(blocker / "out")]
    assert main(argv) == 1  # an exception other than KneelError would reach pytest as a traceback
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kneel predict: error: {blocker / 'out'}")
    assert lines[0].endswith(": cannot write: Not a directory (finished results are kept; re-run to resume)")


def test_overlays_of_elongated_images(tmp_path):
    folder = OutputFolder(tmp_path)
    knee = KneePrediction(KneeSide.R, np.full((16, 2), 1.0), (0.1, 0.1), np.zeros(16), np.ones(2), np.ones(2))
    for shape in ((2, 5000), (5000, 1)):
        prediction = RadiographPrediction(f"{shape}", f"{shape}", shape, (0.1, 0.1), "override", None, "single",
                                          knees={KneeSide.R: knee})  # fmt: skip
        path = folder.write_overlay(prediction, np.zeros(shape, np.uint8))
        import cv2

        assert min(cv2.imread(str(path)).shape[:2]) == 1


def test_kneel_predict_runs_without_loading_the_heavy_table_libraries(model_dir, films, tmp_path):
    """Start-up: a whole ``kneel predict`` run (read, both stages, every output file) never imports pandas, scipy or
    matplotlib, which cost ~0.5 s of start-up together (pandas alone 0.35-0.6 s on the 2-core machine); the landmark
    table and status files are written with the csv module."""
    code = (
        "import sys\n"
        "from kneel.cli import main\n"
        f"rc = main(['predict', {str(films['bilateral'])!r}, '--model', {str(model_dir)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--quiet', '--overlays'])\n"
        "print(rc, sorted(m for m in ('pandas', 'scipy', 'matplotlib') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "0 []", done.stdout + done.stderr
    assert (tmp_path / "out" / "landmarks.csv").is_file()
