"""Training data and inference frame a knee with the same transform, to the pixel, for every stage geometry.

A model learns where landmarks lie in its input; if inference framed the knee differently from the dataset the model
was trained on, every prediction would be biased by the difference. Both sides are built independently
(``kneel prepare`` + ``LandmarkDataset`` versus ``kneel.inference.geometry``), so this test compares them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kneel.data.datasets import LandmarkDataset
from kneel.data.prepare import prepare_datasets
from kneel.inference.geometry import StageGeometry, hc_transform, lc_transform
from kneel.landmarks import CENTRE_LANDMARK, KneeSide
from kneel.synth import generate_cohort

# (stage, working spacing of the network input in mm, pad, crop): the paper models and the tiny presets.
GEOMETRIES = [
    ("hc", 0.3, 520, 450),
    ("hc", 0.3 * 450 / 128, 148, 128),
    ("lc", 1.0, 520, 450),
    ("lc", 450 / 128, 148, 128),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("framing")
    cohort = root / "cohort"
    generate_cohort(cohort, n=3, seed=5, layout="flat", split="train", single_knee_fraction=0.0, workers=1,
                    progress=False)  # fmt: skip
    prepare_datasets(cohort / "ground_truth.csv", root / "data", images=cohort, workers=1, folds=2, progress=False)
    return root / "data"


@pytest.mark.parametrize(("stage", "spacing", "pad", "crop"), GEOMETRIES)
def test_dataset_and_inference_use_the_same_transform(prepared: Path, stage: str, spacing: float, pad: int, crop: int):
    dataset = LandmarkDataset(prepared, stage, input_size=crop, pad=pad, input_spacing=spacing)
    geom = StageGeometry(spacing_mm=spacing, pad=pad, crop=crop)
    assert len(dataset) >= 4
    for i in range(len(dataset)):
        row = dataset.row(i)
        side = KneeSide.parse(row["side"])
        original_spacing = (float(row["source_spacing_row_mm"]), float(row["source_spacing_col_mm"]))
        training = dataset.original_transform(i)
        if stage == "hc":
            landmarks = np.asarray(json.loads(row["landmarks_original"]), dtype=np.float64)
            inference = hc_transform(landmarks[CENTRE_LANDMARK], original_spacing, side, geom)
        else:
            from kneel.io import read_radiograph

            shape = read_radiograph(Path(row["source"])).image.shape
            inference = lc_transform(shape, original_spacing, side, geom)
        np.testing.assert_allclose(training.matrix, inference.matrix, atol=1e-6, err_msg=f"{row['image']} {side}")
