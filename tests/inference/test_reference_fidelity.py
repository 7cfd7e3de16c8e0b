"""``kneel predict --reference-geometry`` gives the original KNEEL code's landmarks within 0.1 px (same weights).

The fixture ``data/reference_outputs.npz`` holds what the ORIGINAL code (MIPT-Oulu/KNEEL at ``4e20c3a``,
``scripts/inference_new_data.py --refine True --device cpu``, torch 2.13 CPU, opencv-python-headless, solt 0.1.8,
deep-pipeline 0.2.5, pydicom < 3) predicted on the two synthetic films that :func:`fidelity_films` regenerates, with
the weights that :func:`fidelity_model` regenerates: ``preds`` (2 films, R/L, 16, 2) in original pixels, ``imgs``
(film names), and fingerprints of the films' pixels and of the weights, so that a change of ``kneel.synth`` or of the
random initialisation fails here with that reason instead of as a landmark difference.

How it was made (run again after such a change; needs the original set up as ``benchmarks/vs_reference.py`` says)::

    KNEEL_REFERENCE_DIR=/path/to/ref .venv/bin/python tests/inference/test_reference_fidelity.py

which builds the model and films below, writes the model in the original's snapshot layout
(``benchmarks/vs_reference.write_reference_snapshot``; exact here, every fold has the preset's mean/std, so nothing is
folded), runs the original on the films and saves its landmarks.

The model: the tiny presets (``kneel_tiny_lc``/``_hc``, 2 folds, seeded random weights, as the other inference
tests) with the output convolution multiplied by :data:`PEAK`, so that the heatmaps are peaked and the landmarks move
with the image (with plain random weights they barely depend on it). Before the reference geometry reproduced the
original's inputs (plain bilinear resize with ``int`` sizes, the halves as the original slices them, the ROI cut from
the zero-padded film and resized in float64, outputs rounded to whole pixels) this test failed: landmarks 1-10 px
apart on the synthetic films with trained tiny weights, and more than 0.1 px apart here.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "reference_outputs.npz"
MODEL_SEED = 11
FILM_SEED = 5
N_FILMS = 2
PEAK = 25.0
TOLERANCE_PX = 0.1

sys.path.insert(0, str(HERE))


def fidelity_model(root: Path) -> Path:
    """Tiny 2-fold model, seeded random weights, output convolution x :data:`PEAK` (peaked heatmaps)."""
    import safetensors.torch
    from inference_helpers import make_model_dir

    make_model_dir(root, folds=2, seed=MODEL_SEED)
    for weights in sorted(root.glob("*/fold_*/model.safetensors")):
        state = safetensors.torch.load_file(str(weights))
        for key in ("out_block.0.weight", "out_block.0.bias"):
            state[key] = state[key] * PEAK
        safetensors.torch.save_file(state, str(weights))
    return root


def weights_fingerprint(model: Path) -> str:
    import safetensors.torch

    digest = hashlib.sha1()
    for weights in sorted(model.glob("*/fold_*/model.safetensors")):
        state = safetensors.torch.load_file(str(weights))
        for key in sorted(state):
            digest.update(key.encode())
            digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def fidelity_films(root: Path) -> list[Path]:
    """Two synthetic bilateral films, uncompressed 16-bit DICOM (all the original reads)."""
    from kneel.synth import generate_cohort

    generate_cohort(root, n=N_FILMS, seed=FILM_SEED, layout="flat", single_knee_fraction=0.0, compression="none",
                    split="test", workers=1, progress=False)  # fmt: skip
    return sorted(root.glob("*.dcm"))


def films_fingerprint(films: list[Path]) -> str:
    import pydicom

    digest = hashlib.sha1()
    for film in films:
        digest.update(film.stem.encode())
        digest.update(pydicom.dcmread(film).PixelData)
    return digest.hexdigest()


def test_reference_geometry_gives_the_original_landmarks(tmp_path):
    """Same weights, same films: every landmark of both knees within 0.1 px of the original's (refine on)."""
    import pandas as pd

    from kneel.cli import main

    fixture = np.load(FIXTURE)
    model = fidelity_model(tmp_path / "model")
    films = fidelity_films(tmp_path / "films")
    assert weights_fingerprint(model) == str(fixture["weights_sha1"]), (
        "the regenerated weights are not those the fixture was made with (random initialisation changed?): "
        "remake the fixture (see this module's docstring)"
    )
    assert films_fingerprint(films) == str(fixture["films_sha1"]), (
        "the regenerated films are not those the fixture was made from (kneel.synth changed?): remake the fixture "
        "(see this module's docstring)"
    )
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "films"), "--model", str(model), "--out", str(out), "--reference-geometry",
            "--knees", "both", "--force", "--workers", "0", "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = pd.read_csv(out / "landmarks.csv", dtype={"file": str})
    table["film"] = table["file"].map(lambda f: Path(f).stem)
    worst = 0.0
    for i, name in enumerate(fixture["imgs"]):
        for j, side in enumerate("RL"):
            rows = table[(table["film"] == str(name)) & (table["side"] == side)].sort_values("landmark")
            assert len(rows) == 16, (name, side)
            d = rows[["x_px", "y_px"]].to_numpy(np.float64) - fixture["preds"][i, j]
            worst = max(worst, float(np.hypot(d[:, 0], d[:, 1]).max()))
    assert worst <= TOLERANCE_PX, f"--reference-geometry lands {worst:.3f} px from the original"


