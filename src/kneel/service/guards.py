"""What stands between the network and the model: a bounded queue, a tolerant JSON reader, errors that stay small.

* :class:`AdmissionLimit`: at most ``max_active`` prediction requests at work (read, decoded, prepared, predicted) and
  ``max_queue`` more waiting *before their body is read*; beyond that ``503 Service Unavailable`` with a
  ``Retry-After`` estimate. Memory therefore stays flat in the number of clients: a waiting request holds a
  connection, not its 10-50 MB body and image arrays.
* :func:`json_body`: the request body parsed as JSON whatever its content type (DeepKnee's Node broker posts the
  reference endpoint's JSON as ``application/x-www-form-urlencoded``; the reference, Flask's ``get_json(force=True)``,
  accepts it, and so does ``text/plain`` or no content type). ``NaN`` and ``Infinity`` are not JSON: 400.
* Validation errors (422) list where and what, never the input: a 13 MB ``dicom`` value of the wrong type must not
  come back in the answer (nor can a ``NaN`` there break the JSON encoder into a 500).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from kneel.service.defaults import DEFAULT_MAX_ACTIVE, DEFAULT_MAX_QUEUE

__all__ = [
    "AdmissionLimit",
    "ErrorBody",
    "ERROR_RESPONSES",
    "json_body",
    "request_body_schema",
    "install_error_handlers",
]

Model = TypeVar("Model", bound=BaseModel)


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, in one line (422: a list of where and what)."""

    detail: str | list[dict[str, Any]] = Field(description="the reason")


_BAD_JSON = "the body is not JSON (NaN and Infinity are not JSON), or 'dicom' is not valid base64 or is empty"
_UNUSABLE = (
    "a DICOM file that cannot be used (no or implausible pixel spacing, truncated, undecodable, blank, too small), "
    "or a request of the wrong shape (the input is not echoed)"
)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": _BAD_JSON},
    413: {"model": ErrorBody, "description": "the request is larger than the server's limit (--max-request-mb)"},
    415: {"model": ErrorBody, "description": "'dicom' does not hold a DICOM file"},
    422: {"model": ErrorBody, "description": _UNUSABLE},
    503: {
        "model": ErrorBody,
        "description": "busy: every place at work and in the queue is taken; retry after the seconds the "
        "Retry-After header gives",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    },
}
"""The error answers of the prediction endpoints, for their OpenAPI documentation."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _errors_without_input(errors: Iterable[dict[str, Any]], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Validation errors reduced to where, what and its type: the offending input is never sent back."""
    out = []
    for error in errors:
        loc = [*prefix, *(str(p) if not isinstance(p, int) else p for p in error.get("loc", ()))]
        out.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return out


async def parse_json_body(request: Request, model: type[Model]) -> Model:
    """``model`` from the request body read as JSON, whatever the content type (see the module docstring)."""
    body = await request.body()
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise HTTPException(400, f"the request body is not valid JSON: {reason}"[:300]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, _errors_without_input(exc.errors(), ("body",))) from None


def json_body(model: type[Model]) -> Callable[[Request], Any]:
    """A FastAPI dependency giving ``model`` parsed from the body (:func:`parse_json_body`)."""

    async def dependency(request: Request) -> Model:
        return await parse_json_body(request, model)

    return dependency


def request_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON request body (read by :func:`json_body`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
            "description": "JSON, whatever the Content-Type header says (as the reference's Flask endpoint)",
        }
    }


def install_error_handlers(app: Any) -> None:
    """422 for any other request validation failure, without the input (FastAPI's default echoes it)."""

    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _errors_without_input(exc.errors())}, status_code=422)

    app.add_exception_handler(RequestValidationError, validation_error)


class AdmissionLimit:
    """ASGI middleware: a bounded queue in front of the POST ``paths`` (see the module docstring).

    Counters are plain integers: the event loop runs this in one thread. ``Retry-After`` is the mean time a request
    took (moving average) times the requests ahead, divided by the places at work, at least one second.
    """

    def __init__(self, app: ASGIApp, paths: Iterable[str], max_active: int = DEFAULT_MAX_ACTIVE,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:  # fmt: skip
        if max_active < 1 or max_queue < 0:
            raise ValueError(f"need max_active >= 1 and max_queue >= 0, got {max_active}, {max_queue}")
        self.app = app
        self.paths = frozenset(paths)
        self.max_active = int(max_active)
        self.max_queue = int(max_queue)
        self.active = 0
        self.waiting = 0
        self.mean_seconds = 1.0
        self._places: asyncio.Semaphore | None = None

    def retry_after(self) -> int:
        ahead = self.active + self.waiting + 1
        return max(1, math.ceil(self.mean_seconds * ahead / self.max_active))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.active + self.waiting >= self.max_active + self.max_queue:
            await self._busy(send)
            return
        if self._places is None:
            self._places = asyncio.Semaphore(self.max_active)
        self.waiting += 1
        try:
            await self._places.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        start = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self._places.release()
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * (time.monotonic() - start)

    async def _busy(self, send: Send) -> None:
        seconds = self.retry_after()
        detail = f"busy: {self.active} requests at work and {self.waiting} waiting; retry after {seconds} s"
        response = JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(seconds)})
        await send({"type": "http.response.start", "status": 503, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
