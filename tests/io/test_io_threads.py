"""Reading in many threads at once (as the HTTP service does) must not touch the process's global warning state."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydicom.uid import RLELossless

from kneel.io import TruncatedFileError, read_radiograph


def _outcome(path) -> str:
    try:
        read_radiograph(path)
    except TruncatedFileError:
        return "truncated"
    return "ok"


def test_concurrent_reads_leave_the_warning_filters_alone(make_dicom):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    good = make_dicom(pixels, name="good.dcm", bits_stored=12, imager_spacing=(0.1, 0.1))
    rle = make_dicom(pixels, name="rle.dcm", transfer_syntax=RLELossless, bits_stored=12, imager_spacing=(0.1, 0.1))
    cut = rle.with_name("cut.dcm")
    cut.write_bytes(rle.read_bytes()[:-500])  # ends inside the encapsulated pixel data: pydicom warns "End of file"
    filters = list(warnings.filters)
    show, impl = warnings.showwarning, warnings._showwarnmsg_impl  # type: ignore[attr-defined]
    jobs = [good, cut, rle] * 24
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(_outcome, jobs))
    # catch_warnings in worker threads restores the filters of whichever thread left last: an "always" filter or a
    # recorder that swallows every later warning of the process stays behind.
    assert warnings.filters == filters
    assert warnings.showwarning is show and warnings._showwarnmsg_impl is impl  # type: ignore[attr-defined]
    assert outcomes == ["ok", "truncated", "ok"] * 24  # truncation is still found in every thread
    with pytest.warns(UserWarning, match="still delivered"):
        warnings.warn("still delivered", UserWarning, stacklevel=1)