@pytest.mark.parametrize("side", ["R", "L"])
@pytest.mark.parametrize("spacing", [(0.143, 0.15), (0.2, 0.2)])
def test_reference_inputs_follow_their_affine_transforms(side, spacing):
    """The pixels the reference geometry feeds the networks are where its Affine transforms say: on a film whose value
    is its own x (or y) coordinate, each interior input pixel holds the coordinate its inverse transform gives (bilinear
    interpolation reproduces a linear ramp exactly; the low-cost film is uint8, so within 0.5 + 1 grey level)."""
    from kneel.inference.geometry import StageGeometry
    from kneel.inference.reference_geometry import (
        reference_hc_input,
        reference_hc_transform,
        reference_lc_half,
        reference_lc_input,
        reference_lc_transform,
        reference_resize,
        reference_resize_transform,
        reference_resized_size,
    )
    from kneel.landmarks import KneeSide

    knee = KneeSide(side)
    h, w = 1701, 1999  # odd sizes: the halves overlap by one column
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    lc, hc = StageGeometry(3.515625, pad=148, crop=128), StageGeometry(1.0546875, pad=148, crop=128)
    u, v = np.meshgrid(np.arange(20, 100), np.arange(20, 100))
    grid = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    for axis, ramp in ((0, xs), (1, ys)):
        film = np.round(ramp * 255.0 / ramp.max()).astype(np.uint8)  # a uint8 film, as after windowing
        resized = reference_resize(film, reference_resized_size((h, w), spacing, lc.spacing_mm))
        net = reference_lc_input(resized, knee, lc)
        src = reference_lc_transform((h, w), spacing, knee, lc).inverse().apply(grid)
        x0, wh = reference_lc_half(resized.shape[1], knee)  # interior of the knee's half of the resized film
        at = reference_resize_transform((h, w), resized.shape).apply(src) - [x0, 0]
        inside = (at[:, 0] > 1) & (at[:, 0] < wh - 2) & (at[:, 1] > 1) & (at[:, 1] < resized.shape[0] - 2)
        want = src[inside, axis] * 255.0 / ramp.max()
        assert inside.sum() > 100 and np.abs(net[v.ravel(), u.ravel()][inside] - want).max() <= 1.5
        centre = (1400.3, 900.0) if knee is KneeSide.L else (600.0, 850.7)
        net = reference_hc_input(ramp, centre, spacing, knee, hc)
        src = reference_hc_transform(centre, spacing, knee, hc).inverse().apply(grid)
        np.testing.assert_allclose(net[v.ravel(), u.ravel()], src[:, axis], atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# making the fixture (needs the original; not run by pytest)


def make_fixture(work: Path) -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    from benchmarks.vs_reference import (
        find_reference,
        reference_landmarks,
        run_reference,
        write_reference_snapshot,
        write_shims,
    )

    ref, why = find_reference()
    if ref is None:
        raise SystemExit(why)
    model = fidelity_model(work / "model")
    films = fidelity_films(work / "films")
    data = work / "data" / "films"  # the original reads every file of its folder: the films only
    data.mkdir(parents=True)
    for film in films:
        (data / film.name).symlink_to(film)
    snapshot, change = write_reference_snapshot(model, work / "snapshot")
    assert change == 0.0, "the fixture model must need no folding of mean/std"
    _, _, npz = run_reference(ref, work / "data", "films", snapshot, work / "ref_work", write_shims(work))
    points = reference_landmarks(npz)
    names = [film.stem for film in films]
    preds = np.stack([np.stack([points[(name, side)] for side in "RL"]) for name in names])
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, preds=preds, imgs=np.array(names), weights_sha1=weights_fingerprint(model),
                        films_sha1=films_fingerprint(films))  # fmt: skip
    print(f"wrote {FIXTURE}: {preds.shape} from {ref}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kneel-fidelity-", dir=Path.home()) as tmp:
        make_fixture(Path(tmp))
    pytest.main([__file__, "-q"])
