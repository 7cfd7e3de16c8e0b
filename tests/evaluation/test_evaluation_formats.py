"""Ground truth in the VIA and reference bf_landmarks formats; spacing read from real DICOM files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kneel.evaluation import evaluate
from kneel.evaluation.matching import EvaluationInputError, read_ground_truth
from kneel.io.annotations import padded_to_original, read_bf_landmarks, roi_to_padded
from kneel.io.dicom_writer import write_dicom
from kneel.resources import bf_landmarks_csv, via_points_csv


def test_via_ground_truth_is_read_in_original_pixels():
    gt = read_ground_truth(via_points_csv())
    assert {"file", "side", "landmark", "x_px", "y_px"} <= set(gt.columns)
    first = gt[(gt["side"] == "L")].groupby("file").head(16)
    assert sorted(first["landmark"].unique()) == list(range(16))
    # tibial x runs 3129 -> 3017 on the first L knee of the file (reference spec section 1)
    row = gt[(gt["file"] == "9413319.png") & (gt["side"] == "L") & (gt["landmark"] == 0)].iloc[0]
    assert (row["x_px"], row["y_px"]) == (3129.0, 1892.0)


def test_bf_ground_truth_uses_each_images_spacing(tmp_path: Path):
    anns = [a for a in read_bf_landmarks(bf_landmarks_csv())][:4]
    subjects = sorted({a.subject_id for a in anns})[:2]
    images = tmp_path / "images"
    images.mkdir()
    spacing = {subjects[0]: (0.15, 0.15), subjects[1]: (0.2, 0.2)}
    for sid in subjects:
        write_dicom(images / f"{sid}.dcm", np.zeros((64, 64), np.uint16), spacing=spacing[sid], bits_stored=12)
    rows = []
    for a in anns:
        if a.subject_id not in spacing:
            continue
        xy = padded_to_original(roi_to_padded(a), spacing[a.subject_id])
        for k, (x, y) in enumerate(xy):
            rows.append(
                {"file": f"{a.subject_id}.dcm", "side": a.side.value, "landmark": k, "x_px": x + 10.0, "y_px": y}
            )
    pred = tmp_path / "pred.csv"
    pd.DataFrame(rows).to_csv(pred, index=False)
    report = evaluate(pred, bf_landmarks_csv(), out=tmp_path / "out", images=images, examples=False)
    knees = report.sets[0]
    assert knees.num_knees == len({(r["file"], r["side"]) for r in rows})
    # 10 px error at each image's own spacing
    for i, file in enumerate(knees.files):
        expected = 10.0 * spacing[int(Path(file).stem)][1]
        assert np.allclose(knees.errors[i], expected)
    assert set(knees.spacing_source) == {"image"}
    assert knees.kl.tolist() == [
        next(a.kl for a in anns if a.subject_id == int(f) and a.side.value == s)
        for f, s in zip(knees.files, knees.sides, strict=True)
    ]

    with pytest.raises(EvaluationInputError, match=r"\(images=DIR\)"):  # Python names the argument
        read_ground_truth(bf_landmarks_csv())
