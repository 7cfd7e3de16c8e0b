"""Text cells that a spreadsheet would run as a formula, made safe and back again (no pandas: the predict path).

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a file name, or a DICOM string such as a
UID, is under outside control) is written with a leading ``'`` (OWASP's advice); a cell that starts with ``'`` gets
one more, so a reader takes exactly one off and every value reads back as written.
"""

from __future__ import annotations

__all__ = ["spreadsheet_safe", "from_spreadsheet_safe"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would take it for a formula (or it starts with ``'``)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def from_spreadsheet_safe(text: str) -> str:
    """The value :func:`spreadsheet_safe` was given."""
    return text[1:] if text.startswith("'") else text
