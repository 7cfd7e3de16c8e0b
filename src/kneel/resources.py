"""Files shipped inside the package: the published KNEEL annotations (748 OAI knees) and the training configs.

The annotations are used for the synthetic generator's shapes and for tests. Terms: non-commercial research use; cite
Tiulpin, Melekhov, Saarakkala, "KNEEL: Knee Anatomical Landmark Localization Using Hourglass Networks",
ICCV 2019 Workshops, arXiv:1907.12237 (see ``assets/annotations/README.md``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["annotations_dir", "bf_landmarks_csv", "via_points_csv", "configs_dir", "packaged_config"]


def annotations_dir() -> Path:
    """Folder with the published annotation files shipped in the package."""
    return Path(__file__).resolve().parent / "assets" / "annotations"


def bf_landmarks_csv() -> Path:
    """``bf_landmarks_1_0.3.csv``: 748 knees, 16 landmarks each in the 0.3 mm ROI frame."""
    return annotations_dir() / "bf_landmarks_1_0.3.csv"


def via_points_csv(refined: bool = True) -> Path:
    """The VIA point CSV in original-image pixels (``refined`` after manual correction, else raw BoneFinder)."""
    name = "oai_landmarks_00_via_format_refined.csv" if refined else "oai_landmarks_00_via_format.csv"
    return annotations_dir() / name


def configs_dir() -> Path:
    """Folder with the training configs shipped in the package (``tiny_*.yaml``, ``paper/*.yaml``); the source
    tree's ``configs/`` is a link to it."""
    return Path(__file__).resolve().parent / "assets" / "configs"


def packaged_config(name: str | Path) -> Path | None:
    """The shipped config a name refers to (``tiny_lc.yaml``, ``paper/x.yaml`` or ``configs/paper/x.yaml``; the
    ``.yaml`` suffix may be left out), or None."""
    parts = Path(name).parts
    if parts and parts[0] == "configs":
        parts = parts[1:]
    if not parts or ".." in parts or Path(name).is_absolute():
        return None
    candidate = configs_dir().joinpath(*parts)
    for path in (candidate, candidate.with_name(candidate.name + ".yaml")):
        if path.is_file():
            return path
    return None
