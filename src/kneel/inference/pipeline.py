"""The two-stage landmark pipeline: low-cost knee centres, high-cost landmarks, optional refinement.

Per radiograph (reference §7.2, with the geometry fixed):

1. read it and normalise the intensity of the *whole* image to uint8 0-255 (``kneel.io.normalize_intensity``, the
   reference's 5th-99th percentile windowing), before any warp, as the reference does;
2. low-cost stage: each image half (or the whole of a single-knee film) is warped once to the 1 mm network input
   (:func:`kneel.inference.geometry.lc_transform`); the fold-averaged output, mapped back through the exact inverse,
   is the knee centre in original pixels;
3. high-cost stage: a 140 mm ROI at 0.3 mm/px around each centre (left knees mirrored), warped once
   (:func:`~kneel.inference.geometry.hc_transform`); 16 landmarks come back through the exact inverse;
4. ``refine``: the ROI is re-centred on the predicted tibial landmark 4 and step 3 runs again.

The work is split so that a batch engine can run step 1-2's image work in worker processes: :class:`Preparer`
(model-free, picklable) reads and warps; :meth:`Predictor.predict_prepared` runs the networks on many radiographs at
once (ROIs of all images batched together) and assembles :class:`~kneel.inference.results.RadiographPrediction`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneel.errors import KneelError, ModelError, option
from kneel.geometry import Affine
from kneel.inference.calibration import Calibration
from kneel.inference.geometry import (
    StageGeometry,
    half_extent,
    hc_input_box,
    hc_transform,
    lc_input_box,
    lc_transform,
    mask_outside,
    warp_window,
)
from kneel.inference.knee_shape import shape_fit
from kneel.inference.presence import (
    STATUS_OK,
    KneeEvidence,
    KneePlan,
    KneesMode,
    PresenceRule,
    content_fraction,
    header_tags,
    plan_knees,
    size_refusal,
    tag_refusal,
)
from kneel.inference.presence_limits import model_limits
from kneel.inference.reference_geometry import (
    reference_hc_decode,
    reference_hc_input,
    reference_hc_transform,
    reference_lc_decode,
    reference_lc_input,
    reference_lc_transform,
    reference_resize,
    reference_resized_size,
)
from kneel.inference.results import KneePrediction, RadiographPrediction
from kneel.landmarks import CENTRE_LANDMARK, KneeSide
from kneel.models.mirroring import trained_with_mirroring

__all__ = ["Predictor", "Preparer", "PreparedRadiograph", "LcJob", "PREPARE_FAILED"]

PREPARE_FAILED = "failed"


@dataclass
class LcJob:
    """One low-cost network input: which knee, which half, its transform and the warped image."""

    plan: KneePlan
    transform: Affine
    image: np.ndarray
    """(crop, crop) float32, 0-255."""
    evidence: KneeEvidence
    """What the presence decision measured (content now, the model signals once the networks ran)."""


@dataclass
class PreparedRadiograph:
    """A radiograph read, normalised and warped for the low-cost stage (what a DataLoader worker returns)."""

    file: str
    path: str
    image: np.ndarray
    """Full-resolution intensity-normalised image, uint8."""
    spacing: tuple[float, float]
    spacing_source: str
    sop_instance_uid: str | None
    film: str
    lc_jobs: list[LcJob]
    warnings: list[str] = field(default_factory=list)
    refusal: str | None = None
    """Why the whole file holds no knee (DICOM tags, film size), decided before any network runs."""

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class PrepareFailure:
    """A file that could not be read or prepared, with the reason (one line)."""

    file: str
    path: str
    reason: str
    status: str = PREPARE_FAILED


class Preparer:
    """Model-free first half of the pipeline: read, normalise, plan the knees, warp the low-cost inputs.

    Picklable, so DataLoader workers run it while the main process runs the networks.
    """

    def __init__(
        self,
        lc: StageGeometry,
        hc: StageGeometry,
        *,
        knees: KneesMode | str = KneesMode.AUTO,
        presence: PresenceRule | None = None,
        reference_geometry: bool = False,
        spacing: float | Sequence[float] | None = None,
        force: bool = False,
    ) -> None:
        self.lc = lc
        self.hc = hc
        self.knees = KneesMode.parse(knees)
        self.presence = presence or PresenceRule()
        self.reference_geometry = reference_geometry
        self.spacing = spacing
        self.force = bool(force)

    def read(self, path: str | os.PathLike[str]) -> Any:
        from kneel.io import read_radiograph

        return read_radiograph(path, spacing=self.spacing)

    def lc_transform(self, shape: tuple[int, int], spacing: Sequence[float], half: KneeSide | None) -> Affine:
        if self.reference_geometry:
            return reference_lc_transform(shape, spacing, half, self.lc)
        return lc_transform(shape, spacing, half, self.lc)

    def prepare(self, radiograph: Any, file: str | None = None) -> PreparedRadiograph:
        """Normalise the whole image, decide film type and knees, warp each low-cost input once.

        Raises:
            ImplausibleImageError: the image is too small or blank (:func:`kneel.io.limits.check_usable`).
        """
        from kneel.io import normalize_intensity
        from kneel.io.limits import check_usable

        spacing = (float(radiograph.spacing[0]), float(radiograph.spacing[1]))
        path = str(radiograph.path)
        key = file if file is not None else path
        meta = radiograph.meta
        refusal = None if self.force else tag_refusal(meta.modality, getattr(meta, "body_part", None))
        if refusal is not None:  # the tags say no knee: nothing else to look at
            return self.refused(key, path, refusal, spacing, str(radiograph.spacing_source), radiograph.shape,
                                meta.sop_instance_uid)  # fmt: skip
        image = normalize_intensity(radiograph.image)
        check_usable(image, spacing, radiograph.path)  # too small or blank: refused with the reason
        h, w = image.shape
        refusal = None if self.force else size_refusal(h * spacing[0], w * spacing[1], self.presence)
        if refusal is not None:
            return self.refused(key, path, refusal, spacing, str(radiograph.spacing_source), (h, w),
                                meta.sop_instance_uid)  # fmt: skip
        width_mm = w * spacing[1]
        film, plans, notes = plan_knees(width_mm, self.knees, meta.laterality, self.presence, force=self.force)
        resized = None
        if self.reference_geometry and plans:  # the reference resizes the whole film once (reference §7.2 step 2)
            resized = reference_resize(image, reference_resized_size((h, w), spacing, self.lc.spacing_mm))
        jobs = []
        for plan in plans:
            t = self.lc_transform((h, w), spacing, plan.half)
            x0, wh = half_extent(w, plan.half)
            evidence = KneeEvidence(content=content_fraction(image, x0, x0 + wh, self.presence.content_level))
            if resized is not None:
                net = reference_lc_input(resized, plan.half, self.lc)
            else:
                net = warp_window(image, t, (self.lc.crop, self.lc.crop))
                mask_outside(net, lc_input_box((h, w), spacing, plan.half, self.lc))
            jobs.append(LcJob(plan, t, net, evidence))
        return PreparedRadiograph(
            file=key,
            path=path,
            image=image,
            spacing=spacing,
            spacing_source=str(radiograph.spacing_source),
            sop_instance_uid=radiograph.meta.sop_instance_uid,
            film=film,
            lc_jobs=jobs,
            warnings=list(notes),
        )

    @staticmethod
    def refused(
        file: str,
        path: str,
        reason: str,
        spacing: tuple[float, float] = (float("nan"), float("nan")),
        spacing_source: str = "",
        shape: tuple[int, int] = (0, 0),
        sop_instance_uid: str | None = None,
    ) -> PreparedRadiograph:
        """A radiograph refused as a whole before any network runs: status ``no_knee`` with ``reason``."""
        return PreparedRadiograph(
            file=file,
            path=path,
            image=np.zeros(shape, np.uint8),
            spacing=spacing,
            spacing_source=spacing_source,
            sop_instance_uid=sop_instance_uid,
            film="none",
            lc_jobs=[],
            refusal=reason,
        )

    def load(self, path: str | os.PathLike[str], file: str | None = None) -> PreparedRadiograph:
        """Read and prepare one file. A DICOM file that cannot be read but whose tags already say it is no knee
        radiograph (a CT slice without spacing, a colour ultrasound) is refused (``no_knee``), not failed.

        Raises:
            KneelError: the file cannot be read or used (and its tags do not refuse it).
        """
        try:
            radiograph = self.read(path)
        except KneelError:
            if not self.force:
                reason = tag_refusal(*header_tags(str(path)))
                if reason is not None:
                    return self.refused(file if file is not None else str(path), str(path), reason)
            raise
        return self.prepare(radiograph, file)

    def __call__(self, file: str, path: str) -> PreparedRadiograph | PrepareFailure:
        """Read and prepare one file; any failure becomes a :class:`PrepareFailure` (never an exception)."""
        try:
            return self.load(path, file)
        except KneelError as exc:
            return PrepareFailure(file, path, exc.reason)
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop a batch run
            return PrepareFailure(file, path, f"{type(exc).__name__}: {exc}")


@dataclass
class _HcJob:
    item: int
    side: KneeSide
    centre: np.ndarray
    transform: Affine | None = None
    result: np.ndarray | None = None
    spread: np.ndarray | None = None
    radius: np.ndarray | None = None
    flip: np.ndarray | None = None


def knee_signals(
    flip_mm: np.ndarray | None,
    result: np.ndarray,
    first_pass: np.ndarray | None,
    spread_mm: np.ndarray,
    heatmap_mm: np.ndarray,
    spacing: tuple[float, float],
    shape_residual_mm: float = float("nan"),
) -> dict[str, np.ndarray]:
    """The raw uncertainty signals of one knee, (16,) mm each (:data:`kneel.inference.calibration.SIGNALS`).

    ``flip`` is the distance between the prediction of the ROI and that of its mirror image (NaN without mirror
    test-time augmentation); ``refine_shift`` is how far each landmark moved between the first high-cost pass (ROI
    on the low-cost centre) and the refined one (ROI on the predicted T4), NaN without the refine pass; ``shape`` is
    the knee's residual from the mean published knee (:func:`kneel.inference.knee_shape.shape_fit`), the same for its
    16 landmarks: an unusual predicted shape is either an unusual knee or a wrong prediction, and both are harder.
    """
    if first_pass is None:
        shift = np.full(len(result), np.nan)
    else:
        delta = (np.asarray(result, dtype=np.float64) - first_pass) * [spacing[1], spacing[0]]
        shift = np.hypot(delta[:, 0], delta[:, 1])
    return {
        "spread": np.asarray(spread_mm, dtype=np.float64),
        "heatmap": np.asarray(heatmap_mm, dtype=np.float64),
        "refine_shift": shift,
        "flip": np.full(len(result), np.nan) if flip_mm is None else np.asarray(flip_mm, dtype=np.float64),
        "shape": np.full(len(result), float(shape_residual_mm)),
    }


def _refined_centre(job: _HcJob) -> np.ndarray:
    """The predicted tibial landmark 4 (the ROI centre of the training construction); the old centre if not finite."""
    t4 = np.asarray(job.result, dtype=np.float64)[CENTRE_LANDMARK]
    return t4.copy() if np.all(np.isfinite(t4)) else np.asarray(job.centre, dtype=np.float64)


def _refine_shift_mm(job: _HcJob, spacing: tuple[float, float]) -> float:
    """How far (mm) the refine pass would move the ROI centre: first-pass T4 to the current centre (inf if unknown)."""
    shift = (_refined_centre(job) - np.asarray(job.centre, dtype=np.float64)) * [spacing[1], spacing[0]]
    value = float(np.hypot(shift[0], shift[1]))
    return value if np.isfinite(value) else float("inf")


def _tolerance(value: float) -> float:
    tolerance = float(value)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"refine_tolerance_mm must be a finite distance >= 0, not {value!r}")
    return tolerance


def _lc_stage_dir(root: Path, lc_model: str | os.PathLike[str] | None) -> Path:
    """The low-cost stage folder: ``root/lc``, or ``lc_model/lc``, or ``lc_model`` itself (a stage folder)."""
    if lc_model is None:
        if (root / "lc").is_dir():
            return root / "lc"
        hint = ""
        if (root / "hc").is_dir():
            hint = (f"; a training run holding only the high-cost stage needs the low-cost run too: "
                    f"{option('lc_model', 'DIR')} (e.g. the grid's low-cost experiment)")  # fmt: skip
        raise ModelError(f"no lc/ stage folder (expected MODEL/lc/fold_<k>/ and MODEL/hc/fold_<k>/){hint}", root)
    lc_root = Path(lc_model)
    if (lc_root / "lc").is_dir():
        return lc_root / "lc"
    if lc_root.is_dir() and any(lc_root.glob("fold_*")):
        return lc_root
    raise ModelError(f"no low-cost stage here (expected DIR/lc/fold_<k>/ or DIR/fold_<k>/), given by "
                     f"{option('lc_model')}", lc_root)  # fmt: skip


class Predictor:
    """Landmarks for whole radiographs from a model directory ``MODEL/{lc,hc}/fold_<k>/``.

    Args:
        model_dir: the project's model directory, or the name of a fetched published model (``"kneel-2019"``,
            see ``kneel models fetch``).
        lc_model: where the low-cost stage is when ``model_dir`` holds only the high-cost one (a training run of an
            experiment grid): a model folder with ``lc/``, or that ``lc/`` folder itself.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast, or ``"int8"`` (CPU; ONNX Runtime; see
            :mod:`kneel.inference.int8` for its calibration).
        int8_calibration: int8 only: radiographs whose ROIs calibrate the int8 networks (default: 16 synthetic
            training films, see :mod:`kneel.inference.int8`).
        int8_cache: int8 only: load the quantised graphs of an earlier start with the same weights and calibration
            films from the disk cache, and store new ones (:mod:`kneel.inference.int8_cache`); False: always build.
        refine: re-centre each ROI on the predicted tibial landmark 4 and predict again.
        refine_tolerance_mm: adaptive refine (opt-in; 0, the default, always refines): skip the second pass for a
            knee whose first-pass tibial landmark 4 lies within this distance (mm) of its ROI centre, and keep the
            first pass there. Not exact: see docs/inference.md for the measured deviation and passes saved. A
            skipped knee's ``refine_shift`` signal is 0, so a calibration fitted on it reads such knees as more
            certain (a warning says so).
        flip_tta: also predict each ROI mirrored and average the two (mirror test-time augmentation; their distance
            is an uncertainty signal). Off with ``reference_geometry``.
        knees: ``auto`` (knees present), ``both`` (always both halves), ``R`` or ``L``.
        reference_geometry: reproduce the original KNEEL pipeline, its network inputs and its (inexact) output mapping
            (to compare with its results; same weights: same landmarks within 0.1 px).
        batch_size: network inputs per forward pass.
        spacing: pixel spacing override in mm (one number or ``(row, col)``), e.g. for PNG input.
        presence: thresholds of the knee presence decision (:mod:`kneel.inference.presence`).
        force: skip the presence decision: landmarks for every knee looked for, whatever the DICOM tags and the image
            show (the reference's behaviour).

    Example:
        >>> predictor = Predictor("MODEL", device="cpu")  # doctest: +SKIP
        >>> result = predictor.predict("knee.dcm")  # doctest: +SKIP
        >>> result["R"].landmarks_px.shape, result["R"].quality  # doctest: +SKIP
        ((16, 2), 'ok')
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        refine: bool = True,
        knees: KneesMode | str = KneesMode.AUTO,
        *,
        reference_geometry: bool = False,
        batch_size: int = 8,
        spacing: float | Sequence[float] | None = None,
        presence: PresenceRule | None = None,
        force: bool = False,
        flip_tta: bool = False,
        lc_model: str | os.PathLike[str] | None = None,
        int8_calibration: Sequence[str | os.PathLike[str]] | None = None,
        int8_cache: bool = True,
        refine_tolerance_mm: float = 0.0,
    ) -> None:
        from kneel.hub import resolve_model
        from kneel.models import load_stage

        root = resolve_model(model_dir)  # a path, or a fetched model's name (kneel-2019)
        lc_dir = _lc_stage_dir(root, None if lc_model is None else resolve_model(lc_model))
        if not (root / "hc").is_dir():
            raise ModelError("no hc/ stage folder (expected MODEL/lc/fold_<k>/ and MODEL/hc/fold_<k>/)", root)
        if precision == "int8":
            from kneel.inference.int8 import load_int8_stages

            lc, hc = load_int8_stages(lc_dir, root / "hc", device, int8_calibration, cache=int8_cache)
        else:
            lc = load_stage(lc_dir, device, precision=precision)  # type: ignore[arg-type]
            hc = load_stage(root / "hc", device, precision=precision)  # type: ignore[arg-type]
        self.flip_tta = bool(flip_tta)
        self.refine_tolerance_mm = _tolerance(refine_tolerance_mm)
        self.hc_mirroring = trained_with_mirroring(hc.configs, root / "hc")
        self._init(lc, hc, refine, knees, reference_geometry, batch_size, spacing, presence, force, str(root), lc_dir)

    @classmethod
    def from_ensembles(
        cls,
        lc: Any,
        hc: Any,
        *,
        refine: bool = True,
        knees: KneesMode | str = KneesMode.AUTO,
        reference_geometry: bool = False,
        batch_size: int = 8,
        spacing: float | Sequence[float] | None = None,
        presence: PresenceRule | None = None,
        force: bool = False,
        flip_tta: bool = False,
        refine_tolerance_mm: float = 0.0,
    ) -> Predictor:
        """A predictor from two loaded :class:`~kneel.models.FoldEnsemble` objects (or anything with ``predict``)."""
        self = cls.__new__(cls)
        self.flip_tta = bool(flip_tta)
        self.refine_tolerance_mm = _tolerance(refine_tolerance_mm)
        self.hc_mirroring = trained_with_mirroring(getattr(hc, "configs", []))
        self._init(lc, hc, refine, knees, reference_geometry, batch_size, spacing, presence, force, None)
        return self

    def _init(self, lc, hc, refine, knees, reference_geometry, batch_size, spacing, presence, force, model_dir,  # noqa: ANN001
              lc_dir=None) -> None:  # fmt: skip
        if lc.config.stage != "lc" or hc.config.stage != "hc":
            raise ModelError(f"stage mismatch: lc/ holds {lc.config.stage!r}, hc/ holds {hc.config.stage!r}")
        # limits left open are calibrated from the model's own out-of-fold predictions, else the defaults
        presence = (presence or PresenceRule()).resolved(model_limits(model_dir, lc_dir))
        self.lc = lc
        self.hc = hc
        self.lc_geometry = StageGeometry.from_config(lc.config)
        self.hc_geometry = StageGeometry.from_config(hc.config)
        self.refine = bool(refine)
        self.batch_size = max(1, int(batch_size))
        self.model_dir = model_dir
        self.preparer = Preparer(
            self.lc_geometry,
            self.hc_geometry,
            knees=knees,
            presence=presence,
            reference_geometry=reference_geometry,
            spacing=spacing,
            force=force,
        )
        self.calibration = self._find_calibration(model_dir)
        if self.uses_flip_tta and self.hc_mirroring is False:
            why = "asked for" if self.calibration is None else "needed by the model's uncertainty calibration"
            raise ModelError(
                f"mirror test-time augmentation ({why}) needs a high-cost model trained on mirrored ROIs; this one was "
                "trained without mirroring (augment.flip_p 0), so it reads a mirrored ROI as a right knee and the mean "
                "of the two predictions would collapse the knee. Predict without --flip-tta",
                None if model_dir is None else Path(model_dir) / "hc",
            )

    def _find_calibration(self, model_dir: str | None) -> Calibration | None:
        """The model's uncertainty calibration, if it has one that applies to these settings."""
        calibration = Calibration.find(model_dir) if model_dir is not None else None
        if calibration is not None and not self.refine and "refine_shift" in calibration.signals:
            warnings.warn(
                "the model's uncertainty calibration needs the refine pass; without it uncertainty_mm is the fold "
                "spread (uncalibrated)",
                stacklevel=3,
            )
            return None
        if calibration is not None and self.refine_tolerance_mm > 0 and "refine_shift" in calibration.signals:
            warnings.warn(
                f"adaptive refine (tolerance {self.refine_tolerance_mm:g} mm) skips the second pass of some knees; "
                "their refine_shift signal is 0, so the calibrated uncertainty_mm is too small for them",
                stacklevel=3,
            )
        if calibration is not None and "flip" in calibration.signals and not self.uses_flip_tta:
            if self.reference_geometry:
                warnings.warn(
                    "the model's uncertainty calibration needs mirror test-time augmentation, which the reference "
                    "geometry does not do; uncertainty_mm is the fold spread (uncalibrated)",
                    stacklevel=3,
                )
                return None
            # The radius is only calibrated for the predictions it was fitted on: mirror-averaged ones.
            self.flip_tta = True
        return calibration

    def _knee_uncertainty(self, signals: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        """(uncertainty_mm, the knee's calibration fields): the calibrated radius and what the flag needs, or the
        fold spread and nothing without a calibration."""
        cal = self.calibration
        if cal is None:
            return signals["spread"], {}
        fields: dict[str, Any] = {"uncertainty_coverage": cal.coverage, "flag_radius_mm": cal.flag_radius_mm}
        far = cal.far_probability(signals)
        if far is not None:
            fields.update(far_probability=float(far), flag_probability=cal.flag_above,
                          review_radius_mm=cal.review_radius_mm)  # fmt: skip
        return cal.radius_mm(signals), fields

    # ------------------------------------------------------------------------------------------------------------
    @property
    def uses_flip_tta(self) -> bool:
        """Whether each ROI is also predicted mirrored (never with the reference's geometry, which has no TTA)."""
        return self.flip_tta and not self.reference_geometry

    @property
    def reference_geometry(self) -> bool:
        return self.preparer.reference_geometry

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the numbers (stored with every result; resume refuses to mix different settings)."""
        return {
            "refine": self.refine,
            "knees": self.preparer.knees.value,
            "reference_geometry": self.reference_geometry,
            "precision": str(getattr(self.hc, "precision", "fp32")),
            "spacing_override": None if self.preparer.spacing is None else str(self.preparer.spacing),
            "lc_folds": len(self.lc),
            "hc_folds": len(self.hc),
            "force": self.preparer.force,
            "presence": self.preparer.presence.limits(),
            "flip_tta": self.uses_flip_tta,
            **({"refine_tolerance_mm": self.refine_tolerance_mm} if self.refine and self.refine_tolerance_mm else {}),
            "uncertainty": "fold spread (uncalibrated)"
            if self.calibration is None
            else f"calibrated radius at {self.calibration.coverage:g} coverage",
        }

    def predict(self, source: str | os.PathLike[str] | Any, file: str | None = None) -> RadiographPrediction:
        """Landmarks of every knee in one radiograph (a path or a :class:`kneel.io.Radiograph`).

        A radiograph without a knee gives a result with no knees, ``status == "no_knee"`` and the reason.

        Raises:
            RadiographError: the file cannot be read or has no usable spacing.
        """
        if isinstance(source, str | os.PathLike):
            prepared = self.preparer.load(source, file)
        else:
            prepared = self.preparer.prepare(source, file)
        return self.predict_prepared([prepared])[0]

    def predict_many(self, sources: Iterable[str | os.PathLike[str] | Any]) -> Iterator[RadiographPrediction]:
        """:meth:`predict` for each source in turn, ROIs batched per chunk of ``batch_size // 2`` radiographs."""
        chunk: list[PreparedRadiograph] = []
        for source in sources:
            if isinstance(source, str | os.PathLike):
                chunk.append(self.preparer.load(source))
            else:
                chunk.append(self.preparer.prepare(source))
            if len(chunk) >= max(1, self.batch_size // 2):
                yield from self.predict_prepared(chunk)
                chunk = []
        if chunk:
            yield from self.predict_prepared(chunk)

    # ------------------------------------------------------------------------------------------------------------
    def _forward(self, ensemble: Any, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run ``ensemble`` on 0-255 images in chunks of ``batch_size``: (N, K, 2) mean, (N, K) spread, (N, K)
        heatmap radius (NaN when the ensemble cannot give heatmaps: ONNX backend, stand-ins)."""
        detailed = getattr(ensemble, "predict_with_heatmap_radius", None)
        if getattr(ensemble, "backend", "torch") != "torch":
            detailed = None
        means, spreads, radii = [], [], []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.stack(images[start : start + self.batch_size])[:, None])
            if detailed is not None:
                mean, spread, radius = detailed(batch)
                radii.append(radius.float().cpu().numpy().astype(np.float64))
            else:
                mean, spread = ensemble.predict(batch)
                radii.append(np.full(tuple(spread.shape), np.nan))
            means.append(mean.float().cpu().numpy().astype(np.float64))
            spreads.append(spread.float().cpu().numpy().astype(np.float64))
        return np.concatenate(means), np.concatenate(spreads), np.concatenate(radii)

    def _hc_transform(self, centre: np.ndarray, spacing: tuple[float, float], side: KneeSide) -> Affine:
        if self.reference_geometry:
            return reference_hc_transform(centre, spacing, side, self.hc_geometry)
        return hc_transform(centre, spacing, side, self.hc_geometry)

    def _hc_pass(self, items: Sequence[PreparedRadiograph], jobs: list[_HcJob]) -> None:
        """Warp every ROI once, run the high-cost ensemble on all of them, map the outputs back."""
        if not jobs:
            return
        crop = self.hc_geometry.crop
        images = []
        for job in jobs:
            item = items[job.item]
            job.transform = self._hc_transform(job.centre, item.spacing, job.side)
            if self.reference_geometry:
                images.append(reference_hc_input(item.image, job.centre, item.spacing, job.side, self.hc_geometry))
                continue
            net = warp_window(item.image, job.transform, (crop, crop))
            images.append(mask_outside(net, hc_input_box(self.hc_geometry)))
        scale = crop * self.hc_geometry.spacing_mm
        if self.uses_flip_tta:
            # Mirror test-time augmentation: the network was trained with mirrored ROIs (indices keep their
            # anatomical meaning), so the mirrored ROI's landmarks, mirrored back, are a second opinion. Their mean
            # is the prediction; their distance (mm) is the "flip" uncertainty signal.
            n = len(images)
            out = self._forward(self.hc, images + [np.ascontiguousarray(im[:, ::-1]) for im in images])
            direct, mirrored = out[0][:n], out[0][n:].copy()
            mirrored[..., 0] = (crop - 1) / crop - mirrored[..., 0]
            means = (direct + mirrored) / 2.0
            spreads = np.sqrt((out[1][:n] ** 2 + out[1][n:] ** 2) / 2.0)
            radii = np.sqrt((out[2][:n] ** 2 + out[2][n:] ** 2) / 2.0)
            flips = np.linalg.norm(direct - mirrored, axis=-1) * scale
        else:
            means, spreads, radii = self._forward(self.hc, images)
            flips = np.full(means.shape[:2], np.nan)
        for job, mean, spread, radius, flip in zip(jobs, means, spreads, radii, flips, strict=True):
            job.flip = flip
            item = items[job.item]
            if self.reference_geometry:
                job.result = reference_hc_decode(mean, job.centre, item.spacing, job.side, self.hc_geometry)
            else:
                assert job.transform is not None
                job.result = job.transform.inverse().apply(mean * crop)
            job.spread = spread * scale
            job.radius = radius * scale

    def predict_prepared(self, items: Sequence[PreparedRadiograph]) -> list[RadiographPrediction]:
        """Run both stages on many prepared radiographs at once (all their ROIs batched together).

        Each knee looked for is kept or dropped by the presence decision (:mod:`kneel.inference.presence`): the
        content and low-cost evidence before the high-cost stage, the shape of the 16 landmarks after it.
        """
        lc_crop = self.lc_geometry.crop
        lc_scale = lc_crop * self.lc_geometry.spacing_mm
        rule = self.preparer.presence
        flat = [(i, job) for i, item in enumerate(items) for job in item.lc_jobs]
        notes: list[list[str]] = [list(item.warnings) for item in items]
        absent: list[dict[KneeSide, str]] = [{} for _ in items]
        evidence: list[dict[KneeSide, KneeEvidence]] = [{} for _ in items]
        lc_found: dict[tuple[int, KneeSide], tuple[np.ndarray, float]] = {}
        checked: dict[tuple[int, KneeSide], bool] = {}

        def drop(i: int, side: KneeSide, reason: str) -> None:
            absent[i][side] = reason
            notes[i].append(f"knee {side.value} missing: {reason}")

        if flat:
            means, spreads, radii = self._forward(self.lc, [job.image for _, job in flat])
            for (i, job), mean, spread, radius in zip(flat, means, spreads, radii, strict=True):
                item = items[i]
                if self.reference_geometry:
                    centre = reference_lc_decode(mean[0], item.shape, job.plan.half)
                else:
                    centre = job.transform.inverse().apply(mean[0] * lc_crop)
                job.evidence.lc_spread_mm = float(spread[0] * lc_scale)
                job.evidence.lc_radius_mm = float(radius[0] * lc_scale)
                evidence[i][job.plan.side] = job.evidence
                checked[(i, job.plan.side)] = job.plan.check_presence
                reason = self._absent_reason(item, job, centre)
                if reason is not None:
                    drop(i, job.plan.side, reason)
                    continue
                lc_found[(i, job.plan.side)] = (centre, job.evidence.lc_spread_mm)
        jobs = [_HcJob(i, side, centre) for (i, side), (centre, _) in lc_found.items()]
        self._hc_pass(items, jobs)
        first_pass: dict[tuple[int, KneeSide], np.ndarray] = {}
        if self.refine and jobs:
            first_pass = {(j.item, j.side): np.asarray(j.result, dtype=np.float64) for j in jobs}
            tolerance = self.refine_tolerance_mm
            redo = [j for j in jobs if not tolerance or _refine_shift_mm(j, items[j.item].spacing) > tolerance]
            refined = {id(j): _HcJob(j.item, j.side, _refined_centre(j)) for j in redo}
            self._hc_pass(items, list(refined.values()))
            jobs = [refined.get(id(j), j) for j in jobs]  # a knee within the tolerance keeps its first pass
        knees: list[dict[KneeSide, KneePrediction]] = [{} for _ in items]
        for job in jobs:
            item = items[job.item]
            lc_centre, lc_spread = lc_found[(job.item, job.side)]
            assert job.result is not None and job.spread is not None and job.radius is not None
            if not np.all(np.isfinite(job.result)):
                drop(job.item, job.side, "non-finite prediction")
                continue
            found = evidence[job.item][job.side]
            points_mm = job.result * [item.spacing[1], item.spacing[0]]
            fit = shape_fit(points_mm, mirrored=job.side.mirrored)
            other = shape_fit(points_mm, mirrored=not job.side.mirrored)
            if other.residual_mm < 0.5 * fit.residual_mm and abs(other.angle_deg) < abs(fit.angle_deg):
                # A knee of the other side (a single-knee film with a wrong or missing laterality): still a knee.
                fit = other
                notes[job.item].append(
                    f"knee {job.side.value}: the landmarks fit a {'right' if job.side.mirrored else 'left'} knee "
                    f"better (wrong or missing laterality? pass {option('knees', 'R')} or {option('knees', 'L')})"
                )
            found.shape_residual_mm, found.shape_scale = fit.residual_mm, fit.scale
            found.shape_angle_deg = fit.angle_deg
            found.hc_spread_mm = float(np.median(job.spread))
            found.hc_radius_mm = float(np.median(job.radius))
            reason = None
            if checked[(job.item, job.side)]:
                half = next(j.plan.half for j in item.lc_jobs if j.plan.side is job.side)
                t4 = job.result[CENTRE_LANDMARK]
                if not _inside(item.shape, half, t4):
                    where = "the film" if half is None else "its half of the film"
                    reason = f"its landmarks lie outside {where} (centre {t4[0]:.0f}, {t4[1]:.0f})"
                reason = reason or rule.hc_reason(found)
            if reason is not None:
                drop(job.item, job.side, reason)
                continue
            signals = knee_signals(
                job.flip,
                job.result,
                first_pass.get((job.item, job.side)),
                job.spread,
                job.radius,
                item.spacing,
                shape_residual_mm=fit.residual_mm,
            )
            uncertainty, calibrated = self._knee_uncertainty(signals)
            knees[job.item][job.side] = KneePrediction(
                side=job.side,
                landmarks_px=np.asarray(job.result, dtype=np.float64),
                spacing=item.spacing,
                uncertainty_mm=np.asarray(uncertainty, dtype=np.float64),
                centre_px=np.asarray(job.centre, dtype=np.float64),
                lc_centre_px=np.asarray(lc_centre, dtype=np.float64),
                lc_uncertainty_mm=lc_spread,
                signals=signals,
                **calibrated,
            )
        settings = self.settings
        out = []
        for i, item in enumerate(items):
            result = RadiographPrediction(
                file=item.file,
                path=item.path,
                shape=item.shape,
                spacing=item.spacing,
                spacing_source=item.spacing_source,
                sop_instance_uid=item.sop_instance_uid,
                film=item.film,
                knees=knees[i],
                warnings=notes[i],
                settings=settings,
                refusal=item.refusal,
                absent=absent[i],
                evidence=evidence[i],
            )
            if result.status != STATUS_OK:
                warnings.warn(f"{item.file}: no knee: {result.reason}", stacklevel=2)
            else:
                for note in notes[i]:
                    if "missing" in note:
                        warnings.warn(f"{item.file}: {note}", stacklevel=2)
            out.append(result)
        return out

    def _absent_reason(self, item: PreparedRadiograph, job: LcJob, centre: np.ndarray) -> str | None:
        """Why a knee counts as missing before the high-cost stage (``None``: present or not checked)."""
        if not np.all(np.isfinite(centre)):
            return "the low-cost model gave no finite centre"
        if not job.plan.check_presence:
            return None
        rule = self.preparer.presence
        where = "the film" if job.plan.half is None else "its half of the film"
        reason = rule.content_reason(job.evidence, where) or rule.lc_reason(job.evidence)
        if reason is not None:
            return reason
        if not _inside(item.shape, job.plan.half, centre):
            return f"the predicted centre ({centre[0]:.0f}, {centre[1]:.0f}) lies outside {where}"
        return None


def _inside(shape: tuple[int, int], half: KneeSide | None, xy: np.ndarray) -> bool:
    """Whether a point lies in the film (``half=None``) or in the film half of a knee (R: image left)."""
    h, w = shape
    x, y = float(xy[0]), float(xy[1])
    mid = w / 2.0
    if not -0.5 <= y <= h - 0.5:
        return False
    if half is None:
        return -0.5 <= x <= w - 0.5
    return -0.5 <= x <= mid if half is KneeSide.R else mid - 1 <= x <= w
