"""The HTTP service: the reference's bilateral endpoint, a richer ``/v1/predict``, health and OpenAPI docs.

* ``POST /kneel/predict/bilateral`` ``{"dicom": "<base64>"}`` -> ``{"R": [[x, y] x 16], "L": [...]}``: the reference's
  endpoint (reference §7.2 item 8), so existing clients such as DeepKnee keep working. Original-image pixels,
  rounded to integers like the reference's outputs; the film is split in two halves like the reference's. A knee
  that is not there is ``null``, and a file without a knee gives ``{"R": null, "L": null}`` (what the reference
  returns when it finds nothing), status 200; the headers ``X-Kneel-Status`` (``ok``/``no_knee``) and
  ``X-Kneel-Reason`` say why.
* ``POST /v1/predict`` ``{"dicom": "<base64>", "knees": "auto"}`` -> the full result: ``status`` (``ok``/``no_knee``)
  and ``reason``, pixels (float), millimetres, uncertainty per landmark, quality flag per knee, the presence decision
  per knee (``presence``), missing knees and warnings.

Both take ``"force": true`` to skip the knee presence decision (:mod:`kneel.inference.presence`), as
``kneel predict --force`` does; ``kneel serve --force`` makes it the default.
* ``GET /health``: model and settings. ``GET /docs``: interactive OpenAPI documentation.

Both read the body as JSON whatever its Content-Type (the reference's Flask endpoint did; DeepKnee's broker sends
``application/x-www-form-urlencoded``).

Errors are JSON ``{"detail": ...}`` (documented in the OpenAPI schema): 400 not JSON (``NaN`` is not JSON) or
malformed base64, 413 request too large, 415 not a DICOM file, 422 a DICOM that cannot be used (no or implausible
spacing, undecodable pixels, blank) or a request of the wrong shape (the input is never echoed), 503 busy (with
``Retry-After``): at most ``max_active`` requests are at work and ``max_queue`` wait, body unread
(:class:`~kneel.service.guards.AdmissionLimit`), so memory does not grow with the number of clients. The service
never dies on an input; inference runs in a worker thread, one request at a time per model.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kneel import __version__
from kneel.inference.pipeline import Predictor, Preparer
from kneel.inference.presence import KneesMode
from kneel.io.errors import NotDicomError, RadiographError
from kneel.io.radiograph import without_override_hint
from kneel.service.defaults import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_BYTES
from kneel.service.guards import (
    ERROR_RESPONSES,
    AdmissionLimit,
    install_error_handlers,
    json_body,
    request_body_schema,
)

__all__ = ["create_app", "DEFAULT_MAX_REQUEST_BYTES", "BodySizeLimit"]


class DicomRequest(BaseModel):
    """A DICOM file, base64-encoded (standard alphabet, padding required)."""

    dicom: str = Field(description="the DICOM file's bytes, base64-encoded")
    force: bool | None = Field(
        None, description="skip the knee presence decision (landmarks whatever the tags and image show)"
    )


class PredictRequest(DicomRequest):
    knees: Literal["auto", "both", "R", "L"] = Field("auto", description="knees to predict")
    measurements: bool = Field(
        False, description="add each knee's measurements (kneel.measure: joint-space widths, angles) with uncertainties"
    )


class BilateralResponse(BaseModel):
    R: list[list[int]] | None = Field(description="16 (x, y) original-pixel positions of the right knee, T0..F15")
    L: list[list[int]] | None = Field(description="16 (x, y) original-pixel positions of the left knee, T0..F15")


class BodySizeLimit:
    """ASGI middleware: 413 when the declared or streamed request body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        # Read the body here (at most max_bytes are held), so an oversize chunked upload is refused with 413
        # before the application parses anything; then replay it to the application.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            received += len(body)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request larger than {self.max_bytes} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _decode_base64(text: str) -> bytes:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "'dicom' is not valid base64") from None
    if not data:
        raise HTTPException(400, "'dicom' is empty")
    return data


def _header_text(text: str, limit: int = 500) -> str:
    """One line of printable ASCII for an HTTP header (reasons may quote DICOM strings)."""
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in " ".join(text.split()))
    return clean[:limit]


def _looks_like_dicom(data: bytes) -> bool:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    if len(data) >= 8:
        return int.from_bytes(data[0:2], "little") in (2, 8) or int.from_bytes(data[0:2], "big") in (2, 8)
    return False


