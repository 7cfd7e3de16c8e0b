"""The project's error types: each carries the file (if any) and a reason a user can act on."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "KneelError",
    "ConfigError",
    "ModelError",
    "OutputError",
    "MissingExtraError",
    "require_extra",
    "option",
    "use_cli_forms",
    "cli_forms",
]

_CLI_FORMS = False


def use_cli_forms(on: bool = True) -> None:
    """Make messages name command-line flags (``--spacing MM``) instead of Python arguments (``spacing=MM``).

    The ``kneel`` command calls this once at start (and passes it on to its worker processes): a process runs either
    the command line or someone's Python code, so the setting is per process.
    """
    global _CLI_FORMS
    _CLI_FORMS = bool(on)


def cli_forms() -> bool:
    """Whether messages name command-line flags (see :func:`use_cli_forms`)."""
    return _CLI_FORMS


def option(name: str, value: str | None = None) -> str:
    """How to set parameter ``name`` in the interface in use: ``--name VALUE`` on the command line, ``name=VALUE``
    in Python (``option("spacing", "MM")``: ``--spacing MM`` or ``spacing=MM``)."""
    if _CLI_FORMS:
        flag = "--" + name.replace("_", "-")
        return flag if value is None else f"{flag} {value}"
    return f"{name}=" if value is None else f"{name}={value}"


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


class OutputError(KneelError):
    """An output cannot be written (read-only folder, disk full, quota): the run stops; finished results are kept."""


class MissingExtraError(KneelError):
    """An optional part of kneel is used but its extra is not installed; the message says which one to install."""


def require_extra(extra: str, modules: tuple[str, ...], what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``pip install 'kneel[extra]'`` when any of ``modules`` is missing."""
    import importlib.util

    missing = []
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)}: pip install 'kneel[{extra}]'")
