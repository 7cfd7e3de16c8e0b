"""``fetch_model``: a published release archive (downloaded or given) -> a kneel model folder in the cache.

The archive's sha256 is computed and, when the project pins one (:data:`kneel.hub.catalog.PINNED_SHA256`), must
match. Its members are checked and the release's files extracted (:mod:`kneel.hub.archive`), both stages converted
(:func:`kneel.models.snapshot.convert_snapshot`: ``weights_only`` loading, each fold reloaded and compared), and the
terms of use, the citation and the archive's provenance written beside the weights. Everything is built in a hidden
folder beside the target and moved into place at the end: an interrupted or failed fetch leaves no half model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kneel import __version__
from kneel.errors import ConfigError
from kneel.hub.archive import extract_release
from kneel.hub.cache import SOURCE_FILE, TERMS_FILE, cache_root, installed, model_folder
from kneel.hub.catalog import MODELS, get_source, pinned_sha256
from kneel.hub.download import download
from kneel.hub.errors import ArchiveError, FetchError
from kneel.io.atomic import atomic_write_text

__all__ = ["FetchResult", "fetch_model", "sha256_of"]


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_model` did: the model folder, the archive's sha256, whether it was already installed."""

    name: str
    folder: Path
    sha256: str
    already_installed: bool


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_name(url: str, default: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return name if name and name not in (".", "..") else default


def fetch_model(
    name: str,
    *,
    archive: str | os.PathLike[str] | None = None,
    url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Install the published model ``name`` (``kneel-2019``) into the cache and return its folder.

    Args:
        name: a name of :data:`kneel.hub.catalog.MODELS`.
        archive: a release archive already on disk (nothing is downloaded; the file is left as it is).
        url: download from here instead of the authors' address.
        cache_dir: the cache root (default :func:`kneel.hub.cache.cache_root`).
        force: install again over an installed model.
        progress: progress bar for the download.
        retries: how many times a dropped download resumes at once.
        timeout: seconds without an answer before a request fails.
        log: called with one line per step.

    Raises:
        ConfigError: unknown name.
        FetchError: the download failed (the message says how to install an archive obtained otherwise).
        ArchiveError: the archive is unreadable, unsafe, incomplete, or differs from the pinned sha256.
        ModelError: a snapshot inside cannot be converted.
    """
    source = get_source(name)
    if source is None:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    say = log or (lambda line: None)
    target = model_folder(name, cache_dir)
    found = installed(name, cache_dir)
    if found is not None and not force:
        return FetchResult(name, found.folder, str(found.source.get("sha256", "")), True)

    downloaded = archive is None
    if archive is None:
        address = url or source.url
        hint = (
            f"; offline or blocked? get {source.archive_name} from {source.url} by other means and install it with: "
            f"kneel models fetch {name} --from {source.archive_name}"
        )
        dest = cache_root(cache_dir) / "downloads" / name / _download_name(address, source.archive_name)
        say(f"downloading {address}")
        archive_path = download(address, dest, progress=progress, retries=retries, timeout=timeout, hint=hint)
    else:
        address = None
        archive_path = Path(archive)
        if not archive_path.is_file():
            raise FetchError("archive not found", archive_path)

    digest = sha256_of(archive_path)
    pinned = pinned_sha256(name)
    if pinned is not None and digest != pinned:
        if downloaded:
            archive_path.unlink(missing_ok=True)  # a wrong file: do not resume from it next time
        raise ArchiveError(
            f"sha256 {digest} differs from the pinned {pinned} of {name}: not the published {source.archive_name} "
            f"(damaged, or changed by its server); nothing installed",
            archive_path,
        )

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        say(f"checking and extracting {archive_path} (sha256 {digest[:16]}...)")
        try:
            release = extract_release(archive_path, source, staging / "release")
        except ArchiveError:
            if downloaded:
                archive_path.unlink(missing_ok=True)  # a corrupt download: fetch it again next time
            raise
        from kneel.models.snapshot import convert_snapshot

        model = staging / "model"
        for stage, snapshot in release.stages.items():
            folds = convert_snapshot(snapshot, stage, model, mean_std=release.mean_std)
            say(f"converted {stage}: {len(folds)} folds from {snapshot.name}")
        _name_sources_in_archive(model, staging / "release", archive_path.name)
        shutil.copy2(release.mean_std, model / "mean_std.npy")
        atomic_write_text(model / TERMS_FILE, _terms_text(source.terms, address, archive_path, digest))
        record = {
            "name": name,
            "url": address,
            "archive": archive_path.name,
            "sha256": digest,
            "size": archive_path.stat().st_size,
            "pinned_sha256": pinned,
            "stages": {stage: folder for stage, folder in source.stages},
            "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kneel_version": __version__,
        }
        atomic_write_text(model / SOURCE_FILE, json.dumps(record, indent=2) + "\n")
        _move_into_place(model, target, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if downloaded:
        with contextlib.suppress(OSError):
            archive_path.unlink()
    return FetchResult(name, target, digest, False)


def _name_sources_in_archive(model: Path, extracted: Path, archive_name: str) -> None:
    """Point each fold's ``config.json`` (``extra.source``, ``extra.mean_std``) at the archive's members
    (``snapshots_release.tar.xz:snapshots_release/lext-.../fold_0_epoch_99.pth``), not at the staging folder that
    is about to be removed."""
    for config_path in sorted(model.glob("*/fold_*/config.json")):
        config = json.loads(config_path.read_text(encoding="utf-8"))
        extra = config.get("extra") or {}
        for key in ("source", "mean_std"):
            value = extra.get(key)
            if isinstance(value, str) and Path(value).is_relative_to(extracted):
                extra[key] = f"{archive_name}:{Path(value).relative_to(extracted).as_posix()}"
        config["extra"] = extra
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")


def _terms_text(terms: str, url: str | None, archive: Path, digest: str) -> str:
    origin = url if url is not None else f"{archive.name} (installed from a local file)"
    return f"{terms}\nSource\n{origin}\nsha256 {digest}\nConverted to kneel's model format by kneel {__version__}.\n"


def _move_into_place(model: Path, target: Path, staging: Path) -> None:
    """Replace ``target`` by ``model``: the old folder (if any) is moved aside first, then removed."""
    old = staging / "previous"
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(model, target)
    except OSError as exc:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise FetchError(f"cannot install the model folder: {exc}", target) from exc
