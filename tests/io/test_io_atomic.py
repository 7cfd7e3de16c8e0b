"""Atomic writes: the destination is either the old file or the complete new one, never a partial file."""

from __future__ import annotations

import os

import pytest

from kneel.io.atomic import atomic_write_bytes, atomic_write_text, atomic_writer


def test_write_bytes_and_text(tmp_path):
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "b.txt", "line\r\nnext\n")
    assert (tmp_path / "b.txt").read_bytes() == b"line\r\nnext\n"  # no newline translation
    mode = (tmp_path / "b.txt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    dest = tmp_path / "table.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(dest) as handle:
        handle.write("half of the new cont")
        raise RuntimeError("crash while writing")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_replaces_on_success(tmp_path):
    dest = tmp_path / "x.bin"
    dest.write_bytes(b"old")
    with atomic_writer(dest, "wb") as handle:
        handle.write(b"new")
        assert dest.read_bytes() == b"old"  # not visible before the end
    assert dest.read_bytes() == b"new"


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError), atomic_writer(tmp_path / "x", "a"):
        pass
