"""Is there a knee? Which knees to look for in a film, and the evidence that decides whether each one is there.

Every file gets a status: ``ok`` (at least one knee found), ``no_knee`` (the file was read but holds no knee that
kneel will put landmarks on; the reason is one line) or ``failed`` (the file could not be read). Every knee looked
for gets ``ok`` or ``no_knee`` with its reason. The decision, in order (``force=True`` / ``--force`` skips all but the
film type and a finite low-cost centre: landmarks for every knee looked for, as the reference gives them):

1. **DICOM tags.** A Modality that is not a projection radiograph (:data:`REFUSED_MODALITIES`: CT, MR, US, NM, PT,
   MG, ...) or a BodyPartExamined that names another body part (:data:`NOT_KNEE_BODY_PARTS`: CHEST, ABDOMEN,
   HEAD, ...) and no knee or leg word refuses the whole file. Absent or unknown tags refuse nothing.
2. **Film size.** A film smaller than :data:`MIN_FILM_MM` in either direction cannot hold a knee joint (the mean
   published knee's 16 landmarks span 79 x 19 mm).
3. **Film type.** A film narrower than :data:`SINGLE_KNEE_MAX_WIDTH_MM` (28 cm; bilateral PA films are 35-43 cm
   wide) is a *single-knee film*: the low-cost model sees the whole image. Its side comes from ``knees=R|L`` if
   given, else the DICOM laterality (ImageLaterality / Laterality), else it is assumed to be ``R`` with a warning.
   ``knees=both`` always splits the film in two halves, like the reference; ``knees=R|L`` looks for one knee only.
4. **Content** (model-free). A knee is missing when its half (or the whole single-knee film) has too little
   content: fewer than :data:`MIN_CONTENT_FRACTION` of the pixels of its middle rows (25-75 % of the height) are
   tissue, i.e. brighter than :data:`CONTENT_LEVEL` and below :data:`SATURATED_LEVEL` in the intensity-normalised
   0-255 image (an empty half is background; collimation blades and markers are saturated).
5. **Low-cost model.** The knee centre must be finite and inside its half (or the film).
6. **Model evidence** (:class:`PresenceRule`): the low-cost folds must agree on the centre and its heatmap must be
   concentrated, and the 16 high-cost landmarks must form a knee: the mean published knee, fitted to them by a
   similarity transform (:mod:`kneel.inference.knee_shape`), must leave a small residual, with a size within
   :data:`SHAPE_SCALE_RANGE` of the mean knee, a rotation within :data:`MAX_SHAPE_ANGLE_DEG` and the knee centre in
   its half. A network shown no knee still answers with 16 points, but they do not form the two joint contours of a
   real knee. The fold-spread, heatmap-radius and residual limits are calibrated per model from its out-of-fold
   predictions (:mod:`kneel.inference.presence_limits`); without them :data:`MAX_LC_SPREAD_MM`,
   :data:`MAX_SHAPE_RESIDUAL_MM` and no radius limit apply.

A missing knee gives a warning in the result, never an error; the measured separation of every signal is in
``docs/inference.md`` (``python benchmarks/presence.py`` measures it again).
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

import numpy as np

from kneel.errors import option
from kneel.landmarks import KneeSide

__all__ = [
    "KneesMode",
    "STATUS_OK",
    "STATUS_NO_KNEE",
    "STATUS_FAILED",
    "SINGLE_KNEE_MAX_WIDTH_MM",
    "MIN_FILM_MM",
    "CONTENT_LEVEL",
    "MIN_CONTENT_FRACTION",
    "MAX_LC_SPREAD_MM",
    "MAX_SHAPE_RESIDUAL_MM",
    "SHAPE_SCALE_RANGE",
    "MAX_SHAPE_ANGLE_DEG",
    "SATURATED_LEVEL",
    "REFUSED_MODALITIES",
    "NOT_KNEE_BODY_PARTS",
    "KNEE_BODY_PARTS",
    "PresenceRule",
    "KneeEvidence",
    "KneePlan",
    "plan_knees",
    "content_fraction",
    "tag_refusal",
    "size_refusal",
    "header_tags",
]

STATUS_OK = "ok"
STATUS_NO_KNEE = "no_knee"
STATUS_FAILED = "failed"

SINGLE_KNEE_MAX_WIDTH_MM = 280.0
MIN_FILM_MM = 60.0
CONTENT_LEVEL = 48
MIN_CONTENT_FRACTION = 0.03
MAX_LC_SPREAD_MM = 25.0
MAX_SHAPE_RESIDUAL_MM = 3.0
"""Shape-residual limit for models without out-of-fold predictions (else calibrated per model, see below)."""
SHAPE_SCALE_RANGE = (0.6, 1.6)
MAX_SHAPE_ANGLE_DEG = 30.0
SATURATED_LEVEL = 250


def _terms(text: str) -> frozenset[str]:
    return frozenset(text.split())


REFUSED_MODALITIES: dict[str, str] = {
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "US": "ultrasound",
    "NM": "nuclear medicine",
    "PT": "positron emission tomography",
    "MG": "mammography",
    "XA": "X-ray angiography",
    "IVUS": "intravascular ultrasound",
    "OCT": "optical coherence tomography",
    "OP": "ophthalmic photography",
    "OPT": "ophthalmic tomography",
    "ES": "endoscopy",
    "XC": "external-camera photography",
    "SM": "slide microscopy",
    "GM": "general microscopy",
    "IO": "intra-oral radiography",
    "PX": "panoramic dental radiography",
    "BMD": "bone densitometry",
    "SEG": "a segmentation",
    "RTDOSE": "a radiotherapy dose",
    "RTIMAGE": "a radiotherapy image",
    "RTSTRUCT": "a radiotherapy structure set",
    "RTPLAN": "a radiotherapy plan",
    "SR": "a structured report",
    "ECG": "an electrocardiogram",
}
"""DICOM Modality values that are never a knee radiograph (CR, DX, RG, OT and absent pass)."""

NOT_KNEE_BODY_PARTS = _terms(
    "CHEST THORAX LUNG LUNGS HEART BREAST ABDOMEN PELVIS HEAD BRAIN SKULL FACE NECK SPINE CSPINE TSPINE LSPINE SSPINE "
    "WHOLESPINE COCCYX SACRUM SHOULDER CLAVICLE SCAPULA ELBOW ARM UPPERARM FOREARM WRIST HAND FINGER THUMB HIP ANKLE "
    "FOOT TOE HEEL CALCANEUS JAW MANDIBLE TMJ SINUS ORBIT TEETH DENTAL RIB RIBS STERNUM KIDNEY LIVER PANCREAS COLON "
    "BLADDER PROSTATE UTERUS ESOPHAGUS STOMACH"
)
KNEE_BODY_PARTS = _terms(
    "KNEE KNEES LEG LEGS LOWERLIMB LOWEREXTREMITY EXTREMITY EXTREMITIES LIMB FEMUR TIBIA FIBULA PATELLA "
    "GENOU KNIE RODILLA GINOCCHIO JOELHO"
)
"""Words that keep a BodyPartExamined acceptable even when another body part is named too (``HIP KNEE``)."""


class KneesMode(str, Enum):
    """Which knees to look for: ``auto`` (by film type), ``both`` (always both halves), ``R`` or ``L`` (one)."""

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


@dataclass
class KneeEvidence:
    """What kneel measured about one knee it looked for (NaN: not measured); written to the per-image JSON."""

    content: float = float("nan")
    """Fraction of tissue pixels in the knee's half (or the whole single-knee film), middle rows."""
    lc_spread_mm: float = float("nan")
    """RMS distance of the low-cost folds' centres from their mean."""
    lc_radius_mm: float = float("nan")
    """Radius of the low-cost heatmap (RMS over folds): how concentrated the model's answer is (reported only)."""
    hc_spread_mm: float = float("nan")
    """Median over the 16 landmarks of the high-cost folds' spread (reported only)."""
    hc_radius_mm: float = float("nan")
    """Median over the 16 landmarks of the high-cost heatmap radius (reported only)."""
    shape_residual_mm: float = float("nan")
    """RMS residual of the mean knee fitted to the 16 landmarks (:func:`kneel.inference.knee_shape.shape_fit`)."""
    shape_scale: float = float("nan")
    """Size of the landmark set relative to the mean published knee."""
    shape_angle_deg: float = float("nan")
    """Rotation of the landmark set relative to the mean published knee."""

    def as_dict(self) -> dict[str, float | None]:
        return {k: (round(float(v), 4) if math.isfinite(v) else None) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, float | None]) -> KneeEvidence:
        known = {k: float("nan") if v is None else float(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class PresenceRule:
    """Thresholds of the presence decision (module docstring); ``inf`` (or an open range) disables a test."""

    single_knee_max_width_mm: float = SINGLE_KNEE_MAX_WIDTH_MM
    min_film_mm: float = MIN_FILM_MM
    content_level: int = CONTENT_LEVEL
    min_content_fraction: float = MIN_CONTENT_FRACTION
    max_lc_spread_mm: float | None = None
    """``None``: calibrated from the model's out-of-fold predictions (:mod:`kneel.inference.presence_limits`), else
    :data:`MAX_LC_SPREAD_MM`."""
    max_lc_radius_mm: float | None = None
    """``None``: calibrated from the model's out-of-fold predictions, else no limit."""
    max_shape_residual_mm: float | None = None
    """``None``: calibrated from the model's out-of-fold predictions, else :data:`MAX_SHAPE_RESIDUAL_MM`."""
    shape_scale_range: tuple[float, float] = field(default=SHAPE_SCALE_RANGE)
    max_shape_angle_deg: float = MAX_SHAPE_ANGLE_DEG

    def resolved(self, calibrated: dict[str, float] | None = None) -> PresenceRule:
        """This rule with every ``None`` limit taken from ``calibrated`` (a model's limits), else the default."""
        calibrated = calibrated or {}
        defaults = {
            "max_lc_spread_mm": MAX_LC_SPREAD_MM,
            "max_lc_radius_mm": float("inf"),
            "max_shape_residual_mm": MAX_SHAPE_RESIDUAL_MM,
        }
        chosen = {
            name: float(calibrated.get(name, default))
            for name, default in defaults.items()
            if getattr(self, name) is None
        }
        return replace(self, **chosen)

    def limits(self) -> dict[str, float | None]:
        """The limits in force (for the settings recorded with every result)."""
        return {
            "max_lc_spread_mm": _rounded(self.max_lc_spread_mm),
            "max_lc_radius_mm": _rounded(self.max_lc_radius_mm),
            "max_shape_residual_mm": _rounded(self.max_shape_residual_mm),
        }

    def content_reason(self, evidence: KneeEvidence, where: str) -> str | None:
        """Why the knee's image region counts as empty (``None``: it has content)."""
        if evidence.content < self.min_content_fraction:
            return f"{where} is empty ({evidence.content:.1%} tissue pixels in its middle rows)"
        return None

    def lc_reason(self, evidence: KneeEvidence) -> str | None:
        """Why the low-cost evidence says no knee (``None``: it does not)."""
        spread = MAX_LC_SPREAD_MM if self.max_lc_spread_mm is None else self.max_lc_spread_mm
        if evidence.lc_spread_mm > spread:
            return f"the low-cost folds disagree by {evidence.lc_spread_mm:.0f} mm (> {spread:.3g} mm)"
        radius = float("inf") if self.max_lc_radius_mm is None else self.max_lc_radius_mm
        if evidence.lc_radius_mm > radius:
            return (
                f"the low-cost model finds no clear knee centre (heatmap radius {evidence.lc_radius_mm:.0f} mm "
                f"> {radius:.3g} mm)"
            )
        return None

    def hc_reason(self, evidence: KneeEvidence) -> str | None:
        """Why the 16 landmarks do not form a knee (``None``: they do)."""
        lo, hi = self.shape_scale_range
        if not math.isfinite(evidence.shape_residual_mm):
            return "the landmarks are not finite"
        if not lo <= evidence.shape_scale <= hi:
            return (
                f"the landmarks span {evidence.shape_scale:.2f} times the mean knee (outside {lo:g}-{hi:g}): "
                "not a knee joint"
            )
        limit = MAX_SHAPE_RESIDUAL_MM if self.max_shape_residual_mm is None else self.max_shape_residual_mm
        if evidence.shape_residual_mm > limit:
            return (
                f"the landmarks do not form a knee (mean-knee fit residual {evidence.shape_residual_mm:.1f} mm "
                f"> {limit:.2g} mm)"
            )
        if abs(evidence.shape_angle_deg) > self.max_shape_angle_deg:
            return f"the landmarks are rotated {evidence.shape_angle_deg:.0f} degrees from an upright knee"
        return None


@dataclass(frozen=True)
class KneePlan:
    """One low-cost job: the knee ``side`` and the image half it lives in (``half=None``: the whole film)."""

    side: KneeSide
    half: KneeSide | None
    check_presence: bool


def plan_knees(
    width_mm: float, mode: KneesMode, laterality: str | None, rule: PresenceRule, *, force: bool = False
) -> tuple[str, list[KneePlan], list[str]]:
    """Decide the film type and which knees to look for: ``(film, plans, warnings)``.

    Every knee is checked for presence unless ``force``.
    """
    warnings: list[str] = []
    check = not force
    if mode is not KneesMode.BOTH and width_mm < rule.single_knee_max_width_mm:
        if mode in (KneesMode.R, KneesMode.L):
            side = KneeSide(mode.value)
        else:
            parsed = _parse_laterality(laterality)
            if parsed is None:
                side = KneeSide.R
                warnings.append(
                    f"single-knee film ({width_mm:.0f} mm wide) without a laterality tag: assumed R "
                    f"(pass {option('knees', 'R')} or {option('knees', 'L')})"
                )
            else:
                side = parsed
        missing = KneeSide.L if side is KneeSide.R else KneeSide.R
        if mode is KneesMode.AUTO:
            warnings.append(f"knee {missing.value} missing: single-knee film")
        return "single", [KneePlan(side, None, check)], warnings
    if mode in (KneesMode.R, KneesMode.L):
        side = KneeSide(mode.value)
        return "bilateral", [KneePlan(side, side, check)], warnings
    return "bilateral", [KneePlan(KneeSide.R, KneeSide.R, check), KneePlan(KneeSide.L, KneeSide.L, check)], warnings


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


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


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^A-Z]+", text.upper()) if w]


def tag_refusal(modality: str | None, body_part: str | None) -> str | None:
    """Why the DICOM tags say the file is no knee radiograph (one line), or ``None`` (absent tags refuse nothing)."""
    mod = (modality or "").strip().upper()
    if mod in REFUSED_MODALITIES:
        return f"Modality {mod} ({REFUSED_MODALITIES[mod]}) is not a knee radiograph"
    if body_part and body_part.strip():
        words = _words(body_part)
        joined = "".join(words)
        knee = any(w in KNEE_BODY_PARTS for w in words) or any(k in joined for k in ("KNEE", "LOWER", "TIBIA"))
        other = [w for w in words if w in NOT_KNEE_BODY_PARTS] or ([joined] if joined in NOT_KNEE_BODY_PARTS else [])
        if other and not knee:
            return f"BodyPartExamined {body_part.strip()!r} is not a knee"
    return None


def size_refusal(height_mm: float, width_mm: float, rule: PresenceRule) -> str | None:
    """Why the film is too small to hold a knee joint, or ``None``."""
    if min(height_mm, width_mm) < rule.min_film_mm:
        size = f"{width_mm:.0f} x {height_mm:.0f} mm"
        return f"the film is {size}, too small for a knee joint (< {rule.min_film_mm:g} mm)"
    return None


def header_tags(path: str) -> tuple[str | None, str | None]:
    """(Modality, BodyPartExamined) from a DICOM header, ``(None, None)`` when it cannot be read (no pixels read).

    Only regular files are opened: a FIFO would block until a writer comes and a device such as ``/dev/zero`` never
    ends (links are followed).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        modality = ds.get("Modality")
        body_part = ds.get("BodyPartExamined")
    except Exception:  # noqa: BLE001 - only a hint for files that failed to read anyway
        return None, None
    return (str(modality) if modality else None), (str(body_part) if body_part else None)
