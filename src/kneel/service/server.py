"""Run the HTTP service with uvicorn: load the model once, then serve requests."""

from __future__ import annotations

import os

from kneel.errors import require_extra
from kneel.service.defaults import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_BYTES

__all__ = ["serve"]


def serve(
    model: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    refine: bool = True,
    reference_geometry: bool = False,
    force: bool = False,
    lc_model: str | os.PathLike[str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_active: int = DEFAULT_MAX_ACTIVE,
    max_queue: int = DEFAULT_MAX_QUEUE,
    log_level: str = "info",
) -> None:
    """Load ``model`` (``MODEL/{lc,hc}/fold_<k>/``) and serve it on ``host:port`` until interrupted.

    ``precision``: ``fp32``, ``bf16``, ``fp16`` or ``int8`` (see :class:`~kneel.inference.Predictor`). ``force``: skip
    the knee presence decision for every request (a request can ask for it too); ``max_active``,
    ``max_queue``: requests at work and waiting (see :func:`kneel.service.app.create_app`); ``lc_model``: the
    low-cost stage when ``model`` holds only the high-cost one (see :class:`~kneel.inference.Predictor`).
    """
    require_extra("serve", ("fastapi", "uvicorn"), "kneel serve")
    import uvicorn

    from kneel.inference.pipeline import Predictor
    from kneel.io.radiograph import quiet_reader_warnings
    from kneel.service.app import create_app

    quiet_reader_warnings()

    predictor = Predictor(model, device=device, precision=precision, refine=refine,
                          reference_geometry=reference_geometry, force=force, lc_model=lc_model)  # fmt: skip
    app = create_app(predictor, max_request_bytes=max_request_bytes, max_active=max_active, max_queue=max_queue)
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, workers=1)
