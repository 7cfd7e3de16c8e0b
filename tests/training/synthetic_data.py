"""A tiny prepared-data folder (the layout of ``kneel prepare``) with learnable synthetic knees, for fast tests.

Each high-cost ROI shows a bright femur above and a bright tibia below a dark joint space whose edges pass through
the 16 landmarks; each low-cost image shows two such knees, one per half. Shapes and positions vary per knee, so a
network has to look at the image to find the landmarks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kneel.data.folds import make_folds, write_folds
from kneel.data.layout import to_json, write_metadata
from kneel.geometry import Affine

ROI = 466
LC_W, LC_H = 320, 240


def _shape(rng: np.random.Generator, centre: tuple[float, float], scale: float) -> np.ndarray:
    """16 landmarks (T0-T8 along the tibial plateau, F9-F15 along the condyles) around ``centre``."""
    cx, cy = centre
    tx = np.linspace(-1.0, 1.0, 9)
    ty = 0.12 * np.abs(tx) ** 2 + rng.normal(0, 0.02, 9)
    fx = np.linspace(-0.95, 0.95, 7)
    fy = -0.25 - 0.15 * (1 - fx**2) + rng.normal(0, 0.02, 7)
    pts = np.concatenate([np.stack([tx, ty], 1), np.stack([fx, fy], 1)])
    pts = pts - pts[4]
    return pts * scale + np.array([cx, cy])


def _draw_knee(img: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape
    tib = pts[:9]
    fem = pts[9:]
    width = tib[-1, 0] - tib[0, 0]
    bottom = np.array([[tib[-1, 0], min(h - 1, tib[-1, 1] + width)], [tib[0, 0], min(h - 1, tib[0, 1] + width)]])
    cv2.fillPoly(img, [np.round(np.concatenate([tib, bottom])).astype(np.int32)], int(rng.integers(150, 200)))
    top = np.array([[fem[-1, 0], max(0, fem[-1, 1] - width)], [fem[0, 0], max(0, fem[0, 1] - width)]])
    cv2.fillPoly(img, [np.round(np.concatenate([fem, top])).astype(np.int32)], int(rng.integers(170, 230)))


def make_prepared_data(root: Path, n_subjects: int = 10, n_folds: int = 5, seed: int = 0) -> Path:
    """Write ``root/{lc,hc}/images``, ``metadata.csv`` and ``root/folds.csv``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for stage in ("lc", "hc"):
        (root / stage / "images").mkdir(parents=True, exist_ok=True)
    lc_rows, hc_rows, ids, kls = [], [], [], []
    for i in range(n_subjects):
        subject = 9000000 + i
        lc = (rng.normal(30, 8, (LC_H, LC_W))).clip(0, 255).astype(np.uint8)
        for side in ("R", "L"):
            kl = int(rng.integers(0, 5))
            half_x0 = 0 if side == "R" else LC_W // 2
            centre_lc = (half_x0 + LC_W / 4 + rng.uniform(-25, 25), LC_H / 2 + rng.uniform(-40, 40))
            pts_lc = _shape(rng, centre_lc, rng.uniform(30, 40))
            _draw_knee(lc, pts_lc, rng)
            roi = rng.normal(30, 8, (ROI, ROI)).clip(0, 255).astype(np.uint8)
            centre_hc = (ROI // 2 + rng.uniform(-30, 30), ROI // 2 + rng.uniform(-30, 30))
            pts_hc = _shape(rng, centre_hc, rng.uniform(110, 140))
            _draw_knee(roi, pts_hc, rng)
            roi = cv2.GaussianBlur(roi, (0, 0), 1.5)
            cv2.imwrite(str(root / "hc" / "images" / f"{subject}_{side}.png"), roi)
            common = {
                "subject_id": subject,
                "side": side,
                "kl": kl,
                "source": f"synthetic/{subject}.dcm",
                "source_spacing_row_mm": 0.15,
                "source_spacing_col_mm": 0.15,
                "landmarks_original": to_json(pts_lc / 0.15),
            }
            hc_rows.append(
                {
                    **common,
                    "image": f"images/{subject}_{side}.png",
                    "width": ROI,
                    "height": ROI,
                    "spacing_mm": 0.3,
                    "centre_x": pts_hc[4, 0],
                    "centre_y": pts_hc[4, 1],
                    "landmarks": to_json(pts_hc),
                    "transform": to_json(Affine.identity()),
                }
            )
            lc_rows.append(
                {
                    **common,
                    "image": f"images/{subject}.png",
                    "width": LC_W,
                    "height": LC_H,
                    "spacing_mm": 1.0,
                    "centre_x": pts_lc[4, 0],
                    "centre_y": pts_lc[4, 1],
                    "landmarks": to_json(pts_lc),
                    "transform": to_json(Affine.scaling(0.15)),
                }
            )
            ids.append(subject)
            kls.append(kl)
        cv2.imwrite(str(root / "lc" / "images" / f"{subject}.png"), cv2.GaussianBlur(lc, (0, 0), 1.0))
    write_metadata(pd.DataFrame(lc_rows), root / "lc" / "metadata.csv")
    write_metadata(pd.DataFrame(hc_rows), root / "hc" / "metadata.csv")
    write_folds(make_folds(ids, kls, n_folds=n_folds, seed=seed), root / "folds.csv")
    return root
