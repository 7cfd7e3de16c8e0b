"""``kneel info``: the library function and the real console script on real files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from kneel.io.info import describe_radiograph, format_info, info

KNEEL = Path(sys.executable).with_name("kneel")


def test_describe_and_format(make_dicom):
    path = make_dicom(np.zeros((20, 30), np.uint16), bits_stored=12, imager_spacing=(0.1, 0.125))
    item = describe_radiograph(path)
    assert item.ok and item.rows == 20 and item.columns == 30 and item.spacing == (0.1, 0.125)
    line = format_info(item)
    assert line.startswith(f"{path}: 20x30 px, spacing 0.1 x 0.125 mm (ImagerPixelSpacing), MONOCHROME2, 12 bits, ")
    assert "Explicit VR Little Endian" in line and "DX" in line and "\n" not in line


def test_info_exit_status_and_json(make_dicom, tmp_path):
    good = make_dicom(np.zeros((8, 8), np.uint8), "good.dcm", pixel_spacing=(0.2, 0.2))
    bad = tmp_path / "bad.dcm"
    bad.write_text("nope")
    out = io.StringIO()
    assert info([good], stream=out) == 0
    out = io.StringIO()
    assert info([good, bad], stream=out) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "ERROR NotDicomError" in lines[1] and str(bad) in lines[1]
    out = io.StringIO()
    assert info([tmp_path], json_output=True, spacing=0.3, stream=out) == 1  # a folder: all files below it
    items = json.loads(out.getvalue())
    assert [Path(i["path"]).name for i in items] == ["bad.dcm", "good.dcm"]
    assert items[1]["spacing"] == [0.3, 0.3] and items[1]["file_spacing"] == [0.2, 0.2]
    assert items[0]["error_type"] == "NotDicomError"


def test_console_script_on_the_pydicom_radiographs(tmp_path, pydicom_file):
    exe = str(KNEEL) if KNEEL.exists() else shutil.which("kneel")
    assert exe, "the kneel console script is not installed"
    rg1, rg3 = pydicom_file("RG1_UNCR.dcm"), pydicom_file("RG3_J2KR.dcm")
    plain = tmp_path / "001"  # OAI style: no extension
    shutil.copy(rg3, plain)
    result = subprocess.run([exe, "info", str(rg1), str(plain)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "InvalidSpacingError" in lines[0] and "PixelSpacing is zero" in lines[0]
    assert "MissingSpacingError" in lines[1]
    result = subprocess.run(
        [exe, "info", "--spacing", "0.1,0.12", str(rg1), str(plain)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = result.stdout.splitlines()
    assert "1955x1841 px, spacing 0.1 x 0.12 mm (override" in first and "MONOCHROME1 (inverted), 15 bits" in first
    assert "JPEG 2000 Image Compression (Lossless Only)" in second and "10 bits" in second
    assert result.stderr == ""
    bad = subprocess.run([exe, "info", "--spacing", "0", str(rg1)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "zero" in bad.stderr
