"""The project's error types: each carries the file (if any) and a reason a user can act on."""

from __future__ import annotations

from pathlib import Path

__all__ = ["KneelError", "ConfigError", "ModelError"]


class KneelError(Exception):
    """Base of every error kneel raises on purpose; the CLI prints it as one line (``--debug`` for the traceback)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.reason = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class ConfigError(KneelError):
    """A configuration file or override is invalid."""


class ModelError(KneelError):
    """A model directory, snapshot or weight file is missing or does not match the architecture."""
