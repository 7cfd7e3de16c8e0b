"""Helpers for geometry tests: draw Gaussian dots at landmarks and find them again after a transform."""

from __future__ import annotations

import numpy as np


def dot_image(h: int, w: int, points: np.ndarray, sigma: float = 2.0, amplitudes=None) -> np.ndarray:
    """Float32 image with one Gaussian blob of ``sigma`` px (peak ``amplitude``) at each (x, y) point."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w), np.float64)
    amplitudes = np.ones(len(points)) if amplitudes is None else amplitudes
    for (x, y), a in zip(np.asarray(points, dtype=np.float64), amplitudes, strict=True):
        img += a * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return img.astype(np.float32)


def find_dot(img: np.ndarray, near: np.ndarray | None = None, radius: int = 6) -> np.ndarray:
    """Sub-pixel (x, y) of the blob with the highest peak (or the highest within ``radius`` of ``near``).

    Fits a quadratic to the log-intensity around the peak (exact for a Gaussian blob), after subtracting the local
    background (a low percentile of the surrounding window).
    """
    img = np.asarray(img, dtype=np.float64)
    if near is None:
        iy, ix = np.unravel_index(np.argmax(img), img.shape)
    else:
        cx, cy = (int(round(v)) for v in near)
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, img.shape[0])
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, img.shape[1])
        sub = img[y0:y1, x0:x1]
        iy, ix = np.unravel_index(np.argmax(sub), sub.shape)
        iy, ix = iy + y0, ix + x0
    iy = int(np.clip(iy, 2, img.shape[0] - 3))
    ix = int(np.clip(ix, 2, img.shape[1] - 3))
    r = 3 * radius
    window = img[max(iy - r, 0) : iy + r + 1, max(ix - r, 0) : ix + r + 1]
    background = np.percentile(window, 5)
    # Least-squares 2-D quadratic on the log-intensity of the 5x5 pixels around the peak (a Gaussian is exactly
    # quadratic in log; the fit averages out 8-bit quantisation), keeping pixels above 30 % of the peak.
    ys, xs = np.mgrid[-2:3, -2:3]
    a = img[iy - 2 : iy + 3, ix - 2 : ix + 3] - background
    keep = a > 0.3 * a[2, 2]
    if keep.sum() < 12:  # a narrow blob: the 3x3 neighbourhood determines the quadratic exactly enough
        keep = (np.abs(xs) <= 1) & (np.abs(ys) <= 1)
        a = np.maximum(a, 1e-3 * a[2, 2])
    x, y, la = xs[keep].astype(float), ys[keep].astype(float), np.log(a[keep])
    design = np.column_stack([np.ones_like(x), x, y, x * x, y * y, x * y])
    c = np.linalg.lstsq(design, la, rcond=None)[0]
    hess = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    offset = np.linalg.solve(hess, -c[1:3])
    return np.array([ix + offset[0], iy + offset[1]])


# Mean landmark positions in the 466-px high-cost ROI (reference §1), used to build small prepared-data folders.
MEAN_ROI_LANDMARKS = np.array(
    [
        [99.0, 262.5],
        [140.5, 262.4],
        [181.1, 252.9],
        [214.0, 226.5],
        [233.0, 233.5],
        [253.6, 221.6],
        [277.9, 255.6],
        [319.9, 261.6],
        [362.3, 257.9],
        [107.7, 238.4],
        [145.5, 243.1],
        [187.5, 227.9],
        [230.9, 200.8],
        [275.7, 229.0],
        [319.7, 248.0],
        [363.2, 241.1],
    ]
)


def make_prepared(root, subjects=(101, 102, 103), lc_size=(230, 170), seed=0, sigma=2.5):
    """Write a small prepared-data folder by hand (the layout of ``kneel prepare``) with a dot at every landmark.

    HC: 466x466 ROIs with 16 dots (jittered mean positions); LC: ``lc_size`` (w, h) images at 1 mm with one dot at
    each knee centre (R in the left half, L in the right half). Returns the hc and lc landmark dicts by (subject, side).
    """
    import json
    from pathlib import Path

    import cv2
    import pandas as pd

    from kneel.data.layout import METADATA_COLUMNS, write_metadata

    root = Path(root)
    rng = np.random.default_rng(seed)
    hc_rows, lc_rows, hc_pts, lc_pts = [], [], {}, {}
    ident = json.dumps(np.eye(3).tolist())
    w, h = lc_size
    for n, sid in enumerate(subjects):
        centres = {"R": np.array([w * 0.25 + rng.uniform(-5, 5), h * 0.5 + rng.uniform(-5, 5)])}
        centres["L"] = np.array([w * 0.75 + rng.uniform(-5, 5), h * 0.5 + rng.uniform(-5, 5)])
        lc_lm = {}
        for side in ("R", "L"):
            pts = MEAN_ROI_LANDMARKS + rng.uniform(-3, 3, (16, 2))
            hc_pts[(sid, side)] = pts
            img = np.clip(dot_image(466, 466, pts, sigma=sigma) * 200 + 20, 0, 255).round().astype(np.uint8)
            rel = f"images/{sid}_{side}.png"
            (root / "hc" / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "hc" / rel), img)
            hc_rows.append(_row(sid, side, n % 5, rel, 466, 466, 0.3, pts, ident))
            lc_full = np.tile(centres[side], (16, 1))
            lc_full[:4] -= 20  # other landmarks somewhere else; only index 4 is the target
            lc_lm[side] = lc_full
            lc_pts[(sid, side)] = centres[side]
        img = dot_image(h, w, np.array([centres["R"], centres["L"]]), sigma=sigma)
        img = np.clip(img * 200 + 20, 0, 255).round().astype(np.uint8)
        (root / "lc" / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "lc" / f"images/{sid}.png"), img)
        for side in ("R", "L"):
            lc_rows.append(_row(sid, side, n % 5, f"images/{sid}.png", w, h, 1.0, lc_lm[side], ident))
    write_metadata(pd.DataFrame(hc_rows, columns=METADATA_COLUMNS), root / "hc" / "metadata.csv")
    write_metadata(pd.DataFrame(lc_rows, columns=METADATA_COLUMNS), root / "lc" / "metadata.csv")
    return hc_pts, lc_pts


def _row(sid, side, kl, rel, w, h, spacing, pts, transform):
    import json

    return {
        "subject_id": sid,
        "side": side,
        "kl": kl,
        "image": rel,
        "width": w,
        "height": h,
        "spacing_mm": spacing,
        "source": f"/nowhere/{sid}.dcm",
        "source_spacing_row_mm": spacing,
        "source_spacing_col_mm": spacing,
        "centre_x": float(pts[4][0]),
        "centre_y": float(pts[4][1]),
        "landmarks": json.dumps(np.asarray(pts).tolist()),
        "landmarks_original": json.dumps(np.asarray(pts).tolist()),
        "transform": transform,
    }
