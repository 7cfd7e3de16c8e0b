"""The 16 KNEEL landmarks, knee sides and the mirroring convention.

Every knee carries 16 landmarks: 9 tibial (indices 0-8) then 7 femoral (indices 9-15), each running along the joint
line from the lateral to the medial side. Left knees are mirrored to the right-knee orientation before the
high-cost network sees them, so in a network ROI the lateral side (fibula) is always on the image left. Landmark
indices keep their anatomical meaning on both sides: mirroring changes coordinates, never indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = [
    "Landmark",
    "KneeSide",
    "LANDMARKS",
    "NUM_LANDMARKS",
    "TIBIA",
    "FEMUR",
    "CENTRE_LANDMARK",
    "CV_GROUPS",
    "TEST_GROUPS",
    "landmark_names",
]


class KneeSide(str, Enum):
    """The patient's knee. In a PA film the right knee is on the image left (radiological convention)."""

    R = "R"
    L = "L"

    def __str__(self) -> str:
        """``R`` or ``L`` (a ``str`` enum would print ``KneeSide.R``)."""
        return self.value

    @property
    def mirrored(self) -> bool:
        """Whether this knee is mirrored to the right-knee orientation before the high-cost network."""
        return self is KneeSide.L

    @classmethod
    def parse(cls, value: str | KneeSide) -> KneeSide:
        """Accept 'R'/'L' (any case) or a KneeSide."""
        if isinstance(value, KneeSide):
            return value
        text = str(value).strip().upper()
        if text in ("R", "RIGHT"):
            return cls.R
        if text in ("L", "LEFT"):
            return cls.L
        raise ValueError(f"not a knee side: {value!r} (expected 'R' or 'L')")


@dataclass(frozen=True)
class Landmark:
    """One anatomical landmark: its index in the 16-vector, short name, bone ('T' tibia, 'F' femur), description."""

    index: int
    name: str
    bone: str
    description: str


LANDMARKS: tuple[Landmark, ...] = (
    Landmark(0, "T0", "T", "lateral tibial plateau margin"),
    Landmark(1, "T1", "T", "lateral tibial plateau"),
    Landmark(2, "T2", "T", "lateral tibial plateau, inner"),
    Landmark(3, "T3", "T", "lateral tibial spine"),
    Landmark(4, "T4", "T", "intercondylar centre of the tibia (knee joint centre; ROI centre)"),
    Landmark(5, "T5", "T", "medial tibial spine"),
    Landmark(6, "T6", "T", "medial tibial plateau, inner"),
    Landmark(7, "T7", "T", "medial tibial plateau"),
    Landmark(8, "T8", "T", "medial tibial plateau margin"),
    Landmark(9, "F9", "F", "lateral femoral condyle margin"),
    Landmark(10, "F10", "F", "lateral femoral condyle"),
    Landmark(11, "F11", "F", "lateral femoral condyle, inner"),
    Landmark(12, "F12", "F", "intercondylar notch apex"),
    Landmark(13, "F13", "F", "medial femoral condyle, inner"),
    Landmark(14, "F14", "F", "medial femoral condyle"),
    Landmark(15, "F15", "F", "medial femoral condyle margin"),
)

NUM_LANDMARKS = len(LANDMARKS)
TIBIA: tuple[int, ...] = tuple(lm.index for lm in LANDMARKS if lm.bone == "T")
FEMUR: tuple[int, ...] = tuple(lm.index for lm in LANDMARKS if lm.bone == "F")
CENTRE_LANDMARK = 4
"""Tibial landmark 4: the knee joint centre, the low-cost target and the centre of every high-cost ROI."""

CV_GROUPS: dict[str, tuple[int, ...]] = {"tibia": (0, 8), "femur": (9, 15)}
"""Bone groupings of the reference's cross-validation report (end points only)."""
TEST_GROUPS: dict[str, tuple[int, ...]] = {"tibia": (0, 4, 8), "femur": (9, 12, 15)}
"""Bone groupings of the reference's test-set report."""


def landmark_names() -> list[str]:
    """Short names in index order: T0..T8, F9..F15."""
    return [lm.name for lm in LANDMARKS]
