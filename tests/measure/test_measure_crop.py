"""``kneel crop`` on a synthetic film: image content lands where the recorded affine and the crop landmarks say."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from kneel.cli import main
from kneel.io import read_radiograph
from kneel.io.dicom_writer import write_dicom
from kneel.measure import measure
from kneel.measure.crop import AFFINE_COLUMNS, CropSettings, crop
from kneel.measure.definitions import MEASUREMENT_NAMES
from kneel.synth import plan_film, render_film

SPACING = (0.158, 0.1)  # strongly anisotropic (row_mm, col_mm): the film's pixels are 1.58 times taller than wide
DOT_SIGMA_MM = 1.0
DOT_LANDMARKS = (0, 4, 8)  # far enough apart (>= 20 mm) that no dot's tail reaches another's window


def _dots(shape: tuple[int, int], points: np.ndarray, amplitude: float) -> np.ndarray:
    """Gaussian dots, round in mm (elliptic in these pixels), evaluated near each point only."""
    out = np.zeros(shape, np.float64)
    sx, sy = DOT_SIGMA_MM / SPACING[1], DOT_SIGMA_MM / SPACING[0]
    for x, y in points:
        x0, x1 = int(x - 6 * sx), int(x + 6 * sx) + 2
        y0, y1 = int(y - 6 * sy), int(y + 6 * sy) + 2
        ys, xs = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1] += amplitude * np.exp(-(((xs - x) / sx) ** 2 + ((ys - y) / sy) ** 2) / 2.0)
    return out


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    """A synthetic bilateral film twice (without and with bright dots at known pixels), its truth and dot points."""
    root = tmp_path_factory.mktemp("crop_film")
    plan = plan_film(np.random.default_rng(0))
    pixels = render_film(plan).astype(np.float64)
    if plan.acquisition.photometric == "MONOCHROME1":
        pixels = float(2**plan.acquisition.bits_stored - 1) - pixels
    base = pixels * (30000.0 / pixels.max())
    rows = []
    dots = []
    for knee in plan.annotated:
        placed = knee[0]
        for k, (x, y) in enumerate(placed.original_px):
            rows.append({"file": "film.dcm", "side": placed.side, "landmark": k, "x_px": x, "y_px": y})
        pts = placed.original_px
        dots += [pts[k] for k in DOT_LANDMARKS]
        # off every landmark: from T4, 25 mm to the image right and 35 mm up; 30 mm left and 40 mm down
        dots.append(pts[4] + np.array([25.0 / SPACING[1], -35.0 / SPACING[0]]))
        dots.append(pts[4] + np.array([-30.0 / SPACING[1], 40.0 / SPACING[0]]))
    dots = np.array(dots)
    for name, image in (("plain", base), ("dots", base + _dots(base.shape, dots, 20000.0))):
        (root / name).mkdir()
        write_dicom(root / name / "film.dcm", np.rint(image).astype(np.uint16), spacing=SPACING)
    truth = pd.DataFrame(rows)
    truth.to_csv(root / "truth.csv", index=False)
    return root, truth, dots


def _crops(root, name: str, settings: CropSettings):
    summary = crop(root / "truth.csv", root / f"out_{name}_{settings.level}", settings, images=root / name)
    assert summary.failed == 0, summary.crops["status"].tolist()
    return summary


def _centroid(image: np.ndarray, near: np.ndarray, radius: int = 8) -> np.ndarray:
    cx, cy = (int(round(v)) for v in near)
    window = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    ys, xs = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    w = np.clip(window, 0, None)
    return np.array([np.sum(w * xs) / w.sum(), np.sum(w * ys) / w.sum()])


@pytest.mark.parametrize("level", [False, True])
def test_dots_appear_where_the_recorded_affine_maps_them(film, level):
    root, truth, dots = film
    settings = CropSettings(intensity="raw", level=level)
    plain, dotted = _crops(root, "plain", settings), _crops(root, "dots", settings)
    half = settings.size_px // 2
    for (_, a), (_, b) in zip(plain.crops.iterrows(), dotted.crops.iterrows(), strict=True):
        matrix = np.array([[a[c] for c in AFFINE_COLUMNS[:3]], [a[c] for c in AFFINE_COLUMNS[3:]]])
        img_a = cv2.imread(str(plain.out / a["crop"]), cv2.IMREAD_UNCHANGED)
        img_b = cv2.imread(str(dotted.out / b["crop"]), cv2.IMREAD_UNCHANGED)
        assert img_a.dtype == np.uint16 and img_a.shape == (350, 350)
        difference = img_b.astype(np.float64) - img_a.astype(np.float64)
        mapped = dots @ matrix[:, :2].T + matrix[:, 2]
        inside = np.all((mapped > 10) & (mapped < settings.size_px - 10), axis=1)
        assert inside.sum() >= 5  # this knee's five dots (the other knee's are outside its crop)
        for expected in mapped[inside]:
            found = _centroid(difference, expected)
            assert np.allclose(found, expected, atol=0.02), (a["side"], expected, found)
        # T4 is the crop centre; the lateral margin T0 is on the left of every crop, left knees included (mirrored).
        pts = truth[truth["side"] == a["side"]].sort_values("landmark")[["x_px", "y_px"]].to_numpy()
        crop_pts = pts @ matrix[:, :2].T + matrix[:, 2]
        assert np.allclose(crop_pts[4], [half, half], atol=1e-9)
        assert crop_pts[0, 0] < half < crop_pts[8, 0]
        assert bool(a["mirrored"]) is (a["side"] == "L")
        # Distances in the crop are the film's distances in mm (anisotropic spacing), at 0.4 mm per crop pixel.
        mm = (pts[8] - pts[0]) * np.array([SPACING[1], SPACING[0]])
        assert np.linalg.norm(crop_pts[8] - crop_pts[0]) * 0.4 == pytest.approx(np.linalg.norm(mm), rel=1e-12)
        if level:
            assert crop_pts[1, 1] == pytest.approx(crop_pts[7, 1], abs=1e-9)


@pytest.mark.parametrize("level", [False, True])
def test_crop_landmarks_measure_like_the_film(film, level):
    root, _, _ = film
    summary = _crops(root, "plain", CropSettings(level=level))
    on_film = measure(root / "truth.csv", images=root / "plain").set_index("side")
    in_crops = measure(summary.out / "landmarks.csv").set_index("side")
    assert (in_crops["spacing_source"].str.startswith("table")).all()
    for name in MEASUREMENT_NAMES:
        for side in ("R", "L"):
            expected = 0.0 if (level and name == "plateau_obliquity_deg") else on_film.at[side, name]
            assert in_crops.at[side, name] == pytest.approx(expected, abs=1e-9), (side, name)


def test_unmirrored_left_knee_is_levelled_the_film_way_round(film):
    root, _, _ = film
    summary = crop(root / "truth.csv", root / "out_nomirror", CropSettings(level=True, mirror_left=False),
                   images=root / "plain")  # fmt: skip
    lm = pd.read_csv(summary.out / "landmarks.csv")
    for side, lateral_left in (("R", True), ("L", False)):
        pts = lm[lm["side"] == side].sort_values("landmark")[["x_px", "y_px"]].to_numpy()
        assert pts[1, 1] == pytest.approx(pts[7, 1], abs=1e-9)  # level
        assert bool(pts[0, 0] < pts[8, 0]) == lateral_left  # the left knee keeps its lateral side on the right
        assert pts[12, 1] < pts[4, 1]  # femur above: not turned upside down
    assert not summary.crops.set_index("side").at["L", "mirrored"]


def test_window_intensity_and_npz(film):
    # window: the film's 5th-99th percentile -> 0-65535 (then clipped); checked against the raw crop of the same knee
    root, _, _ = film
    windowed = crop(root / "truth.csv", root / "out_npz", CropSettings(image_format="npz"), images=root / "plain")
    raw = _crops(root, "plain", CropSettings(intensity="raw"))
    film_values = read_radiograph(root / "plain" / "film.dcm").image
    lo, hi = np.percentile(film_values, [5, 99])
    row = windowed.crops.iloc[0]
    assert (row["window_low"], row["window_high"]) == pytest.approx((lo, hi))
    raw_image = cv2.imread(str(raw.out / raw.crops.iloc[0]["crop"]), cv2.IMREAD_UNCHANGED).astype(np.float64)
    with np.load(windowed.out / row["crop"]) as data:
        image, affine = data["image"], data["affine"]
        assert image.dtype == np.uint16 and image.shape == (350, 350)
        expected = np.clip((raw_image - lo) / (hi - lo) * 65535.0, 0, 65535)
        # Compare where the crop shows the film (its border pixels mix in the outside, 0 raw or `lo` windowed).
        ys, xs = np.mgrid[0:350, 0:350]
        back = np.linalg.inv(affine)
        src = np.stack([xs.ravel(), ys.ravel()], axis=1) @ back[:2, :2].T + back[:2, 2]
        h, w = film_values.shape
        on_film = np.all((src > 2) & (src < np.array([w, h]) - 3), axis=1).reshape(350, 350)
        assert on_film.mean() > 0.5
        # raw crops are rounded to integers before this comparison: up to 0.5 * 65535 / (hi - lo) apart, plus 0.5
        assert np.max(np.abs(image - expected)[on_film]) <= 0.5 * 65535.0 / (hi - lo) + 0.51
        assert np.allclose(affine[:2].ravel(), [row[c] for c in AFFINE_COLUMNS])
        assert np.allclose(data["landmarks_px"][4], [175, 175])


def test_cli_crop_reports_a_missing_film_and_keeps_the_others(film, tmp_path, capsys):
    root, truth, _ = film
    bad = truth[truth["side"] == "R"].assign(file="missing.dcm")
    pd.concat([truth, bad]).to_csv(tmp_path / "table.csv", index=False)
    code = main(["crop", str(tmp_path / "table.csv"), "--images", str(root / "plain"), "--out", str(tmp_path / "o")])
    assert code == 1
    table = pd.read_csv(tmp_path / "o" / "crops.csv")
    assert table["status"].tolist().count("ok") == 2
    assert "radiograph not found" in table.loc[table["file"] == "missing.dcm", "status"].iloc[0]
    assert "missing.dcm R" in capsys.readouterr().err
    assert len(list((tmp_path / "o" / "crops").glob("*.png"))) == 2