class _Service:
    """The predictor plus one preparer per knees mode; requests are served one at a time."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.lock = threading.Lock()
        base = predictor.preparer
        self.force = base.force
        self.preparers = {
            (mode, force): Preparer(
                base.lc,
                base.hc,
                knees=mode,
                presence=base.presence,
                reference_geometry=base.reference_geometry,
                force=force,
            )  # fmt: skip
            for mode in KneesMode
            for force in (False, True)
        }

    def predict(self, data: bytes, knees: KneesMode, force: bool | None = None) -> Any:
        if not _looks_like_dicom(data):
            raise HTTPException(415, "not a DICOM file (no 'DICM' marker and no DICOM tags at the start)")
        preparer = self.preparers[(knees, self.force if force is None else bool(force))]
        fd, name = tempfile.mkstemp(prefix="kneel-", suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            try:
                prepared = preparer.load(name, file="request")  # tags that refuse the file: no_knee, not an error
            except NotDicomError as exc:
                raise HTTPException(415, exc.reason) from None
            except RadiographError as exc:
                # The service reads the spacing from the file only: no advice to pass a flag it does not have.
                raise HTTPException(422, f"unusable DICOM: {without_override_hint(exc.reason)}") from None
            with self.lock:
                return self.predictor.predict_prepared([prepared])[0]
        finally:
            Path(name).unlink(missing_ok=True)


def create_app(
    predictor: Predictor,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_active: int = DEFAULT_MAX_ACTIVE,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> FastAPI:
    """The FastAPI application serving ``predictor`` (see the module docstring for the endpoints).

    Args:
        max_request_bytes: larger requests are answered 413.
        max_active: prediction requests at work at once (read, prepared, predicted).
        max_queue: more requests waiting, their bodies unread; beyond that 503 with ``Retry-After``.
    """
    service = _Service(predictor)
    app = FastAPI(
        title="kneel",
        version=__version__,
        description="Anatomical landmarks (16 per knee) in bilateral knee radiographs (KNEEL re-implementation).",
    )

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        return {
            "status": "ok",
            "version": __version__,
            "model": predictor.model_dir,
            "settings": predictor.settings,
            "max_request_bytes": max_request_bytes,
            "max_active": max_active,
            "max_queue": max_queue,
        }

    @app.post("/kneel/predict/bilateral", response_model=BilateralResponse, responses=ERROR_RESPONSES,
              openapi_extra=request_body_schema(DicomRequest))  # fmt: skip
    async def predict_bilateral(
        response: Response, request: DicomRequest = Depends(json_body(DicomRequest))
    ) -> dict[str, Any]:
        """The reference's endpoint: both halves, integer original-image pixels, T0..T8 then F9..F15; ``null`` for
        a knee that is not there (``X-Kneel-Status`` / ``X-Kneel-Reason`` headers say why)."""
        data = _decode_base64(request.dicom)
        result = await run_in_threadpool(service.predict, data, KneesMode.BOTH, request.force)
        out: dict[str, Any] = {"R": None, "L": None}
        for knee in result:
            out[knee.side.value] = [[int(round(x)), int(round(y))] for x, y in knee.landmarks_px]
        response.headers["X-Kneel-Status"] = result.status
        if result.reason:
            response.headers["X-Kneel-Reason"] = _header_text(result.reason)
        return out

    @app.post("/v1/predict", responses=ERROR_RESPONSES, openapi_extra=request_body_schema(PredictRequest))
    async def predict_v1(request: PredictRequest = Depends(json_body(PredictRequest))) -> dict[str, Any]:
        """``status`` (``ok``/``no_knee``) and ``reason``; landmarks in pixels and mm, per-landmark uncertainty,
        quality flags, the presence decision per knee, warnings."""
        data = _decode_base64(request.dicom)
        result = await run_in_threadpool(service.predict, data, KneesMode.parse(request.knees), request.force)
        body = result.to_dict()
        body.pop("path", None)
        body.pop("file", None)
        if request.measurements:
            from kneel.measure import measure_prediction

            body["measurements"] = await run_in_threadpool(measure_prediction, result)
        return body

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    # Outermost (added last): a request waits for its place before its body is read.
    paths = ("/kneel/predict/bilateral", "/v1/predict")
    app.add_middleware(AdmissionLimit, paths=paths, max_active=max_active, max_queue=max_queue)
    return app
