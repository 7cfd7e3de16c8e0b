"""The service's default limits, importable without the ``serve`` extra (FastAPI, uvicorn)."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_MAX_ACTIVE", "DEFAULT_MAX_QUEUE"]

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""64 MiB of JSON: a base64 DICOM of ~48 MB (an uncompressed 16-bit 43 x 43 cm film at 0.1 mm is ~37 MB)."""
DEFAULT_MAX_ACTIVE = 2
"""Requests at work at once: one can be read and prepared while another runs the networks (one model, one lock)."""
DEFAULT_MAX_QUEUE = 16
"""Requests waiting, body unread, for a place at work; more are answered 503 with Retry-After."""
