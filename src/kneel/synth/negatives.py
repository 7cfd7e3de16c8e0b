"""Films without a knee, and narrow single-knee films, to measure and test kneel's knee presence decision.

Every file is a DX DICOM with a spacing and no BodyPartExamined, so only the image can tell that it holds no knee;
the same ``seed`` writes the same files. Kinds of negatives (:data:`NEGATIVE_KINDS`):

* ``empty``: an exposed film with nothing on it (background, heel effect, noise, collimation, markers);
* ``shin`` / ``thigh``: a synthetic bilateral film cut 60 mm below / above the knee joints: legs without the joint;
* ``noise``: white noise, or noise smoothed at a random scale of 1-20 mm;
* ``shapes``: random smooth ellipses, bars and gradients;
* ``natural``: the pictures and elevation maps shipped with matplotlib, given a radiograph's spacing.

:func:`write_single_knee_films` cuts one knee, with its ground truth, out of synthetic bilateral films: films of
18-27 cm width, narrower than the 28 cm that make kneel treat a film as a single-knee film (``kneel synth`` writes
full-width films, where a single knee occupies one half).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kneel.io.dicom_writer import write_dicom
from kneel.synth.acquisition import expose
from kneel.synth.film import plan_film, render_film

__all__ = ["NEGATIVE_KINDS", "NegativeFilm", "write_negatives", "write_single_knee_films", "natural_images"]

NEGATIVE_KINDS = ("empty", "shin", "thigh", "noise", "shapes", "natural")
_JOINT_MARGIN_MM = 60.0
"""A shin or thigh film stops this far from every knee's tibial landmark 4."""
_NO_BODY_PART = {"BodyPartExamined": "", "ImageComments": "synthetic non-knee image (kneel presence tests)"}


@dataclass(frozen=True)
class NegativeFilm:
    """One written negative: path relative to the output folder, its kind, size in pixels and spacing (mm)."""

    file: str
    kind: str
    shape: tuple[int, int]
    spacing: tuple[float, float]


def _uid(seed: int, kind: str, index: int) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["kneel-negative", str(seed), kind, str(index)])


def _to_u16(image: np.ndarray, bits: int = 12) -> np.ndarray:
    lo, hi = float(np.min(image)), float(np.max(image))
    scaled = (image - lo) / max(hi - lo, 1e-9) * (2**bits - 1)
    return np.clip(np.round(scaled), 0, 2**bits - 1).astype(np.uint16)


def _write(out: Path, name: str, pixels: np.ndarray, spacing: tuple[float, float], uid: str, **kwargs: object) -> None:
    photometric = str(kwargs.pop("photometric", "MONOCHROME2"))
    bits = int(kwargs.pop("bits_stored", 12))  # type: ignore[call-overload]
    extra = dict(_NO_BODY_PART)
    extra.update(kwargs.pop("extra", {}) or {})  # type: ignore[arg-type]
    write_dicom(out / name, pixels, spacing=spacing, photometric=photometric, bits_stored=bits,
                sop_instance_uid=uid, extra=extra, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def _film_size(rng: np.random.Generator, spacing: float) -> tuple[int, int]:
    """A cassette between 24 x 30 cm and 35 x 43 cm (either orientation), in pixels."""
    w_mm, h_mm = rng.uniform(240.0, 432.0), rng.uniform(240.0, 432.0)
    return int(round(h_mm / spacing)), int(round(w_mm / spacing))


def _cut_film(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, object]:
    """A synthetic bilateral film cut to the rows more than 60 mm below (shin) or above (thigh) both knee joints."""
    for _ in range(50):
        plan = plan_film(rng, "test")
        row_mm = plan.layout.spacing[0]
        ys = [float(k.original_px[4, 1]) for k in plan.knees]
        margin = _JOINT_MARGIN_MM / row_mm
        if kind == "shin":
            r0, r1 = int(np.ceil(max(ys) + margin)), plan.layout.rows
        else:
            r0, r1 = 0, int(np.floor(min(ys) - margin))
        if (r1 - r0) * row_mm >= 70.0:
            return render_film(plan)[r0:r1], plan
    raise RuntimeError(f"no {kind} film found in 50 draws")  # not reached with the published placements


def natural_images() -> list[tuple[str, np.ndarray]]:
    """Grey pictures and elevation maps that ship with matplotlib (name, float image); empty without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    root = Path(matplotlib.get_data_path()) / "sample_data"
    out: list[tuple[str, np.ndarray]] = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        image = cv2.imread(str(root / name), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            out.append((Path(name).stem, image.astype(np.float32)))
    for name in ("topobathy.npz", "jacksboro_fault_dem.npz"):
        try:
            with np.load(root / name) as data:
                key = "topo" if "topo" in data else "elevation"
                out.append((Path(name).stem, np.asarray(data[key], dtype=np.float32)))
        except (OSError, KeyError, ValueError):
            continue
    return out


def write_negatives(
    out: str | os.PathLike[str], n_per_kind: int = 4, seed: int = 0, kinds: tuple[str, ...] = NEGATIVE_KINDS
) -> list[NegativeFilm]:
    """Write ``n_per_kind`` films of each kind into ``out`` (``<kind>_<i>.dcm``) and ``negatives.csv``.

    ``natural`` cycles through the pictures matplotlib ships (none without matplotlib), each at a random spacing.
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    films: list[NegativeFilm] = []
    for kind in kinds:
        rng = np.random.default_rng([seed, NEGATIVE_KINDS.index(kind)])
        pictures = natural_images() if kind == "natural" else []
        if kind == "natural" and not pictures:
            continue
        for i in range(n_per_kind):
            label, source = pictures[i % len(pictures)] if pictures else (kind, None)
            name = f"{kind}_{i}.dcm" if kind != "natural" else f"natural_{i}_{label}.dcm"
            uid = _uid(seed, kind, i)
            if kind in ("shin", "thigh"):
                pixels, plan = _cut_film(rng, kind)
                acq = plan.acquisition  # type: ignore[attr-defined]
                spacing = tuple(float(v) for v in plan.layout.spacing)  # type: ignore[attr-defined]
                _write(root, name, pixels, spacing, uid, photometric=acq.photometric, bits_stored=acq.bits_stored)
            elif kind == "empty":
                plan = plan_film(rng, "test")
                att = np.zeros((plan.layout.rows, plan.layout.cols), np.float32)
                pixels = expose(att, plan.acquisition, plan.layout, plan.noise_seed)
                acq = plan.acquisition
                spacing = tuple(float(v) for v in plan.layout.spacing)
                _write(root, name, pixels, spacing, uid, photometric=acq.photometric, bits_stored=acq.bits_stored)
            else:
                s = float(rng.uniform(0.1, 0.2))
                if kind == "natural":
                    assert source is not None
                    target_mm = rng.uniform(150.0, 430.0)
                    s = float(target_mm / max(source.shape))
                    image = source
                else:
                    h, w = _film_size(rng, s)
                    image = _noise(rng, h, w, s) if kind == "noise" else _shapes(rng, h, w, s)
                pixels = _to_u16(image)
                spacing = (s, s)
                _write(root, name, pixels, spacing, uid)
            films.append(NegativeFilm(name, kind, (int(pixels.shape[0]), int(pixels.shape[1])), spacing))
    with open(root / "negatives.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kind", "rows", "columns", "row_mm", "col_mm"])
        for f in films:
            writer.writerow([f.file, f.kind, *f.shape, *f.spacing])
    return films


