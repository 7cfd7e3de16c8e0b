"""From per-landmark uncertainty radii to an uncertainty for every measurement, by Monte Carlo with a fixed seed.

Error model. A landmark's ``uncertainty_mm`` is read as a radius ``r`` at a stated coverage ``c`` (default 0.9):
the true landmark lies within ``r`` of the reported one with probability ``c``. Modelling the landmark's error as an
isotropic 2-D Gaussian (per-axis standard deviation ``sigma``) independent between landmarks, the error's length is
Rayleigh distributed, ``P(|e| <= r) = 1 - exp(-r^2 / (2 sigma^2))``, hence ``sigma = r / sqrt(-2 ln(1 - c))``
(``r / 2.146`` at ``c = 0.9``).

Propagation. ``samples`` perturbed copies of each knee are drawn from that model and measured; a measurement's
uncertainty is the ``c``-quantile of ``|m(sample) - m(reported)|``: a half-width ``u`` such that the true value lies
within ``± u`` of the reported one with probability ``c`` under the model, the same terms as the landmark radius.
Monte Carlo rather than first-order (linearised) propagation because two families are not smooth or not nearly
linear at the scale of landmark errors: the minimum widths switch between contour vertices, and the medial/lateral
width ratio divides by a few millimetres that the errors change by tens of per cent; sampling needs no derivatives
and gives the right (asymmetric, heavier) spread there, and equals first-order propagation where the measurement is
linear (widths: checked by a test).

A sample in which a measurement is undefined counts as infinitely far from the reported value (so the half-width is
infinite, written ``inf``, when more than ``1 - c`` of the samples are undefined: a ratio whose denominator may be
zero, a fixed position that may fall off the femoral contour).

Reproducibility and invariance. One table of standard normal draws (``numpy.random.default_rng(seed)``, shape
``(samples, 16, 2)``) is shared by every knee (common random numbers), and each draw is laid along the knee's own
frame (``u`` along T0->T8, ``v`` toward the femur). So the same landmarks always give the same uncertainty, whatever
else is in the batch, and rotating, translating, mirroring or resampling a film changes no uncertainty at all (not
even by Monte-Carlo noise).

Independence between landmarks is an assumption: errors of neighbouring landmarks of one knee are usually positively
correlated, which makes differences between them (widths, gaps) more precise than this model says and positions
less; treat ``u`` as the model's statement, to be checked against truth (:mod:`kneel.measure.agreement` reports the
share of knees whose true value lies within ``± u``).
"""

from __future__ import annotations

import numpy as np

from kneel.measure.definitions import ANGLE_NAMES, MEASUREMENT_NAMES, knee_frame, measure_canonical

__all__ = ["DEFAULT_COVERAGE", "DEFAULT_SAMPLES", "DEFAULT_SEED", "radius_to_sigma", "propagate"]

DEFAULT_COVERAGE = 0.9
"""Coverage assumed for ``uncertainty_mm`` when the predictions do not state one."""
DEFAULT_SAMPLES = 2000
"""Monte-Carlo samples per knee: the 90 % half-width is then known to about 2 % (its sampling error)."""
DEFAULT_SEED = 0
_UNDEFINED = 1e300
"""Stands for an infinite deviation inside the quantile (interpolating with a true infinity gives NaN)."""
_CHUNK = 8_000
"""Sample-knees measured per vectorised call (bounds memory to a few hundred MB)."""


def radius_to_sigma(radius_mm: np.ndarray, coverage: float | np.ndarray) -> np.ndarray:
    """Per-axis standard deviation of an isotropic 2-D Gaussian whose error length is within ``radius_mm`` with
    probability ``coverage``: ``r / sqrt(-2 ln(1 - c))``."""
    c = np.asarray(coverage, dtype=np.float64)
    if np.any((c <= 0) | (c >= 1)):
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    return np.asarray(radius_mm, dtype=np.float64) / np.sqrt(-2.0 * np.log1p(-c))


def propagate(
    points: np.ndarray,
    radius_mm: np.ndarray,
    coverage: float | np.ndarray = DEFAULT_COVERAGE,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    values: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Half-width at ``coverage`` of every measurement of canonical ``points`` ``(N, 16, 2)`` (mm).

    Args:
        points: canonical landmarks (see :func:`kneel.measure.definitions.canonical_mm`).
        radius_mm: ``(N, 16)`` landmark radii at ``coverage`` (NaN: unknown, the knee's uncertainties are NaN).
        coverage: one value, or ``(N,)`` per knee.
        samples, seed: Monte-Carlo draws per knee and the seed of the shared draw table.
        values: the measurements of ``points`` if already computed.

    Returns:
        name -> ``(N,)`` half-widths, in the measurement's unit.
    """
    p = np.asarray(points, dtype=np.float64)
    n = p.shape[0]
    radius = np.asarray(radius_mm, dtype=np.float64).reshape(n, -1)
    cov = np.broadcast_to(np.asarray(coverage, dtype=np.float64), (n,))
    values = measure_canonical(p) if values is None else values
    out = {name: np.full(n, np.nan) for name in MEASUREMENT_NAMES}
    ok = np.all(np.isfinite(radius), axis=1) & np.all(np.isfinite(p), axis=(1, 2)) & np.isfinite(cov)
    index = np.flatnonzero(ok)
    if index.size == 0 or samples <= 0:
        return out
    z = np.random.default_rng(seed).standard_normal((samples, p.shape[1], 2))
    per_call = max(1, _CHUNK // samples)
    for start in range(0, index.size, per_call):
        idx = index[start : start + per_call]
        knees = p[idx]
        _, e_u, e_v = knee_frame(knees)  # (k, 2) each
        sigma = radius_to_sigma(radius[idx], cov[idx, None])  # (k, 16)
        offsets = z[None, :, :, 0:1] * e_u[:, None, None, :] + z[None, :, :, 1:2] * e_v[:, None, None, :]
        drawn = knees[:, None] + sigma[:, None, :, None] * offsets  # (k, S, 16, 2)
        measured = measure_canonical(drawn.reshape(-1, p.shape[1], 2))
        for name in MEASUREMENT_NAMES:
            dev = measured[name].reshape(idx.size, samples) - values[name][idx, None]
            if name in ANGLE_NAMES:
                dev = 180.0 - np.mod(180.0 - dev, 360.0)
            # A sample where the measurement is undefined (a fixed position off the femoral contour, a closed
            # lateral space under the ratio) lies arbitrarily far from a defined value: it counts as infinitely off,
            # so a half-width is infinite when more than 1 - coverage of the samples are undefined.
            dev = np.where(np.isnan(dev), _UNDEFINED, np.abs(dev))
            defined = np.isfinite(values[name][idx])
            half = np.full(idx.size, np.nan)
            if defined.any():
                rows = zip(dev[defined], cov[idx][defined], strict=True)
                half[defined] = [np.quantile(row, c) for row, c in rows]
            out[name][idx] = np.where(half >= _UNDEFINED / 2, np.inf, half)
    return out
