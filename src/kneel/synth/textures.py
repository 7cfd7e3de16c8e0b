"""Trabecular texture: one fixed tile of band-passed, vertically elongated noise, shared by every knee.

The tile is built once per process from a fixed seed, so every worker process sees the same texture and a cohort
does not depend on which worker rendered which film; each knee reads it at its own random offset.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["trabecular_tile", "texture_window"]

_TILE_SHAPE = (2048, 1024)
_TILE_SEED = 20190727


@functools.lru_cache(maxsize=1)
def trabecular_tile() -> np.ndarray:
    """Zero-mean, unit-sd float32 texture (rows, cols): fine vertical streaks (~2 x 6 px) plus coarser blobs."""
    rng = np.random.default_rng(_TILE_SEED)
    rows, cols = _TILE_SHAPE
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]

    def gauss(sx: float, sy: float) -> np.ndarray:
        # Transfer function of a Gaussian blur; filtering in the Fourier domain keeps the tile seamless.
        return np.exp(-2.0 * np.pi**2 * ((sx * fx) ** 2 + (sy * fy) ** 2))

    white = np.fft.rfft2(rng.standard_normal(_TILE_SHAPE))
    other = np.fft.rfft2(rng.standard_normal(_TILE_SHAPE))
    band = np.fft.irfft2(white * (gauss(0.7, 1.8) - gauss(4.0, 4.0)), s=_TILE_SHAPE)
    blobs = np.fft.irfft2(other * (gauss(2.5, 2.5) - gauss(12.0, 12.0)), s=_TILE_SHAPE)
    tex = band / band.std() + 0.25 * blobs / blobs.std()
    tex = (tex - tex.mean()) / tex.std()
    return np.ascontiguousarray(tex, dtype=np.float32)


def texture_window(rows: int, cols: int, offset: tuple[int, int]) -> np.ndarray:
    """A ``rows`` x ``cols`` window of the tile starting at ``offset`` (wrapping around its borders)."""
    tile = trabecular_tile()
    th, tw = tile.shape
    r_idx = (np.arange(rows) + offset[0]) % th
    c_idx = (np.arange(cols) + offset[1]) % tw
    return tile[np.ix_(r_idx, c_idx)]