def _noise(rng: np.random.Generator, h: int, w: int, spacing: float) -> np.ndarray:
    image = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    if rng.random() < 0.75:
        sigma = float(rng.uniform(1.0, 20.0)) / spacing
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image


def _shapes(rng: np.random.Generator, h: int, w: int, spacing: float) -> np.ndarray:
    image = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    image += float(rng.uniform(-1, 1)) * xs / w + float(rng.uniform(-1, 1)) * ys / h
    for _ in range(int(rng.integers(2, 9))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a, b = rng.uniform(10, 150) / spacing, rng.uniform(10, 150) / spacing
        level = float(rng.uniform(0.3, 2.0))
        if rng.random() < 0.5:
            inside = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0
        else:
            inside = (np.abs(xs - cx) <= a) & (np.abs(ys - cy) <= b / 3)
        image += level * inside
    return cv2.GaussianBlur(image, (0, 0), 2.0 / spacing)


def write_single_knee_films(
    out: str | os.PathLike[str], n: int = 8, seed: int = 0, laterality_fraction: float = 0.75
) -> list[tuple[str, str]]:
    """Cut one knee out of each of ``n`` synthetic bilateral films (held-out shapes): films 18-27 cm wide.

    Writes ``<i>.dcm``, ``ground_truth.csv`` (``file,side,landmark,x_px,y_px``) and returns ``(file, side)``. A
    share ``laterality_fraction`` of the films carries ImageLaterality (the others make kneel assume ``R``).
    """
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    written: list[tuple[str, str]] = []
    rows: list[list[object]] = []
    for i in range(n):
        plan = plan_film(rng, "test")
        pixels = render_film(plan)
        knee = plan.knees[int(rng.integers(len(plan.knees)))]
        col_mm = plan.layout.spacing[1]
        width = int(round(rng.uniform(180.0, 270.0) / col_mm))
        cx = float(knee.original_px[4, 0]) + rng.uniform(-30.0, 30.0) / col_mm
        x0 = int(np.clip(round(cx - width / 2), 0, max(plan.layout.cols - width, 0)))
        crop = np.ascontiguousarray(pixels[:, x0 : x0 + width])
        name = f"{i:03d}.dcm"
        acq = plan.acquisition
        tagged = bool(rng.random() < laterality_fraction)
        write_dicom(root / name, crop, spacing=plan.layout.spacing, photometric=acq.photometric,
                    bits_stored=acq.bits_stored, sop_instance_uid=_uid(seed, "single", i),
                    laterality=knee.side if tagged else None)  # fmt: skip
        written.append((name, knee.side))
        for k, (x, y) in enumerate(knee.original_px):
            rows.append([name, knee.side, k, float(x) - x0, float(y)])
    with open(root / "ground_truth.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "side", "landmark", "x_px", "y_px"])
        writer.writerows(rows)
    return written
