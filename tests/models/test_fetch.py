"""``kneel models fetch`` and model names, offline: a real HTTP server on 127.0.0.1 serves release archives in the
exact layout of KNEEL's ``snapshots_release.tar.xz`` (tiny test weights written by the reference tools)."""

from __future__ import annotations

import hashlib
import json
import lzma
import tarfile
from pathlib import Path

import pytest
import safetensors.torch

from kneel.cli import main as kneel_main
from kneel.hub import ArchiveError, FetchError, ModelNotInstalledError, fetch_model, resolve_model
from kneel.hub.catalog import PINNED_SHA256
from kneel.hub.download import download

from .release_archive import (
    HC_FOLDER,
    LC_FOLDER,
    RELEASE,
    ReleaseServer,
    closed_port,
    fake_release_members,
    release_folder,
    tar_folder,
    tiny_model_folder,
    write_tar,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory, shared_dir: Path) -> dict:
    """The source kneel model folder, and the release archive made from it (``.tar.xz``, as published)."""
    root = tmp_path_factory.mktemp("release")
    model = tiny_model_folder(root / "MODEL")
    archive = tar_folder(release_folder(model, shared_dir, root / "build"), root / "snapshots_release.tar.xz")
    return {"model": model, "archive": archive, "bytes": archive.read_bytes()}


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    from kneel.synth import generate_cohort

    out = tmp_path_factory.mktemp("film")
    generate_cohort(out, n=1, seed=3, layout="flat", split="test", workers=1, progress=False)
    return next(p for p in out.rglob("*.dcm"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache for this test, found by name resolution through ``$KNEEL_CACHE``."""
    monkeypatch.setenv("KNEEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _nothing_installed(cache: Path) -> None:
    """No model folder, and no staging folder left behind."""
    models = cache / "models"
    assert not (models / "kneel-2019").exists()
    assert not models.exists() or not list(models.glob(".kneel-2019.partial-*"))


def _err_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_model_names_the_fetch_command(cache, film, tmp_path, capsys) -> None:
    from kneel.inference import Predictor

    with pytest.raises(ModelNotInstalledError, match="kneel models fetch kneel-2019"):
        Predictor("kneel-2019")
    assert kneel_main(["predict", str(film), "--model", "kneel-2019", "--out", str(tmp_path / "p")]) == 1
    err = _err_line(capsys)
    assert "'kneel-2019' is not installed" in err and "kneel models fetch kneel-2019 --from" in err
    gt = tmp_path / "gt.csv"
    gt.write_text("file,side,landmark,x_px,y_px\n")
    assert kneel_main(["calibrate", str(film), "--model", "kneel-2019", "--gt", str(gt)]) == 1
    assert "kneel models fetch kneel-2019" in _err_line(capsys)
    assert kneel_main(["serve", "--model", "kneel-2019", "--port", "1"]) == 1  # refused before anything starts
    assert "kneel models fetch kneel-2019" in _err_line(capsys)
    assert not (tmp_path / "p").exists()


def test_interrupted_download_resumes_and_installs(release, cache, capsys) -> None:
    payload = release["bytes"]
    half, quarter = len(payload) // 2, len(payload) // 4
    folder = cache / "models" / "kneel-2019"
    with ReleaseServer(payload) as server:
        # the connection drops and no retry is allowed: the part is kept and the message says how to resume
        server.drop_after = half
        with pytest.raises(FetchError, match="run the same command again to resume"):
            fetch_model("kneel-2019", url=server.url, retries=0, progress=False)
        part = cache / "downloads" / "kneel-2019" / "snapshots_release.tar.xz.part"
        assert part.stat().st_size == half
        _nothing_installed(cache)
        # the next command resumes from there, drops again a quarter later and resumes again by itself
        server.drop_after = quarter
        assert kneel_main(["models", "fetch", "kneel-2019", "--url", server.url, "--quiet"]) == 0
        assert server.requests == [None, f"bytes={half}-", f"bytes={half + quarter}-"]
        out = capsys.readouterr().out
        assert f"installed in {folder}" in out and "kneel predict FILMS --model kneel-2019" in out
        # a second fetch finds it installed and asks nothing of the server
        assert kneel_main(["models", "fetch", "kneel-2019", "--url", server.url, "--quiet"]) == 0
        assert "already installed" in capsys.readouterr().out and len(server.requests) == 3

    source = json.loads((folder / "source.json").read_text())
    assert source["sha256"] == hashlib.sha256(payload).hexdigest() and source["url"] == server.url
    terms = (folder / "LICENSE.txt").read_text()
    assert "non-commercial research use only" in terms and "arXiv:1907.12237" in terms and source["sha256"] in terms
    assert not part.exists() and not list((cache / "downloads").rglob("*.tar.xz*")), "download removed once installed"
    assert [p.name for p in (cache / "models").iterdir()] == ["kneel-2019"], "no staging folder left"
    # both stages, every fold: bit for bit the weights the reference's snapshots were written from, same geometry
    for stage in ("lc", "hc"):
        assert sorted(p.name for p in (folder / stage).iterdir()) == [f"fold_{k}" for k in range(5)]
        for k in range(5):
            got, want = folder / stage / f"fold_{k}", release["model"] / stage / f"fold_{k}"
            got_w = safetensors.torch.load_file(got / "model.safetensors")
            want_w = safetensors.torch.load_file(want / "model.safetensors")
            assert got_w.keys() == want_w.keys() and all(got_w[n].equal(want_w[n]) for n in want_w)
            got_c, want_c = (json.loads((f / "config.json").read_text()) for f in (got, want))
            for key in ("preset", "stage", "fold", "spacing_mm", "roi_size_mm", "pad", "crop", "mean", "std"):
                assert got_c[key] == pytest.approx(want_c[key]), (stage, k, key)
            snapshot = {"lc": LC_FOLDER, "hc": HC_FOLDER}[stage]
            member = f"snapshots_release.tar.xz:{RELEASE}/{snapshot}/fold_{k}_epoch_0.pth"
            assert got_c["extra"]["source"] == member  # where the weights came from, not the removed staging folder
    assert resolve_model("kneel-2019") == folder
    assert kneel_main(["models", "list"]) == 0
    assert f"installed in {folder}" in capsys.readouterr().out


def test_download_restarts_when_the_server_ignores_ranges(release, tmp_path) -> None:
    payload = release["bytes"][:300_000]
    dest = tmp_path / "dl" / "archive.tar.xz"
    with ReleaseServer(payload) as server:
        server.drop_after = 100_000
        with pytest.raises(FetchError, match="resume"):
            download(server.url, dest, progress=False, retries=0)
        server.ranges = False  # asked for bytes=100000-, it sends the whole file: the part is replaced, not appended
        assert download(server.url, dest, progress=False).read_bytes() == payload
        assert server.requests == [None, "bytes=100000-"]
        # a part that already holds every byte: 416 from the server, the part is complete
        server.ranges = True
        dest2 = tmp_path / "dl2" / "archive.tar.xz"
        dest2.parent.mkdir()
        Path(str(dest2) + ".part").write_bytes(payload)
        Path(str(dest2) + ".part.json").write_text(json.dumps({"url": server.url, "etag": server.etag}))
        assert download(server.url, dest2, progress=False).read_bytes() == payload
        assert server.requests[-1] == f"bytes={len(payload)}-"
        # a file larger than the limit is refused (announced, here), and nothing of it is kept as complete
        with pytest.raises(FetchError, match="above the 0.1 MB limit"):
            download(server.url, tmp_path / "dl3" / "archive.tar.xz", progress=False, max_bytes=100_000)
        assert not (tmp_path / "dl3" / "archive.tar.xz").exists()


def test_offline(cache, capsys) -> None:
    url = f"http://127.0.0.1:{closed_port()}/models/KNEEL/snapshots_release.tar.xz"
    assert kneel_main(["models", "fetch", "kneel-2019", "--url", url, "--quiet"]) == 1
    err = _err_line(capsys)
    assert "connection refused" in err and "kneel models fetch kneel-2019 --from snapshots_release.tar.xz" in err
    _nothing_installed(cache)


def test_corrupt_archive(release, cache, tmp_path, capsys) -> None:
    payload = release["bytes"]
    # truncated in transit but served whole: the download completes, the archive is refused and removed
    with ReleaseServer(payload[: len(payload) * 2 // 3]) as server, pytest.raises(ArchiveError, match="corrupt or"):
        fetch_model("kneel-2019", url=server.url, progress=False)
    assert not list((cache / "downloads").rglob("*.tar.xz*"))
    # one flipped byte in the middle (xz's check catches it); the user's own file is left as it was
    flipped = bytearray(payload)
    flipped[len(payload) // 2] ^= 0xFF
    bad = tmp_path / "snapshots_release.tar.xz"
    bad.write_bytes(bytes(flipped))
    assert kneel_main(["models", "fetch", "kneel-2019", "--from", str(bad), "--quiet"]) == 1
    assert f"{bad}: corrupt or truncated archive" in _err_line(capsys) and bad.read_bytes() == bytes(flipped)
    # not a tar at all
    bad.write_bytes(lzma.compress(b"<html>Not found</html>"))
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        fetch_model("kneel-2019", archive=bad)
    _nothing_installed(cache)


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (_info("/tmp/kneel-test-absolute", size=3), "absolute"),
        (_info(f"{RELEASE}/../../kneel-test-escaped", size=3), "'..'"),
        (_info(f"{RELEASE}/{LC_FOLDER}/evil", tarfile.SYMTYPE, "../../../../etc/passwd"), "outside the archive"),
        (_info(f"{RELEASE}/abs_link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (_info(f"{RELEASE}/hard", tarfile.LNKTYPE, "../outside"), "outside the archive"),
        (_info(f"{RELEASE}/dev", tarfile.CHRTYPE), "special file"),
        (_info(f"{RELEASE}/huge.bin", size=3 << 30), "limit"),
    ],
    ids=["absolute", "dotdot", "symlink-out", "symlink-abs", "hardlink-out", "device", "too-large"],
)
def test_hostile_archive_is_refused_whole(extra, reason, cache, tmp_path, capsys) -> None:
    members = fake_release_members()
    if extra.size > (1 << 20):  # a header announcing 3 GB, without the 3 GB
        archive = write_tar(tmp_path / "hostile.tar", members)
        with tarfile.open(archive, "a") as tar:
            tar.fileobj.write(extra.tobuf(tarfile.GNU_FORMAT))
    else:
        archive = write_tar(tmp_path / "hostile.tar", members, [extra])
    assert kneel_main(["models", "fetch", "kneel-2019", "--from", str(archive), "--quiet"]) == 1
    err = _err_line(capsys)
    assert "unsafe archive" in err and repr(extra.name) in err and reason in err
    _nothing_installed(cache)
    assert not (tmp_path.parent / "kneel-test-escaped").exists()


@pytest.mark.parametrize(
    ("skip", "named"),
    [
        ([f"{RELEASE}/{HC_FOLDER}/fold_3_epoch_99.pth"], f"{RELEASE}/{HC_FOLDER}/fold_3_epoch_<e>.pth"),
        ([f"{RELEASE}/mean_std.npy"], "mean_std.npy"),
        ([f"{RELEASE}/{LC_FOLDER}/fold_{k}_epoch_99.pth" for k in range(5)], f"{LC_FOLDER}/fold_0_epoch_<e>.pth"),
    ],
    ids=["hc-fold", "mean-std", "lc-snapshot"],
)
def test_missing_member(skip, named, cache, tmp_path, capsys) -> None:
    archive = write_tar(tmp_path / "incomplete.tar", fake_release_members(skip=skip))
    assert kneel_main(["models", "fetch", "kneel-2019", "--from", str(archive), "--quiet"]) == 1
    err = _err_line(capsys)
    assert "missing member" in err and named in err
    _nothing_installed(cache)


def test_pinned_sha256_then_predict_by_name(release, film, cache, tmp_path, monkeypatch, capsys) -> None:
    archive = release["archive"]
    monkeypatch.setitem(PINNED_SHA256, "kneel-2019", "0" * 64)
    assert kneel_main(["models", "fetch", "kneel-2019", "--from", str(archive), "--quiet"]) == 1
    err = _err_line(capsys)
    assert f"differs from the pinned {'0' * 64}" in err and hashlib.sha256(release["bytes"]).hexdigest() in err
    _nothing_installed(cache)
    assert archive.read_bytes() == release["bytes"]  # the user's file is never removed
    # the right pin installs, from the file the user already has (--from, as on a machine without internet)
    monkeypatch.setitem(PINNED_SHA256, "kneel-2019", hashlib.sha256(release["bytes"]).hexdigest().upper())
    assert kneel_main(["models", "fetch", "kneel-2019", "--from", str(archive), "--quiet"]) == 0
    folder = cache / "models" / "kneel-2019"
    assert f"kneel-2019 installed in {folder}" in capsys.readouterr().out
    source = json.loads((folder / "source.json").read_text())
    assert source["url"] is None and source["archive"] == archive.name
    # then the name works wherever a model folder does; the terms and citation are printed once per run
    args = [str(film), "--out", str(tmp_path / "pred"), "--model", "kneel-2019", "--force", "--workers", "0"]
    assert kneel_main(["predict", *args, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("for non-commercial research use only") == 1 and "arXiv:1907.12237" in err
    rows = (tmp_path / "pred" / "landmarks.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 16
    from kneel.inference import Predictor

    assert Predictor("kneel-2019").model_dir == str(folder)
