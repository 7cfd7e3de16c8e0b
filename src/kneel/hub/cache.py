"""Where fetched models live, and how a model name given anywhere (``--model kneel-2019``) becomes their folder.

The cache root is, first found: the ``cache_dir`` argument (``--cache-dir``), ``$KNEEL_CACHE``,
``$XDG_CACHE_HOME/kneel``, ``~/.cache/kneel``. Models go to ``<root>/models/<name>/``, partial downloads to
``<root>/downloads/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from kneel.hub.catalog import MODELS, get_source
from kneel.hub.errors import ModelNotInstalledError

__all__ = [
    "CACHE_ENV",
    "SOURCE_FILE",
    "TERMS_FILE",
    "InstalledModel",
    "cache_root",
    "model_folder",
    "installed",
    "resolve_model",
    "terms_notice",
]

CACHE_ENV = "KNEEL_CACHE"
SOURCE_FILE = "source.json"  # in the model folder: name, url, archive, sha256, size, date, kneel version
TERMS_FILE = "LICENSE.txt"  # in the model folder: terms of use and citation of the weights


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$KNEEL_CACHE``, else ``$XDG_CACHE_HOME/kneel``, else ``~/.cache/kneel``."""
    if cache_dir is not None and str(cache_dir):
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "kneel"


def model_folder(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder model ``name`` is (or would be) installed in."""
    return cache_root(cache_dir) / "models" / name


@dataclass(frozen=True)
class InstalledModel:
    """A fetched model: its name, folder and what ``source.json`` records (url, archive, sha256, size, date)."""

    name: str
    folder: Path
    source: dict


def installed(name: str, cache_dir: str | os.PathLike[str] | None = None) -> InstalledModel | None:
    """The installed model ``name``, or ``None`` when its folder is missing or incomplete (no ``source.json``, which
    is written last)."""
    folder = model_folder(name, cache_dir)
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(source, dict) or not (folder / "lc").is_dir() or not (folder / "hc").is_dir():
        return None
    return InstalledModel(name, folder, source)


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """The model folder ``model`` means: an existing path as it is, a known model name (``kneel-2019``) as its folder
    in the cache (:func:`cache_root`), anything else unchanged (the loader says what is wrong with it).

    Raises:
        ModelNotInstalledError: ``model`` names a known model that has not been fetched; the message gives the
            command that fetches it.
    """
    path = Path(model)
    if path.exists() or isinstance(model, Path):
        return path
    name = str(model)
    if get_source(name) is None:
        return path
    found = installed(name)
    if found is None:
        source = MODELS[name]
        raise ModelNotInstalledError(
            f"model {name!r} is not installed in {model_folder(name)}: fetch it with 'kneel models fetch {name}' "
            f"(with the archive at hand: 'kneel models fetch {name} --from {source.archive_name}'; a model fetched "
            f"into another cache is found with {CACHE_ENV}=DIR)"
        )
    return found.folder


def terms_notice(folder: str | os.PathLike[str]) -> str | None:
    """The first paragraph of the model folder's ``LICENSE.txt`` (terms and citation), or ``None`` without one."""
    try:
        text = (Path(folder) / TERMS_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    notice = text.strip().split("\n\n", 1)[0].strip()
    return notice or None
