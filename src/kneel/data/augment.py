"""Training augmentations of the reference (§5.7) as one explicit matrix per sample plus photometric steps.

Geometry: every random geometric step (flip, scale, rotation, shear, perspective, extra scale) and the pad + random
crop are multiplied into ONE 3x3 matrix from the source image to the network input; the image is warped once
(``cv2.warpPerspective``) and the landmarks are mapped by the same matrix, so they follow the image exactly.
Flips mirror coordinates only: landmark indices keep their anatomical meaning (as in the reference).

Photometric (after the crop, on float 0-255): exactly one of seven noise/blur options, gamma, cutout.

All randomness comes from a ``numpy.random.Generator`` passed in; :class:`~kneel.data.datasets.LandmarkDataset`
derives it from ``(seed, epoch, index)``, so a sample is the same whatever the number of DataLoader workers.
Mixup is done by the training loop, not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from kneel.data.transforms import pad_crop
from kneel.errors import ConfigError
from kneel.geometry import Affine, Homography

__all__ = ["AugmentationConfig", "Augmentation", "NOISE_OPTIONS", "GeometricSample"]

NOISE_OPTIONS: tuple[str, ...] = (
    "salt_pepper",
    "gaussian_blur",
    "median_blur",
    "gaussian_noise",
    "salt_pepper_then_median",
    "median_then_salt_pepper",
    "identity",
)
"""The seven mutually exclusive noise/blur options of the reference; one is drawn uniformly per sample."""


@dataclass
class AugmentationConfig:
    """Every augmentation knob; the defaults are the reference's training recipe (§5.4, §5.7).

    Ranges are ``(low, high)`` for a uniform draw; probabilities are per sample. Fill it from YAML with
    :meth:`from_dict` (unknown keys are an error), turn it off with :meth:`disabled`.

    Attributes:
        geometric_p: probability of the whole geometric stream (otherwise identity; reference 0.7).
        flip_p: horizontal mirror inside the geometric stream (indices unchanged).
        projection_p: probability of the fused scale + rotation + shear + perspective step.
        scale: isotropic scale range of the projection step.
        rotation_deg: rotation range in degrees (reference ±90).
        shear_p, shear: probability and range of the x and y shear factors (inside the projection step).
        perspective: range of both perspective terms, per pixel at an input of ``perspective_reference_size`` px
            (scaled for other input sizes so the distortion looks the same); applied about the image centre.
        extra_scale_p, extra_scale: the second, independent isotropic scale (reference 0.5-2.5, p 0.5).
        random_crop: random crop position in the padded canvas (False: centred).
        keep_landmarks_in_view: draw the random crop only among positions that keep every landmark at least
            ``landmark_margin * input_size`` px inside the input, when such positions exist (off in the reference,
            whose strongest draws can push landmarks out of the crop, §8.6).
        noise_p: probability of drawing one of ``noise_options`` (reference: always; 'identity' is one option).
        noise_options: the options drawn uniformly (subset of :data:`NOISE_OPTIONS`).
        salt_pepper, salt_pepper_strong: fraction of pixels set to 0/255 (the strong one precedes a median blur).
        blur_kernels, blur_sigma: kernel sizes (odd) for Gaussian and median blur; Gaussian sigma.
        gaussian_noise: gain g of ``(1-g) * image + g * noise`` (noise min-max scaled to 0-255).
        gamma_p, gamma: gamma correction ``255 * (x/255) ** (1/gamma)``.
        cutout_p, cutout_fraction: a zero square of ``fraction * input_size`` px, placed uniformly (0 disables).
        keypoint_jitter_p, keypoint_jitter: label jitter of the reference's ablation (off): with probability
            ``keypoint_jitter_p`` every landmark gets its own integer offset ``trunc(U(-j, j) * W)``,
            ``trunc(U(-j, j) * H)`` px in the source image (W x H), before the geometry (±1 px on a 466 px ROI).
    """

    geometric_p: float = 0.7
    flip_p: float = 0.5
    projection_p: float = 0.5
    scale: tuple[float, float] = (0.8, 1.3)
    rotation_deg: tuple[float, float] = (-90.0, 90.0)
    shear_p: float = 0.5
    shear: tuple[float, float] = (-0.1, 0.1)
    perspective: tuple[float, float] = (1e-5, 2e-3)
    perspective_reference_size: float = 450.0
    extra_scale_p: float = 0.5
    extra_scale: tuple[float, float] = (0.5, 2.5)
    random_crop: bool = True
    keep_landmarks_in_view: bool = False
    landmark_margin: float = 0.02
    noise_p: float = 1.0
    noise_options: tuple[str, ...] = field(default_factory=lambda: NOISE_OPTIONS)
    salt_pepper: tuple[float, float] = (0.0, 0.01)
    salt_pepper_strong: tuple[float, float] = (0.0, 0.05)
    blur_kernels: tuple[int, ...] = (3, 5)
    blur_sigma: float = 1.0
    gaussian_noise: tuple[float, float] = (0.0, 0.5)
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.5, 1.5)
    cutout_p: float = 0.5
    cutout_fraction: float = 0.1
    keypoint_jitter_p: float = 0.0
    keypoint_jitter: float = 0.003

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        for name in (
            "geometric_p",
            "flip_p",
            "projection_p",
            "shear_p",
            "extra_scale_p",
            "noise_p",
            "gamma_p",
            "cutout_p",
            "keypoint_jitter_p",
        ):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"augmentation {name} must be a probability in [0, 1], got {p}")
        for name in (
            "scale",
            "rotation_deg",
            "shear",
            "perspective",
            "extra_scale",
            "salt_pepper",
            "salt_pepper_strong",
            "gaussian_noise",
            "gamma",
        ):
            rng = getattr(self, name)
            if len(rng) != 2 or float(rng[0]) > float(rng[1]):
                raise ConfigError(f"augmentation {name} must be a (low, high) range, got {rng}")
        if min(self.scale) <= 0 or min(self.extra_scale) <= 0 or min(self.gamma) <= 0:
            raise ConfigError("augmentation scale, extra_scale and gamma ranges must be positive")
        unknown = [o for o in self.noise_options if o not in NOISE_OPTIONS]
        if unknown or not self.noise_options:
            raise ConfigError(f"augmentation noise_options must be a non-empty subset of {NOISE_OPTIONS}: {unknown}")
        if any(int(k) < 1 or int(k) % 2 == 0 for k in self.blur_kernels) or not self.blur_kernels:
            raise ConfigError(f"augmentation blur_kernels must be odd positive sizes, got {self.blur_kernels}")
        if not 0.0 <= self.cutout_fraction < 1.0:
            raise ConfigError(f"augmentation cutout_fraction must be in [0, 1), got {self.cutout_fraction}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentationConfig:
        """Build from a mapping (e.g. a YAML section); keys not listed above raise :class:`ConfigError`."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown augmentation option(s) {unknown}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def disabled(cls) -> AugmentationConfig:
        """No augmentation at all (centre crop, no noise): the validation geometry through the training path."""
        return cls(
            geometric_p=0.0,
            random_crop=False,
            noise_p=0.0,
            gamma_p=0.0,
            cutout_p=0.0,
            keypoint_jitter_p=0.0,
        )


