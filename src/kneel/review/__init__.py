"""Review and correct predicted landmarks in the browser, and feed the corrections back into training.

* ``kneel review PRED_DIR``: a local web app (:mod:`kneel.review.app`, served by :func:`serve_review`) over the
  ``--out`` folder of ``kneel predict``; every decision is saved at once into ``PRED_DIR/review/corrections.csv``
  (:mod:`kneel.review.store`).
* ``kneel review export PRED_DIR``: the reviewed knees as a ground-truth landmark table and a VIA CSV
  (:mod:`kneel.review.export`), read by ``kneel evaluate --gt`` and ``kneel prepare --annotations``.

The web parts need the ``serve`` extra (FastAPI, uvicorn); the store and the export need nothing more than kneel.
"""

from __future__ import annotations

from kneel.review.export import ExportSummary, NothingToExportError, export_reviews
from kneel.review.store import (
    CORRECTION_COLUMNS,
    STATUSES,
    CorrectionError,
    CorrectionStore,
    KneeReview,
    VersionConflict,
    corrections_path,
)

__all__ = [
    "CORRECTION_COLUMNS",
    "STATUSES",
    "CorrectionError",
    "CorrectionStore",
    "KneeReview",
    "VersionConflict",
    "corrections_path",
    "ExportSummary",
    "NothingToExportError",
    "export_reviews",
    "serve_review",
]


def serve_review(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """See :func:`kneel.review.server.serve_review` (imported on use: it needs the ``serve`` extra)."""
    from kneel.review.server import serve_review as _serve

    return _serve(*args, **kwargs)
