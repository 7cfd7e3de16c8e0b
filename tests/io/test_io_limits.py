"""Sanity limits of the reader (``kneel.io.limits``): implausible spacing and sizes, files that are not files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from kneel.io import InvalidSpacingError, UnsupportedImageError, read_radiograph
from kneel.io.limits import MAX_SPACING_MM, MIN_SPACING_MM


@pytest.mark.parametrize(("spacing", "words"), [("1e-06", "implausibly small"), ("1e+30", "implausibly large")])
def test_implausible_spacing_tags_are_refused(make_dicom, spacing, words):
    path = make_dicom(np.zeros((64, 64), np.uint16), imager_spacing=(spacing, spacing))
    with pytest.raises(InvalidSpacingError, match=words) as info:
        read_radiograph(path)
    assert info.value.tag == "ImagerPixelSpacing" and str(path) in str(info.value)
    assert read_radiograph(path, spacing=0.2).spacing == (0.2, 0.2)  # an override still rescues the file


def test_implausible_spacing_overrides_are_refused(make_dicom):
    path = make_dicom(np.zeros((64, 64), np.uint16), imager_spacing=(0.1, 0.1))
    for bad in (MIN_SPACING_MM / 2, (0.1, MAX_SPACING_MM * 2)):
        with pytest.raises(InvalidSpacingError, match="implausibly"):
            read_radiograph(path, spacing=bad)
    assert read_radiograph(path, spacing=(MIN_SPACING_MM, MAX_SPACING_MM)).spacing == (MIN_SPACING_MM, MAX_SPACING_MM)


def test_huge_images_are_refused_before_decoding(make_dicom):
    # 30000 x 30000 declared over 64 x 64 pixels of data: refused from the header, nothing is allocated
    path = make_dicom(np.zeros((64, 64), np.uint16), imager_spacing=(0.1, 0.1), extra={"Rows": 30000, "Columns": 30000})
    with pytest.raises(UnsupportedImageError, match="too large: 30000 x 30000"):
        read_radiograph(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.dcm"
    zero.symlink_to("/dev/zero")
    # Opening the FIFO would block forever and /dev/zero never ends: run the real command with a time limit.
    done = subprocess.run([sys.executable, "-m", "kneel", "info", str(fifo), str(zero)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        f"{fifo}: ERROR NotDicomError: not a regular file (a FIFO)",
        f"{zero}: ERROR NotDicomError: not a regular file (a character device)",
    ]
