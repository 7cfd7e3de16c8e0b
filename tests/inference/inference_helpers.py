"""Test material for inference and the service: tiny random-weight models in our format, simple DICOM films.

Imported by ``tests/inference/conftest.py`` and ``tests/service/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kneel.landmarks import KneeSide


def make_model_dir(root: Path, folds: int = 2, seed: int = 0) -> Path:
    """``root/{lc,hc}/fold_<k>/`` with the tiny presets and seeded random weights (plumbing, not accuracy)."""
    from kneel.models import ModelConfig, create_model, save_fold

    for stage in ("lc", "hc"):
        preset = f"kneel_tiny_{stage}"
        for k in range(folds):
            torch.manual_seed(seed * 100 + k + (50 if stage == "hc" else 0))
            model = create_model(preset)
            save_fold(model, ModelConfig.from_preset(preset, fold=k), root / stage / f"fold_{k}")
    return root


def knee_film(
    shape=(840, 800), spacing=(0.5, 0.5), knees=((KneeSide.R, (200.0, 420.0)), (KneeSide.L, (600.0, 410.0)))
) -> np.ndarray:
    """A uint16 film: dark background, a bright 'leg' (soft tissue + two bone blocks) at each given knee centre."""
    h, w = shape
    row, col = spacing
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full(shape, 300.0, np.float32)
    for _, (cx, cy) in knees:
        dx_mm, dy_mm = (xs - cx) * col, (ys - cy) * row
        img += 900.0 * (np.abs(dx_mm) < 70)  # soft tissue
        img += 1500.0 * ((np.abs(dx_mm) < 40) & (np.abs(dy_mm) > 3))  # femur/tibia, joint space at the centre
    rng = np.random.default_rng(0)
    img += rng.normal(0, 20, shape)
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    spacing: tuple[float, float] | None = (0.5, 0.5),
    laterality: str | None = None,
    uid: str | None = None,
    extra: dict | None = None,
) -> Path:
    """A minimal uncompressed DX DICOM file (MONOCHROME2, 12 bits stored), with ImagerPixelSpacing if given;
    ``extra`` sets more attributes by keyword (e.g. ``RescaleSlope``)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "TEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if spacing is not None:
        ds.ImagerPixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    if laterality:
        ds.ImageLaterality = laterality
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def blob_film(shape, spacing, centres, sigma_mm: float = 12.0) -> np.ndarray:
    """A film with a bright Gaussian blob at each knee centre on a faint 'leg' of soft tissue (the half is present).

    Intensity normalisation clips the top 1 % of pixels: the top of each blob becomes a flat disc (radius ~16 mm),
    still symmetric, so its centroid does not move (keep blobs 25 mm from the border).
    """
    h, w = shape
    row, col = spacing
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full(shape, 300.0)
    for cx, cy in centres:
        dx, dy = (xs - cx) * col, (ys - cy) * row
        img += 300.0 * (np.abs(dx) < 70)
        img += 2600.0 * np.exp(-(dx**2 + dy**2) / (2 * sigma_mm**2))
    return np.clip(img, 0, 4095).astype(np.uint16)


class CentroidEnsemble:
    """A transparent stand-in for a trained network: every output is the centroid of the brightest blob.

    It implements the ensemble interface (``predict``, ``config``, ``len``) with a real model configuration, so the
    real pipeline (normalisation, warps, inverses, presence, refine) runs on it with answers known in advance.
    """

    def __init__(self, preset: str) -> None:
        from kneel.models import ModelConfig

        self.config = ModelConfig.from_preset(preset)
        self.k = 16 if self.config.stage == "hc" else 1
        self.precision = "fp32"

    def __len__(self) -> int:
        return 1

    def predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images[:, 0].double()
        b, h, w = x.shape
        peak = x.amax(dim=(1, 2), keepdim=True)
        weight = (x - 0.75 * peak).clamp(min=0)
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
        )
        total = weight.sum(dim=(1, 2)).clamp(min=1e-12)
        cx = (weight * xs).sum(dim=(1, 2)) / total / w
        cy = (weight * ys).sum(dim=(1, 2)) / total / h
        mean = torch.stack([cx, cy], dim=-1)[:, None, :].expand(b, self.k, 2).float()
        return mean, torch.zeros(b, self.k)
