"""HTTP service for landmark prediction (``kneel serve``): FastAPI app in :mod:`kneel.service.app`."""

from __future__ import annotations

from kneel.service.server import serve

__all__ = ["serve"]
