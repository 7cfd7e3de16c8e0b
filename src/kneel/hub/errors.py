"""Errors of fetching and installing published models: each names the file or address and the reason."""

from __future__ import annotations

from kneel.errors import KneelError, ModelError

__all__ = ["FetchError", "ArchiveError", "ModelNotInstalledError"]


class FetchError(KneelError):
    """The release archive could not be downloaded (offline, refused, interrupted, HTTP error)."""


class ArchiveError(KneelError):
    """The release archive is unreadable, unsafe (absolute paths, ``..``, links, devices, too large), lacks a file the
    release must hold, or differs from the pinned sha256."""


class ModelNotInstalledError(ModelError):
    """A model was asked for by name (``kneel-2019``) but has not been fetched into the cache."""
