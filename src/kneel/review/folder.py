"""A ``kneel predict`` output folder seen by a reviewer: films, their knees, predictions, corrections, ground truth.

Films are the radiographs the folder holds a result for (``results/*.json``: status ``ok`` or ``no_knee``) or a
failure record (``failed/*.json``: status ``failed``). Each film has an id, ``<name>-<hash>`` of
:func:`kneel.inference.outputs.result_name`, used in URLs; the image behind an id is the path recorded in its JSON
(or ``--images DIR`` joined with the file key, or with its base name), never a path sent by a client.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneel.errors import ConfigError, option
from kneel.inference.outputs import OutputFolder, result_name
from kneel.inference.presence import STATUS_FAILED
from kneel.inference.results import RadiographPrediction
from kneel.landmarks import NUM_LANDMARKS, KneeSide
from kneel.review.store import REVIEWED, CorrectionStore, KneeReview

__all__ = ["Film", "ReviewFolder", "SIDES"]

SIDES = ("R", "L")


@dataclass
class Film:
    """One radiograph of the folder."""

    id: str
    file: str
    status: str
    """``ok``, ``no_knee`` or ``failed`` (as in ``status.csv``)."""
    reason: str
    image_path: Path | None
    prediction: RadiographPrediction | None = None

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self.prediction is None else self.prediction.shape

    @property
    def spacing(self) -> tuple[float, float] | None:
        return None if self.prediction is None else self.prediction.spacing

    def predicted(self, side: str) -> np.ndarray | None:
        """(16, 2) predicted landmarks of knee ``side`` in original pixels, ``None`` when that knee was not found."""
        if self.prediction is None or KneeSide.parse(side) not in self.prediction.knees:
            return None
        return self.prediction[side].landmarks_px


def _finite(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=np.float64).ravel()]


class ReviewFolder:
    """The films of a prediction folder, their corrections (:class:`CorrectionStore`) and optional ground truth.

    Args:
        pred_dir: the ``--out`` folder of ``kneel predict``.
        images: folder to find the images in instead of the recorded paths (the files were moved).
        gt: a ground-truth table (long table, VIA or bf_landmarks; see :func:`kneel.evaluation.matching.
            read_ground_truth`) to show beside the predictions.
    """

    def __init__(
        self,
        pred_dir: str | os.PathLike[str],
        images: str | os.PathLike[str] | None = None,
        gt: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = Path(pred_dir)
        self.outputs = OutputFolder(self.root)
        if not self.outputs.results.is_dir() and not self.outputs.failed.is_dir():
            raise ConfigError(f"not a kneel predict output folder (no results/ or failed/ in it); give the "
                              f"{option('out')} folder of kneel predict", self.root)  # fmt: skip
        self.images = Path(images) if images is not None else None
        if self.images is not None and not self.images.is_dir():
            raise ConfigError("images folder not found", self.images)
        self.store = CorrectionStore(self.root)
        self.films: dict[str, Film] = {}
        self._load()
        self.truth = self._load_truth(gt) if gt is not None else {}

    # --------------------------------------------------------------------------------------------- loading
    def _image_path(self, key: str, recorded: str | None) -> Path | None:
        if self.images is not None:
            for candidate in (self.images / key, self.images / Path(key).name):
                if candidate.is_file():
                    return candidate
            return None
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        return None

    def _load(self) -> None:
        for path in sorted(self.outputs.failed.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                key = str(data["file"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            image = self._image_path(key, data.get("path"))
            self.films[result_name(key)] = Film(result_name(key), key, STATUS_FAILED, str(data.get("reason", "")),
                                                image)  # fmt: skip
        for prediction in self.outputs.iter_results():  # a result wins over an old failure record
            film_id = result_name(prediction.file)
            image = self._image_path(prediction.file, prediction.path)
            self.films[film_id] = Film(film_id, prediction.file, prediction.status, prediction.reason, image,
                                       prediction)  # fmt: skip

    def _load_truth(self, gt: str | os.PathLike[str]) -> dict[tuple[str, str], np.ndarray]:
        from kneel.evaluation.matching import read_ground_truth

        def spacing_of(file: str) -> tuple[float, float] | None:
            film = self.film_by_key(file)
            return None if film is None else film.spacing

        table = read_ground_truth(gt, spacing_of=spacing_of)
        truth: dict[tuple[str, str], np.ndarray] = {}
        for (file, side), group in table.groupby(["file", "side"], sort=False):
            film = self.film_by_key(str(file))
            if film is None:
                continue
            xy = np.full((NUM_LANDMARKS, 2), np.nan)
            xy[group["landmark"].to_numpy(dtype=int)] = group[["x_px", "y_px"]].to_numpy(dtype=np.float64)
            truth[(film.file, str(side))] = xy
        return truth

    def film_by_key(self, file: str) -> Film | None:
        """The film whose file key is ``file``, else the one with the same base name, else the same stem."""
        for match in (lambda f: f.file, lambda f: Path(f.file).name, lambda f: Path(f.file).name.split(".")[0]):
            wanted = match(Film("", file, "", "", None))
            found = [f for f in self.films.values() if match(f) == wanted]
            if len(found) == 1:
                return found[0]
        return None

    # --------------------------------------------------------------------------------------------- views
    def knee_sides(self, film: Film, reviews: dict[tuple[str, str], KneeReview]) -> list[str]:
        """Sides with a predicted knee or a saved review (a knee added by hand), R first."""
        found = set() if film.prediction is None else {k.side.value for k in film.prediction}
        return [s for s in SIDES if s in found or (film.file, s) in reviews]

    def summary(self, film: Film, reviews: dict[tuple[str, str], KneeReview]) -> dict[str, Any]:
        """What the film list shows of one film."""
        knees = []
        for side in self.knee_sides(film, reviews):
            review = reviews.get((film.file, side))
            knee = film.prediction.knees.get(KneeSide(side)) if film.prediction is not None else None
            uncertainty = None if knee is None else _finite(knee.uncertainty_mm)
            finite = [u for u in uncertainty or [] if u is not None]
            knees.append({
                "side": side,
                "predicted": knee is not None,
                "quality": None if knee is None else knee.quality,
                "max_uncertainty_mm": max(finite) if finite else None,
                "review": "unreviewed" if review is None else review.status,
            })  # fmt: skip
        return {"id": film.id, "file": film.file, "status": film.status, "reason": film.reason,
                "image": film.image_path is not None, "knees": knees}  # fmt: skip

    def film_list(self) -> dict[str, Any]:
        """Every film, uncertain knees first (largest radius first), then the others, no-knee and failed films last;
        with the progress (reviewed knees / knees)."""
        reviews = self.store.load()
        items = [self.summary(f, reviews) for f in self.films.values()]

        def order(item: dict[str, Any]) -> tuple:
            uncertain = any(k["quality"] == "uncertain" for k in item["knees"])
            rank = {"ok": 1, "no_knee": 2, STATUS_FAILED: 3}.get(item["status"], 4)
            radius = max((k["max_uncertainty_mm"] or 0.0 for k in item["knees"]), default=0.0)
            return (0 if uncertain else rank, -radius, item["file"])

        items.sort(key=order)
        knees = [k for item in items for k in item["knees"]]
        return {"films": items, "progress": {"reviewed": sum(k["review"] in REVIEWED for k in knees),
                                             "total": len(knees)}}  # fmt: skip

    def detail(self, film: Film) -> dict[str, Any]:
        """Everything the film view needs: image size and spacing, and per knee the prediction, its uncertainty,
        the saved review and the ground truth."""
        reviews = self.store.load()
        out = self.summary(film, reviews)
        out["shape"] = None if film.shape is None else list(film.shape)
        out["spacing_mm"] = None if film.spacing is None else _finite(film.spacing)
        out["warnings"] = [] if film.prediction is None else list(film.prediction.warnings)
        coverage = None
        per_knee = {}
        for side in SIDES:
            knee = film.prediction.knees.get(KneeSide(side)) if film.prediction is not None else None
            review = reviews.get((film.file, side))
            truth = self.truth.get((film.file, side))
            if knee is not None and knee.uncertainty_coverage is not None:
                coverage = knee.uncertainty_coverage
            per_knee[side] = {
                "predicted_px": None if knee is None else knee.landmarks_px.tolist(),
                "uncertainty_mm": None if knee is None else _finite(knee.uncertainty_mm),
                "quality": None if knee is None else knee.quality,
                "centre_px": None if knee is None else knee.centre_px.tolist(),
                "review": None if review is None else review.to_dict(),
                "version": 0 if review is None else review.version,
                "truth_px": None if truth is None else [_finite(p) for p in truth],
                "absent_reason": (
                    film.prediction.absent.get(KneeSide(side), "") if film.prediction is not None else ""
                ),  # fmt: skip
            }
        out["knee"] = per_knee
        out["uncertainty_coverage"] = coverage
        out["template_mm"] = _template_mm()
        return out


@functools.lru_cache(maxsize=1)
def _template_mm() -> list[list[float]]:
    """The mean knee of the published annotations in mm (right-knee orientation, centred): where "add knee" puts a
    knee kneel did not find before the reviewer moves its points."""
    from kneel.inference.knee_shape import mean_knee_shape

    return mean_knee_shape().tolist()