@dataclass(frozen=True)
class GeometricSample:
    """One draw of the geometric stream: the fused matrix and what went into it (for tests and debugging)."""

    transform: Homography
    """Source image pixels -> network input pixels (includes pad and crop)."""
    flipped: bool
    steps: tuple[str, ...]
    canvas_wh: tuple[int, int]
    crop_offset: tuple[int, int]


class Augmentation:
    """The reference's training augmentation; ``config`` defaults to the paper's recipe.

    Example:
        >>> aug = Augmentation()
        >>> rng = np.random.default_rng(0)
        >>> geo = aug.sample_geometry(rng, (466, 466), input_size=450, pad=520)
        >>> out = aug.warp(roi_float32, geo.transform, 450)           # (450, 450) float32
        >>> kp = geo.transform.apply(landmarks_roi)                     # (16, 2) in network pixels
        >>> out = aug.photometric(out, rng)
    """

    def __init__(self, config: AugmentationConfig | None = None) -> None:
        self.config = config or AugmentationConfig()

    # ------------------------------------------------------------------ geometry
    def sample_geometry(
        self,
        rng: np.random.Generator,
        size_wh: tuple[int, int],
        input_size: int,
        pad: int,
        *,
        keypoints: np.ndarray | None = None,
        force: tuple[str, ...] | None = None,
    ) -> GeometricSample:
        """Draw the fused geometric transform for a source image of ``size_wh`` pixels.

        Args:
            rng: the sample's generator.
            size_wh: source image ``(width, height)``.
            input_size: network input side ``S``.
            pad: zero-pad the (warped) canvas to at least ``pad x pad`` before cropping ``S x S``.
            keypoints: source landmarks ``(K, 2)``, used only with ``keep_landmarks_in_view``.
            force: apply exactly these steps (names: 'flip', 'scale', 'rotation', 'shear', 'perspective',
                'extra_scale') with their random parameters, ignoring the probabilities (tests).
        """
        cfg = self.config
        w, h = (int(v) for v in size_wh)
        centre = ((w - 1) / 2.0, (h - 1) / 2.0)
        matrix = Homography.identity()
        steps: list[str] = []

        def want(name: str, p: float) -> bool:
            if force is not None:
                return name in force
            return bool(rng.random() < p)

        use_stream = force is not None or bool(rng.random() < cfg.geometric_p)
        flipped = False
        if use_stream:
            if want("flip", cfg.flip_p):
                matrix = matrix.then(Affine.mirror_x(w))
                flipped = True
                steps.append("flip")
            projection = force is not None or bool(rng.random() < cfg.projection_p)
            if projection:
                if force is None or "scale" in force:
                    s = rng.uniform(*cfg.scale)
                    matrix = matrix.then(_about(Affine.scaling(s), centre))
                    steps.append("scale")
                if force is None or "rotation" in force:
                    angle = rng.uniform(*cfg.rotation_deg)
                    matrix = matrix.then(Affine.rotation(angle, centre))
                    steps.append("rotation")
                if want("shear", cfg.shear_p):
                    shx, shy = rng.uniform(*cfg.shear), rng.uniform(*cfg.shear)
                    matrix = matrix.then(_about(Affine(np.array([[1.0, shx, 0], [shy, 1.0, 0], [0, 0, 1]])), centre))
                    steps.append("shear")
                if force is None or "perspective" in force:
                    persp = self._sample_perspective(rng, matrix, w, h, centre, input_size)
                    if persp is not None:
                        matrix = persp
                        steps.append("perspective")
            if want("extra_scale", cfg.extra_scale_p):
                s = rng.uniform(*cfg.extra_scale)
                matrix = matrix.then(_about(Affine.scaling(s), centre))
                steps.append("extra_scale")
        # Enlarge the canvas to hold the whole warped image (as the reference does), top-left corner at (-0.5, -0.5).
        if steps:
            corners = matrix.apply(_corners(w, h))
            lo = corners.min(axis=0)
            hi = corners.max(axis=0)
            matrix = matrix.then(Affine.translation(-0.5 - lo[0], -0.5 - lo[1]))
            canvas = (max(1, int(np.ceil(hi[0] - lo[0] - 1e-6))), max(1, int(np.ceil(hi[1] - lo[1] - 1e-6))))
        else:
            canvas = (w, h)
        padded = (max(pad, canvas[0]), max(pad, canvas[1]))
        if cfg.random_crop:
            lo_off = [0, 0]
            hi_off = [max(0, padded[0] - input_size), max(0, padded[1] - input_size)]
            if cfg.keep_landmarks_in_view and keypoints is not None and len(keypoints):
                # Restrict the crop to offsets that keep every landmark inside (when some offset can).
                shift, _ = pad_crop(canvas, pad, input_size, (0, 0))
                pts = matrix.then(shift).apply(np.asarray(keypoints, dtype=np.float64))
                margin = cfg.landmark_margin * input_size
                for axis in (0, 1):
                    need_lo = int(np.ceil(pts[:, axis].max() + margin - (input_size - 1)))
                    need_hi = int(np.floor(pts[:, axis].min() - margin))
                    a, b = max(lo_off[axis], need_lo), min(hi_off[axis], need_hi)
                    if a <= b:
                        lo_off[axis], hi_off[axis] = a, b
            offset = (
                int(rng.integers(lo_off[0], hi_off[0] + 1)),
                int(rng.integers(lo_off[1], hi_off[1] + 1)),
            )
        else:
            offset = ((padded[0] - input_size) // 2, (padded[1] - input_size) // 2)
        crop, _ = pad_crop(canvas, pad, input_size, offset)
        return GeometricSample(matrix.then(crop), flipped, tuple(steps), canvas, offset)

    def _sample_perspective(
        self,
        rng: np.random.Generator,
        matrix: Homography,
        w: int,
        h: int,
        centre: tuple[float, float],
        input_size: int,
    ) -> Homography | None:
        """Add perspective terms (about the centre); redraw if the image would fold over the horizon."""
        factor = self.config.perspective_reference_size / float(input_size)
        for _ in range(10):
            px, py = (rng.uniform(*self.config.perspective) * factor for _ in range(2))
            candidate = matrix.then(Homography.perspective(px, py, centre))
            hom = _corners(w, h) @ candidate.matrix[2, :2] + candidate.matrix[2, 2]
            if np.all(hom > 0.2):
                return candidate
        return None

    @staticmethod
    def warp(image: np.ndarray, transform: Homography, input_size: int) -> np.ndarray:
        """Warp ``image`` (float32) to the ``input_size`` square with one ``cv2.warpPerspective`` (anti-aliased)."""
        from kneel.geometry import warp_perspective

        return warp_perspective(image.astype(np.float32, copy=False), transform, (input_size, input_size))

    def jitter_keypoints(
        self, keypoints: np.ndarray, rng: np.random.Generator, source_wh: tuple[int, int]
    ) -> np.ndarray:
        """Label jitter as the reference's ablation did it (KNEEL_REFERENCE 5.4, 5.7 step 1).

        With probability ``keypoint_jitter_p``, each landmark independently moves by integer offsets
        ``trunc(U(-j, j) * W)`` and ``trunc(U(-j, j) * H)`` px, with ``j = keypoint_jitter`` and ``W x H`` the source
        image (before any geometry: the warp then carries the jittered labels as it carries the image). Only the
        labels move; the image is untouched.
        """
        cfg = self.config
        if cfg.keypoint_jitter_p > 0 and rng.random() < cfg.keypoint_jitter_p:
            j = cfg.keypoint_jitter
            w, h = source_wh
            draws = rng.uniform(-j, j, size=(len(keypoints), 2)) * np.array([w, h], dtype=np.float64)
            return np.asarray(keypoints, dtype=np.float64) + np.trunc(draws)
        return keypoints

    # ------------------------------------------------------------------ photometric
    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise/blur (one of seven), gamma, cutout on a float32 0-255 image; returns float32 in 0-255."""
        cfg = self.config
        img = image.astype(np.float32, copy=True)
        if cfg.noise_p > 0 and rng.random() < cfg.noise_p:
            option = cfg.noise_options[int(rng.integers(len(cfg.noise_options)))]
            img = self.apply_noise(img, option, rng)
        if cfg.gamma_p > 0 and rng.random() < cfg.gamma_p:
            gamma = rng.uniform(*cfg.gamma)
            img = (255.0 * np.power(np.clip(img, 0, 255) / 255.0, 1.0 / gamma)).astype(np.float32)
        if cfg.cutout_fraction > 0 and cfg.cutout_p > 0 and rng.random() < cfg.cutout_p:
            img = self.cutout(img, rng)
        return np.clip(img, 0.0, 255.0, out=img)

    def apply_noise(self, img: np.ndarray, option: str, rng: np.random.Generator) -> np.ndarray:
        """Apply one named noise/blur option (see :data:`NOISE_OPTIONS`)."""
        cfg = self.config
        if option == "identity":
            return img
        if option == "salt_pepper":
            return _salt_pepper(img, rng.uniform(*cfg.salt_pepper), rng)
        if option == "gaussian_blur":
            k = int(rng.choice(cfg.blur_kernels))
            return cv2.GaussianBlur(img, (k, k), cfg.blur_sigma)
        if option == "median_blur":
            return _median(img, int(rng.choice(cfg.blur_kernels)))
        if option == "gaussian_noise":
            gain = rng.uniform(*cfg.gaussian_noise)
            noise = rng.standard_normal(img.shape)
            noise = (noise - noise.min()) / max(noise.max() - noise.min(), 1e-12) * 255.0
            return ((1.0 - gain) * img + gain * noise).astype(np.float32)
        if option == "salt_pepper_then_median":
            img = _salt_pepper(img, rng.uniform(*cfg.salt_pepper_strong), rng)
            if rng.random() < 0.5:
                img = _median(img, int(rng.choice(cfg.blur_kernels)))
            return img
        if option == "median_then_salt_pepper":
            if rng.random() < 0.5:
                img = _median(img, int(rng.choice(cfg.blur_kernels)))
            return _salt_pepper(img, rng.uniform(*cfg.salt_pepper), rng)
        raise ConfigError(f"unknown noise option {option!r}; known: {NOISE_OPTIONS}")

    def cutout(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Zero a square of ``cutout_fraction`` of the image side, placed uniformly inside the image."""
        h, w = img.shape[:2]
        cw, ch = int(self.config.cutout_fraction * w), int(self.config.cutout_fraction * h)
        if cw < 1 or ch < 1:
            return img
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        img[y0 : y0 + ch, x0 : x0 + cw] = 0.0
        return img


def _about(transform: Affine, centre: tuple[float, float]) -> Affine:
    cx, cy = centre
    return Affine.translation(-cx, -cy).then(transform).then(Affine.translation(cx, cy))


def _corners(w: int, h: int) -> np.ndarray:
    """The outer corners (pixel edges) of a ``w x h`` image."""
    return np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])


def _salt_pepper(img: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction ``gain`` of pixels to 255 (salt) or 0 (pepper), half each."""
    out = img.copy()
    hit = rng.random(img.shape) < gain
    salt = rng.random(img.shape) < 0.5
    out[hit & salt] = 255.0
    out[hit & ~salt] = 0.0
    return out


def _median(img: np.ndarray, k: int) -> np.ndarray:
    """Median blur; OpenCV needs uint8 for kernels above 5, float32 is fine for 3 and 5."""
    if k <= 5:
        return cv2.medianBlur(img.astype(np.float32), k)
    return cv2.medianBlur(np.clip(img, 0, 255).astype(np.uint8), k).astype(np.float32)
