"""The review web app: a JSON API over a :class:`~kneel.review.folder.ReviewFolder` and the single-page UI.

Routes (all JSON errors are ``{"detail": ...}``):

* ``GET /``: the page (``static/index.html``); ``GET /static/...``: its scripts and styles (shipped in the package).
* ``GET /api/health``: ``{"ok": true, "films": N}``.
* ``GET /api/films``: every film (id, file, status, reason, knees with quality, largest radius and review status),
  uncertain knees first, and the progress ``{"reviewed", "total"}`` (knees).
* ``GET /api/films/{id}``: one film: image shape and spacing, per knee (``R``, ``L``) the prediction, its
  uncertainty radii, the saved review and its ``version`` (0: never saved), the ground truth (``--gt``).
* ``GET /api/films/{id}/film.png?max_side=N``: the whole film (:func:`~kneel.review.render.film_view`).
* ``GET /api/films/{id}/knee.png?cx=&cy=&mm=&size=&low=&high=``: a knee view centred on ``(cx, cy)`` (original
  pixels) at ``mm`` millimetres per view pixel (:func:`~kneel.review.render.knee_view`), windowed to the
  ``low``-``high`` percentiles. Both pictures carry their transform in the ``X-Kneel-View`` header (JSON
  ``{"sx", "sy", "tx", "ty", "width", "height"}``: ``u = sx * x + tx``, ``v = sy * y + ty``).
* ``PUT /api/films/{id}/knees/{side}`` ``{"base_version": V, "status": S, "landmarks_px": [[x, y] x 16] | null}``:
  save the knee (:meth:`~kneel.review.store.CorrectionStore.save`); 200 with the saved review, 409 when ``V`` is not
  the knee's version any more (another tab saved it; the body holds the current review), 422 for an unknown status,
  a point off the image, NaN or a wrong number of landmarks, 404 for an unknown film or side, 507 when the folder
  cannot be written (read-only, disk full: the previous file is kept).

Only images of the prediction folder's films are read (looked up by id; no path comes from a client). When bound to
a loopback address, requests must name a loopback host (no DNS rebinding from web pages).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from kneel.errors import OutputError
from kneel.io.errors import RadiographError
from kneel.review.folder import SIDES, Film, ReviewFolder
from kneel.review.render import RadiographCache, encode_png, film_view, knee_view, render_view
from kneel.review.store import STATUSES, CorrectionError, VersionConflict
from kneel.service.guards import install_error_handlers

__all__ = ["create_app", "static_dir", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def static_dir() -> Path:
    """The folder of the page, its scripts and styles, inside the installed package."""
    return Path(str(resources.files("kneel.review") / "static"))


class KneeUpdate(BaseModel):
    """A knee's new review, made on version ``base_version`` of it."""

    model_config = ConfigDict(extra="forbid")

    base_version: int = Field(ge=0, description="the knee's version the change was made on (0: never saved)")
    status: Literal[STATUSES] = Field(description="accepted, corrected, flagged, absent or unreviewed")  # type: ignore[valid-type]
    landmarks_px: list[tuple[FiniteFloat, FiniteFloat]] | None = Field(
        default=None, description="16 [x, y] points in original-image pixels (null for an absent knee)"
    )


def _no_store(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code, headers={"Cache-Control": "no-store"})


def _png(picture_bytes: bytes, view: dict[str, Any]) -> Response:
    headers = {"X-Kneel-View": json.dumps(view), "Cache-Control": "no-store"}
    return Response(picture_bytes, media_type="image/png", headers=headers)


