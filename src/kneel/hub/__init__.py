"""Published models by name: ``kneel models fetch kneel-2019`` and ``--model kneel-2019`` everywhere.

Modules, one job each:

* ``catalog``: the models kneel knows (address, layout of the release archive, pinned sha256, terms and citation);
* ``cache``: the cache folder, what is installed, and name -> folder (:func:`resolve_model`, used by the predictor
  and calibration);
* ``download``: resumable HTTP download with a progress bar (standard library);
* ``archive``: safe extraction (every member checked, the release's files only, ``tarfile``'s data filter);
* ``fetch``: archive -> sha256 check -> extraction -> conversion of both stages -> model folder in the cache.

Example:
    >>> from kneel.hub import fetch_model, resolve_model  # doctest: +SKIP
    >>> fetch_model("kneel-2019", archive="snapshots_release.tar.xz").folder  # doctest: +SKIP
    PosixPath('/home/me/.cache/kneel/models/kneel-2019')
    >>> resolve_model("kneel-2019")  # doctest: +SKIP
    PosixPath('/home/me/.cache/kneel/models/kneel-2019')
"""

from __future__ import annotations

from typing import Any

from kneel.hub.cache import CACHE_ENV, InstalledModel, cache_root, installed, model_folder, resolve_model, terms_notice
from kneel.hub.catalog import MODELS, ModelSource, get_source
from kneel.hub.errors import ArchiveError, FetchError, ModelNotInstalledError

__all__ = [
    "CACHE_ENV",
    "MODELS",
    "ModelSource",
    "InstalledModel",
    "ArchiveError",
    "FetchError",
    "ModelNotInstalledError",
    "cache_root",
    "model_folder",
    "installed",
    "get_source",
    "resolve_model",
    "terms_notice",
    "fetch_model",
]


def fetch_model(name: str, **kwargs: Any):  # noqa: ANN201 (see kneel.hub.fetch.fetch_model)
    """See :func:`kneel.hub.fetch.fetch_model` (imported when called: it needs torch for the conversion)."""
    from kneel.hub.fetch import fetch_model as _fetch

    return _fetch(name, **kwargs)
