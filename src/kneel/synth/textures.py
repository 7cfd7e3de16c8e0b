"""Trabecular texture: one fixed tile of band-passed, vertically elongated noise, shared by every knee.

The tile is built once per process from a fixed seed, so every worker process sees the same texture and a cohort
does not depend on which worker rendered which film; each knee reads it at its own random offset.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["trabecular_tile", "texture_window"]

_TILE_SHAPE = (2048, 1280)
"""Large enough for any knee canvas (<= 0.2 mm pixels, <= 230 mm wide, <= 360 mm of film height): no wrapping."""
_TILE_SEED = 20190727


@functools.lru_cache(maxsize=1)
def trabecular_tile() -> np.ndarray:
    """Zero-mean, unit-sd float32 texture (rows, cols): a mesh of thin, vertically elongated struts plus blobs."""
    rng = np.random.default_rng(_TILE_SEED)
    rows, cols = _TILE_SHAPE
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]

    def gauss(sx: float, sy: float) -> np.ndarray:
        # Transfer function of a Gaussian blur; filtering in the Fourier domain keeps the tile seamless.
        return np.exp(-2.0 * np.pi**2 * ((sx * fx) ** 2 + (sy * fy) ** 2))

    white = np.fft.rfft2(rng.standard_normal(_TILE_SHAPE))
    other = np.fft.rfft2(rng.standard_normal(_TILE_SHAPE))
    band = np.fft.irfft2(white * (gauss(1.2, 2.6) - gauss(5.0, 5.0)), s=_TILE_SHAPE)
    blobs = np.fft.irfft2(other * (gauss(2.5, 2.5) - gauss(12.0, 12.0)), s=_TILE_SHAPE)
    band /= band.std()
    # Zero crossings of band-passed noise form a connected mesh of thin lines, like trabecular struts.
    mesh = np.exp(-((band / 0.45) ** 2))
    tex = (mesh - mesh.mean()) / mesh.std() + 0.35 * band + 0.25 * blobs / blobs.std()
    tex = (tex - tex.mean()) / tex.std()
    return np.ascontiguousarray(tex, dtype=np.float32)


def texture_window(rows: int, cols: int, offset: tuple[int, int]) -> np.ndarray:
    """A ``rows`` x ``cols`` window of the tile at a position chosen by ``offset`` (a view when it fits)."""
    tile = trabecular_tile()
    th, tw = tile.shape
    if rows <= th and cols <= tw:
        r0, c0 = offset[0] % (th - rows + 1), offset[1] % (tw - cols + 1)
        return tile[r0 : r0 + rows, c0 : c0 + cols]
    r_idx = (np.arange(rows) + offset[0]) % th
    c_idx = (np.arange(cols) + offset[1]) % tw
    return tile[np.ix_(r_idx, c_idx)]