def create_app(folder: ReviewFolder, *, loopback: bool = True) -> FastAPI:
    """The app over ``folder``; ``loopback``: accept only requests addressed to a loopback host name."""
    app = FastAPI(title="kneel review", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    if loopback:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_HOSTS))
    install_error_handlers(app)  # 422 without echoing the input (a NaN there would break the JSON encoder)
    cache = RadiographCache()
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    def film_of(film_id: str) -> Film:
        film = folder.films.get(film_id)
        if film is None:
            raise HTTPException(404, f"no film {film_id!r} in this prediction folder")
        return film

    def image_of(film: Film):  # noqa: ANN202
        if film.image_path is None:
            raise HTTPException(404, f"{film.file}: image not found (moved? start kneel review with --images DIR)")
        try:
            image = cache.get(film.image_path, film.spacing)
        except RadiographError as exc:
            raise HTTPException(422, f"{film.file}: {exc.reason}") from None
        if film.shape is not None and tuple(image.shape) != tuple(film.shape):
            raise HTTPException(409, f"{film.file}: the image is {image.shape[1]}x{image.shape[0]} now, it was "
                                     f"{film.shape[1]}x{film.shape[0]} when predicted")  # fmt: skip
        return image

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/health")
    def health() -> JSONResponse:
        return _no_store({"ok": True, "films": len(folder.films), "folder": str(folder.root)})

    @app.get("/api/films")
    def films() -> JSONResponse:
        return _no_store(folder.film_list())

    @app.get("/api/films/{film_id}")
    def film_detail(film_id: str) -> JSONResponse:
        return _no_store(folder.detail(film_of(film_id)))

    @app.get("/api/films/{film_id}/film.png")
    def film_picture(film_id: str, max_side: Annotated[int, Query(ge=64, le=4096)] = 1200) -> Response:
        film = film_of(film_id)
        image = image_of(film)
        view = film_view(image.shape, max_side)
        return _png(encode_png(render_view(image, view)), view.to_dict())

    @app.get("/api/films/{film_id}/knee.png")
    def knee_picture(
        film_id: str,
        cx: float,
        cy: float,
        mm: Annotated[float, Query(ge=0.01, le=5.0, description="millimetres per view pixel")] = 0.3,
        size: Annotated[int, Query(ge=32, le=2048)] = 512,
        low: Annotated[float, Query(ge=0.0, le=100.0)] = 1.0,
        high: Annotated[float, Query(ge=0.0, le=100.0)] = 99.0,
    ) -> Response:
        film = film_of(film_id)
        image = image_of(film)
        rows, cols = image.shape
        if not (math.isfinite(cx) and math.isfinite(cy)) or not (-cols <= cx <= 2 * cols and -rows <= cy <= 2 * rows):
            raise HTTPException(422, f"view centre ({cx}, {cy}) is not near the {cols}x{rows} image")
        if not low < high:
            raise HTTPException(422, f"low ({low}) must be below high ({high})")
        spacing = film.spacing if film.spacing is not None and all(map(math.isfinite, film.spacing)) else (1.0, 1.0)
        view = knee_view((cx, cy), spacing, mm, size)
        return _png(encode_png(render_view(image, view, low, high)), view.to_dict())

    @app.put("/api/films/{film_id}/knees/{side}")
    def save_knee(film_id: str, side: str, update: KneeUpdate) -> JSONResponse:
        film = film_of(film_id)
        if side not in SIDES:
            raise HTTPException(404, f"no knee side {side!r} (R or L)")
        if film.shape is None or film.spacing is None:
            raise HTTPException(422, f"{film.file}: no prediction for this film (status {film.status}): nothing to "
                                     "correct")  # fmt: skip
        try:
            review = folder.store.save(
                film.file,
                side,
                status=update.status,
                landmarks_px=update.landmarks_px,
                base_version=update.base_version,
                shape=film.shape,
                spacing=film.spacing,
                predicted_px=film.predicted(side),
            )
        except VersionConflict as exc:
            current = folder.store.get(film.file, side)
            return _no_store({"detail": str(exc), "current": None if current is None else current.to_dict()}, 409)
        except CorrectionError as exc:
            raise HTTPException(422, exc.reason) from None
        except OutputError as exc:  # read-only folder, disk full: say so; the previous file is intact
            raise HTTPException(507, f"not saved: {exc}") from None
        progress = folder.film_list()["progress"]
        return _no_store({"review": review.to_dict(), "version": review.version, "progress": progress})

    return app
