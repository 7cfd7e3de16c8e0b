"""Run the review app with uvicorn on a local address."""

from __future__ import annotations

import ipaddress
import os
import sys

from kneel.errors import require_extra

__all__ = ["serve_review", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.x.x.x, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_review(
    pred_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    images: str | os.PathLike[str] | None = None,
    gt: str | os.PathLike[str] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the review app over ``pred_dir`` on ``host:port`` until interrupted (prints its address first).

    Args:
        pred_dir: the ``--out`` folder of ``kneel predict``.
        host: address to listen on; anything but a loopback address lets other machines read the films and change
            the corrections (a warning says so).
        images: folder to find the images in when they moved since ``kneel predict``.
        gt: ground truth to show beside the predictions.
    """
    require_extra("serve", ("fastapi", "uvicorn"), "kneel review")
    import uvicorn

    from kneel.review.app import create_app
    from kneel.review.folder import ReviewFolder

    folder = ReviewFolder(pred_dir, images=images, gt=gt)
    loopback = is_loopback(host)
    app = create_app(folder, loopback=loopback)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if not loopback:
        print(f"kneel review: warning: listening on {host}: anyone who can reach it can see the films and change "
              "the corrections", file=sys.stderr)  # fmt: skip
    listing = folder.film_list()
    progress = listing["progress"]
    print(f"kneel review: {len(folder.films)} films, {progress['reviewed']}/{progress['total']} knees reviewed; "
          f"corrections in {folder.store.path}", flush=True)  # fmt: skip
    print(f"kneel review: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, workers=1)
