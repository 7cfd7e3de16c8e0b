"""Which knees to look for in a film, and whether a knee is really there (``knees=auto|both|R|L``).

The rule, in order:

1. **Film type.** A film narrower than :data:`SINGLE_KNEE_MAX_WIDTH_MM` (28 cm; bilateral PA films are 35-43 cm wide)
   is a *single-knee film*: the low-cost model sees the whole image. Its side comes from ``knees=R|L`` if given,
   else the DICOM laterality (ImageLaterality / Laterality), else it is assumed to be ``R`` with a warning.
   ``knees=both`` always splits the film in two halves, like the reference.
2. **Halves.** On a bilateral film, ``both`` predicts both knees whatever the halves show (the reference's
   behaviour), ``R``/``L`` predict only that knee, and ``auto`` predicts each knee that is *present*.
3. **Presence (auto).** A knee is missing when its half has too little content — fewer than
   :data:`MIN_CONTENT_FRACTION` of the pixels of its middle rows (25-75 % of the height) are tissue, i.e. brighter
   than :data:`CONTENT_LEVEL` and below :data:`SATURATED_LEVEL` in the intensity-normalised 0-255 image (a leg is
   soft tissue and bone; an empty half is background; collimation blades and markers are saturated) — or when the
   low-cost folds disagree on its centre by more than ``max_lc_spread_mm`` (:data:`MAX_LC_SPREAD_MM`), or when the
   centre falls outside the half. A missing knee gives a warning in the result, never an error. (On synthetic
   films, empty halves measure 0-1 % tissue and occupied halves 8-67 %, dark films included.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from kneel.landmarks import KneeSide

__all__ = [
    "KneesMode",
    "SINGLE_KNEE_MAX_WIDTH_MM",
    "CONTENT_LEVEL",
    "MIN_CONTENT_FRACTION",
    "MAX_LC_SPREAD_MM",
    "SATURATED_LEVEL",
    "PresenceRule",
    "plan_knees",
    "content_fraction",
]

SINGLE_KNEE_MAX_WIDTH_MM = 280.0
CONTENT_LEVEL = 48
MIN_CONTENT_FRACTION = 0.03
MAX_LC_SPREAD_MM = 25.0
SATURATED_LEVEL = 250


class KneesMode(str, Enum):
    """Which knees to predict: ``auto`` (those present), ``both`` (always both halves), ``R`` or ``L`` (one)."""

    AUTO = "auto"
    BOTH = "both"
    R = "R"
    L = "L"

    @classmethod
    def parse(cls, value: str | KneesMode) -> KneesMode:
        if isinstance(value, KneesMode):
            return value
        text = str(value).strip()
        for mode in cls:
            if text.lower() == mode.value.lower():
                return mode
        raise ValueError(f"knees must be auto, both, R or L, not {value!r}")


@dataclass(frozen=True)
class PresenceRule:
    """Thresholds of the presence rule (module docstring); ``max_lc_spread_mm=inf`` disables the spread test."""

    single_knee_max_width_mm: float = SINGLE_KNEE_MAX_WIDTH_MM
    content_level: int = CONTENT_LEVEL
    min_content_fraction: float = MIN_CONTENT_FRACTION
    max_lc_spread_mm: float = MAX_LC_SPREAD_MM


@dataclass(frozen=True)
class KneePlan:
    """One low-cost job: the knee ``side`` and the image half it lives in (``half=None``: the whole film)."""

    side: KneeSide
    half: KneeSide | None
    check_presence: bool


def plan_knees(
    width_mm: float, mode: KneesMode, laterality: str | None, rule: PresenceRule
) -> tuple[str, list[KneePlan], list[str]]:
    """Decide the film type and which knees to look for: ``(film, plans, warnings)``."""
    warnings: list[str] = []
    if mode is not KneesMode.BOTH and width_mm < rule.single_knee_max_width_mm:
        if mode in (KneesMode.R, KneesMode.L):
            side = KneeSide(mode.value)
        else:
            parsed = _parse_laterality(laterality)
            if parsed is None:
                side = KneeSide.R
                warnings.append(
                    f"single-knee film ({width_mm:.0f} mm wide) without a laterality tag: assumed R (pass knees=R|L)"
                )
            else:
                side = parsed
        missing = KneeSide.L if side is KneeSide.R else KneeSide.R
        if mode is KneesMode.AUTO:
            warnings.append(f"knee {missing.value} missing: single-knee film")
        return "single", [KneePlan(side, None, False)], warnings
    if mode in (KneesMode.R, KneesMode.L):
        side = KneeSide(mode.value)
        return "bilateral", [KneePlan(side, side, False)], warnings
    check = mode is KneesMode.AUTO
    return "bilateral", [KneePlan(KneeSide.R, KneeSide.R, check), KneePlan(KneeSide.L, KneeSide.L, check)], warnings


def _parse_laterality(value: str | None) -> KneeSide | None:
    if not value:
        return None
    try:
        return KneeSide.parse(value)
    except ValueError:
        return None


def content_fraction(
    image_u8: np.ndarray, x0: int, x1: int, level: int, saturated: int = SATURATED_LEVEL, step: int = 4
) -> float:
    """Fraction of tissue pixels in columns ``[x0, x1)`` of the middle half of the rows (25-75 % of the height).

    A tissue pixel is brighter than ``level`` but below ``saturated``: collimation blades and burnt-in markers sit
    at the top of the normalised range and would make an empty half look full. Sampled every ``step`` pixels.
    """
    h = image_u8.shape[0]
    region = image_u8[h // 4 : max(3 * h // 4, h // 4 + 1) : step, max(x0, 0) : max(x1, x0 + 1) : step]
    if region.size == 0:
        return 0.0
    return float(np.count_nonzero((region > level) & (region < saturated))) / float(region.size)
