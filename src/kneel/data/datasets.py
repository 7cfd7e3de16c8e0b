"""Torch datasets over a prepared-data folder (``kneel prepare``): low-cost half images and high-cost ROIs.

Each item goes from the prepared image to the network input by ONE transform (validation: an exact
:class:`~kneel.geometry.Affine`, exposed by :meth:`LandmarkDataset.input_transform`; training: one random
:class:`~kneel.geometry.Homography` from :class:`~kneel.data.augment.Augmentation`), applied to the image and the
landmarks alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from kneel.data.augment import Augmentation
from kneel.data.layout import (
    STAGE_SPACING_MM,
    DataLayoutError,
    read_metadata,
    row_landmarks,
    row_transform,
    stage_dir,
)
from kneel.data.transforms import pad_crop, rescale
from kneel.geometry import Affine, Homography, warp
from kneel.landmarks import CENTRE_LANDMARK

__all__ = ["LandmarkDataset"]


class LandmarkDataset(Dataset):
    """Knees of one stage of a prepared-data folder, as network inputs with normalised landmark targets.

    Low-cost ('lc'): the half radiograph holding the knee (right knee = image-left half ``[:, :W//2]``, left knee =
    image-right half ``[:, W//2:]``, no mirroring, as the reference) at 1 mm/px; one target, the knee centre (T4).
    High-cost ('hc'): the 140 mm ROI at 0.3 mm/px (left knees already mirrored); 16 targets.

    Geometry: [resample to ``input_spacing``] -> pad to ``pad x pad`` (centred, zeros) -> crop ``input_size`` (centre
    without augmentation, random with it). With ``input_spacing`` (or ``scale``) the pad is kept in the same pixels
    of the network input, e.g. ``input_size=128, pad=148`` for the tiny configs.

    Item (a dict; the default collate batches it):
        image: float32 tensor (3, S, S), 0-255, not normalised (the training loop normalises).
        keypoints: float32 tensor (K, 2), ``(x / S, y / S)`` of the landmarks in the network input.
        subject_id (int), side ('R'/'L'), kl (int), image_id (``'<subject>_<side>'``), index (int).
        spacing_mm: float, pixel spacing of the network input (mm per input pixel, before augmentation).

    Determinism: an augmented item depends only on ``(seed, epoch, index)``; call :meth:`set_epoch` each epoch
    (before iterating; with ``persistent_workers=True`` the workers keep the epoch they were started with).

    Args:
        data_dir: the ``DATA`` folder.
        stage: 'lc' or 'hc'.
        subjects: keep only these subject ids (e.g. the training subjects of a fold); None = all.
        augment: training augmentation; None = validation geometry.
        input_size: network input side ``S`` (450 in the paper).
        pad: pad side before the crop (520 in the paper).
        seed: base seed of the augmentation.
        input_spacing: mm per network-input pixel; the prepared image is resampled (anti-aliased) to it.
        scale: alternatively, the resampling factor (``prepared spacing / input_spacing``); give at most one.
        cache: keep decoded images in memory (per process); a dict is used as the store, so datasets over the same
            prepared folder (training, validation, normalisation statistics) can share one.
    """

    def __init__(
        self,
        data_dir: str | Path,
        stage: str,
        subjects: Iterable[int] | None = None,
        augment: Augmentation | None = None,
        input_size: int = 450,
        pad: int = 520,
        seed: int = 0,
        *,
        input_spacing: float | None = None,
        scale: float | None = None,
        cache: bool | dict[str, np.ndarray] = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.stage = stage
        self.root = stage_dir(data_dir, stage)
        table = read_metadata(data_dir, stage)
        if subjects is not None:
            wanted = {int(s) for s in subjects}
            table = table[table["subject_id"].isin(wanted)]
        self.records = table.reset_index(drop=True)
        self.augment = augment
        self.input_size = int(input_size)
        self.pad = int(pad)
        if self.pad < self.input_size:
            raise DataLayoutError(f"pad ({pad}) must be at least input_size ({input_size})")
        self.seed = int(seed)
        self.epoch = 0
        self.prepared_spacing = float(STAGE_SPACING_MM[stage])
        if input_spacing is not None and scale is not None:
            raise ValueError("give input_spacing or scale, not both")
        if scale is not None:
            input_spacing = self.prepared_spacing / float(scale)
        self._rows: list[dict[str, Any]] = self.records.to_dict("records")
        if self._rows:
            self.prepared_spacing = float(self._rows[0]["spacing_mm"])
        self.input_spacing = self.prepared_spacing if input_spacing is None else float(input_spacing)
        self.cache = cache is not False
        self._images: dict[str, np.ndarray] = cache if isinstance(cache, dict) else {}

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def num_keypoints(self) -> int:
        return 1 if self.stage == "lc" else 16

    @property
    def subject_ids(self) -> list[int]:
        """Distinct subject ids in this dataset, sorted."""
        return sorted({int(r["subject_id"]) for r in self._rows})

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (items depend only on seed, epoch and index)."""
        self.epoch = int(epoch)

    def row(self, index: int) -> dict[str, Any]:
        """The metadata row of item ``index`` (see :mod:`kneel.data.layout`)."""
        return self._rows[index]

    # ------------------------------------------------------------------ geometry
    def _half(self, index: int) -> tuple[Affine, tuple[int, int, int, int]]:
        """Prepared image -> the image the network sees before resampling (lc: a half), and its slice (x0,y0,w,h)."""
        r = self._rows[index]
        w, h = int(r["width"]), int(r["height"])
        if self.stage == "lc":
            # The reference's inference split (R = [0, W//2 + W%2), L = [W//2, W//2 + W//2)), which kneel's
            # inference uses too, so a knee is framed identically in training and in prediction.
            if r["side"] == "R":
                return Affine.identity(), (0, 0, w // 2 + w % 2, h)
            return Affine.translation(-(w // 2), 0), (w // 2, 0, w // 2, h)
        return Affine.identity(), (0, 0, w, h)

    def _to_scaled(self, index: int) -> tuple[Affine, tuple[int, int]]:
        """Half/ROI pixels -> resampled pixels at ``input_spacing``, and the resampled size."""
        _, (_, _, w, h) = self._half(index)
        if self.input_spacing == self.prepared_spacing:
            return Affine.identity(), (w, h)
        return rescale((w, h), self.prepared_spacing, self.input_spacing)

    def input_transform(self, index: int) -> Affine:
        """Exact prepared-image pixels -> network-input pixels of item ``index`` (validation geometry).

        Invert it to map a prediction (``keypoints * S``) back to the prepared image; compose with
        :meth:`original_transform` to reach the original DICOM pixels.
        """
        half, _ = self._half(index)
        to_scaled, size = self._to_scaled(index)
        crop, _ = pad_crop(size, self.pad, self.input_size)
        return half.then(to_scaled).then(crop)

    def original_transform(self, index: int) -> Affine:
        """Exact original DICOM pixels -> network-input pixels of item ``index`` (validation geometry)."""
        return row_transform(self._rows[index]).then(self.input_transform(index))

    def keypoints_prepared(self, index: int) -> np.ndarray:
        """Target landmarks of item ``index`` in prepared-image pixels: (1, 2) knee centre for lc, (16, 2) for hc."""
        pts = row_landmarks(self._rows[index])
        if self.stage == "lc":
            return pts[CENTRE_LANDMARK : CENTRE_LANDMARK + 1]
        return pts

    # ------------------------------------------------------------------ items
    def _image(self, index: int) -> np.ndarray:
        rel = str(self._rows[index]["image"])
        if rel in self._images:
            return self._images[rel]
        path = self.root / rel
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataLayoutError("cannot read prepared image", path)
        if self.cache:
            self._images[rel] = img
        return img

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        r = self._rows[index]
        full = self._image(index)
        half, (x0, y0, w, h) = self._half(index)
        src = full[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
        keypoints = half.apply(self.keypoints_prepared(index))
        to_scaled, scaled_size = self._to_scaled(index)
        s = self.input_size
        if self.augment is None:
            crop, _ = pad_crop(scaled_size, self.pad, s)
            transform = to_scaled.then(crop)
            out = warp(src, transform, (s, s)).astype(np.float32, copy=False)
            keypoints = transform.apply(keypoints)
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            keypoints = self.augment.jitter_keypoints(keypoints, rng, (w, h))  # source frame, before the geometry
            geo = self.augment.sample_geometry(rng, scaled_size, s, self.pad, keypoints=to_scaled.apply(keypoints))
            transform = Homography.from_affine(to_scaled).then(geo.transform)
            out = self.augment.warp(src, transform, s)
            keypoints = transform.apply(keypoints)
            out = self.augment.photometric(out, rng)
        # Three identical channels, made in numpy (torch's repeat is slow on tiny tensors in worker processes).
        image = torch.from_numpy(np.repeat(np.asarray(out, dtype=np.float32)[None], 3, axis=0))
        return {
            "image": image,
            "keypoints": torch.from_numpy((keypoints / s).astype(np.float32)),
            "subject_id": int(r["subject_id"]),
            "side": str(r["side"]),
            "kl": int(r["kl"]),
            "spacing_mm": float(self.input_spacing),
            "image_id": f"{int(r['subject_id'])}_{r['side']}",
            "index": int(index),
        }
