"""Whether a stage's networks were trained on mirrored images: mirror test-time augmentation is only valid then.

A network trained with horizontal flips (indices keep their anatomical meaning, as in the reference's recipe) gives
the same landmarks for an ROI and, mirrored back, for its mirror image. One trained without flips (kneel's tiny and
small high-cost presets: every ROI reaches it as a right knee) reads a mirrored ROI as a right knee too, so its
mirrored-back landmarks swap medial and lateral, and their mean with the direct ones collapses the knee.

Where the answer is written: ``extra["mirror_augmentation"]`` in each fold's ``config.json`` (``kneel train`` and
``kneel convert-snapshot`` write it), else ``augment.flip_p`` in the stage's ``config.resolved.yaml`` (models trained
before the key existed), else unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MIRROR_KEY", "augment_mirrors", "trained_with_mirroring"]

MIRROR_KEY = "mirror_augmentation"


def augment_mirrors(augment: dict[str, Any] | None) -> bool:
    """Whether a training config's ``augment`` section mirrors images (``None``: no augmentation at all)."""
    if augment is None:
        return False
    from kneel.data.augment import AugmentationConfig

    flip_p = augment.get("flip_p", AugmentationConfig().flip_p)
    return float(flip_p) > 0.0


def trained_with_mirroring(configs: Sequence[Any], stage_dir: str | Path | None = None) -> bool | None:
    """``True``/``False`` when the fold configs (or the stage's resolved training config) say; ``None`` if unknown.

    Any fold trained without mirroring makes the answer ``False`` (the ensemble's mean would mix in its swap).
    """
    answers = [(getattr(c, "extra", None) or {}).get(MIRROR_KEY) for c in configs]
    known = [bool(a) for a in answers if a is not None]
    if known:
        return all(known)
    resolved = Path(stage_dir) / "config.resolved.yaml" if stage_dir is not None else None
    if resolved is None or not resolved.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "augment" not in data:
        return None
    augment = data["augment"]
    return augment_mirrors(augment if isinstance(augment, dict) or augment is None else {})
