"""The pipeline end to end on real DICOM files: geometry through real warps, knee presence, outputs, modes."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import CentroidEnsemble, blob_film, write_dicom

from kneel.inference import KneePrediction, Predictor, PresenceRule, RadiographPrediction
from kneel.io import RadiographError
from kneel.landmarks import KneeSide


def _centroid_predictor(**kwargs) -> Predictor:
    """The stand-in puts all 16 landmarks on the blob: no knee shape, so the shape tests of the presence decision are
    off (the content and low-cost tests stay on)."""
    shape_off = PresenceRule(max_shape_residual_mm=np.inf, shape_scale_range=(0.0, np.inf), max_shape_angle_deg=180.0)
    kwargs.setdefault("presence", shape_off)
    return Predictor.from_ensembles(CentroidEnsemble("kneel_lc"), CentroidEnsemble("kneel_hc"), **kwargs)


@pytest.mark.parametrize(
    ("spacing", "centres"),
    [
        ((0.15, 0.15), [(610.3, 1420.6), (1890.2, 1380.4)]),
        ((0.12, 0.18), [(540.0, 1700.0), (1580.7, 1650.2)]),  # anisotropic
        ((0.15, 0.15), [(167.0, 1400.0), (2333.0, 2633.0)]),  # knees 25 mm from the borders: ROIs reach 45 mm beyond
    ],
)
@pytest.mark.parametrize("refine", [False, True])
def test_blob_centres_come_back_to_their_pixels(tmp_path, spacing, centres, refine):
    """A blob drawn at each knee comes back at its original pixel through LC and HC warps and their inverses."""
    shape = (2800, 2500)
    path = write_dicom(tmp_path / "film.dcm", blob_film(shape, spacing, centres), spacing=spacing)
    result = _centroid_predictor(refine=refine, knees="auto").predict(path)
    assert set(result.knees) == {KneeSide.R, KneeSide.L}
    for side, (cx, cy) in zip((KneeSide.R, KneeSide.L), centres, strict=True):
        knee = result[side]
        np.testing.assert_allclose(knee.lc_centre_px, [cx, cy], atol=1.0 / min(spacing))  # 1 mm at the LC stage
        err_mm = np.abs(knee.landmarks_px - [cx, cy]) * [spacing[1], spacing[0]]
        assert err_mm.max() < 0.03, (side, knee.landmarks_px[0], (cx, cy))


def test_single_knee_film_uses_laterality(tmp_path):
    spacing = (0.15, 0.15)
    path = write_dicom(tmp_path / "s.dcm", blob_film((1600, 1500), spacing, [(700.0, 800.0)]), spacing=spacing,
                       laterality="L")  # fmt: skip
    result = _centroid_predictor().predict(path)
    assert result.film == "single"
    assert list(result.knees) == [KneeSide.L]
    np.testing.assert_allclose(result["L"].landmarks_px[4], [700.0, 800.0], atol=0.2)
    assert any("knee R missing" in w for w in result.warnings)


def test_missing_knee_gives_the_other_with_a_warning(tmp_path):
    spacing = (0.15, 0.15)
    path = write_dicom(tmp_path / "m.dcm", blob_film((2800, 2500), spacing, [(600.0, 1400.0)]), spacing=spacing)
    with pytest.warns(UserWarning, match="knee L missing"):
        result = _centroid_predictor(knees="auto").predict(path)
    assert list(result.knees) == [KneeSide.R]
    assert result.to_dict()["missing"] == ["L"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        halves = _centroid_predictor(knees="both").predict(path)  # both halves looked at, the empty one refused
        forced = _centroid_predictor(knees="both", force=True).predict(path)  # the reference's behaviour: both
        only_r = _centroid_predictor(knees="R").predict(path)
        only_l = _centroid_predictor(knees="L").predict(path)
    assert list(halves.knees) == [KneeSide.R] and "empty" in halves.absent[KneeSide.L]
    assert set(forced.knees) == {KneeSide.R, KneeSide.L} and forced.status == "ok"
    assert list(only_r.knees) == [KneeSide.R]
    assert not only_l.knees and only_l.status == "no_knee" and "knee L" in only_l.reason


def test_tiny_model_outputs_are_consistent(model_dir, films):
    predictor = Predictor(model_dir, knees="both", refine=True, force=True)  # random weights find no knee: force
    result = predictor.predict(films["aniso"])
    assert isinstance(result, RadiographPrediction)
    assert result.spacing == (0.5, 0.4)
    for knee in result:
        assert isinstance(knee, KneePrediction)
        assert knee.landmarks_px.shape == (16, 2) and np.all(np.isfinite(knee.landmarks_px))
        np.testing.assert_allclose(knee.landmarks_mm, knee.landmarks_px * [0.4, 0.5])
        assert knee.uncertainty_mm.shape == (16,) and np.all(knee.uncertainty_mm >= 0)
        assert knee.quality in ("ok", "uncertain")
        # refine: the last ROI is centred on the previous pass's T4, near this pass's T4
    back = RadiographPrediction.from_dict(json.loads(json.dumps(result.to_dict())))
    for side in result.knees:
        np.testing.assert_allclose(back[side].landmarks_px, result[side].landmarks_px)
        np.testing.assert_allclose(back[side].uncertainty_mm, result[side].uncertainty_mm)
    assert list(back.rows()) == list(result.rows())


def test_reference_geometry_mode_differs(model_dir, films):
    film = films["bilateral"]
    exact = Predictor(model_dir, knees="both", refine=False, force=True).predict(film)
    ref = Predictor(model_dir, knees="both", refine=False, reference_geometry=True, force=True).predict(film)
    assert ref.settings["reference_geometry"] and not exact.settings["reference_geometry"]
    assert set(ref.knees) == set(exact.knees) == {KneeSide.R, KneeSide.L}
    diff = max(np.abs(ref[s].landmarks_px - exact[s].landmarks_px).max() for s in exact.knees)
    assert diff > 0.5


def test_unreadable_inputs_raise_typed_errors(model_dir, films, tmp_path):
    predictor = Predictor(model_dir)
    with pytest.raises(RadiographError):
        predictor.predict(films["broken"])
    no_spacing = write_dicom(tmp_path / "nospacing.dcm", np.zeros((300, 300), np.uint16), spacing=None)
    with pytest.raises(RadiographError, match="(?i)spacing"):
        predictor.predict(no_spacing)


def test_presence_rule_on_synthetic_single_knee_films(tmp_path):
    """Synthetic single-knee films (collimation, markers, glow): the empty half counts as empty, the other as full."""
    synth = pytest.importorskip("kneel.synth")
    import pandas as pd

    from kneel.inference import Preparer, StageGeometry

    synth.generate_cohort(tmp_path, n=2, seed=5, layout="flat", single_knee_fraction=1.0, workers=1, progress=False)
    truth = pd.read_csv(tmp_path / "ground_truth.csv", dtype={"file": str})
    preparer = Preparer(StageGeometry(1.0), StageGeometry(0.3), knees="auto")
    rule = PresenceRule()
    for file, rows in truth.groupby("file"):
        prepared = preparer.prepare(preparer.read(tmp_path / file), file)
        assert prepared.film == "bilateral"
        jobs = prepared.lc_jobs
        present = {job.plan.side.value: job.evidence.content >= rule.min_content_fraction for job in jobs}
        assert present == {s: s in set(rows["side"]) for s in ("R", "L")}, (file, [j.evidence for j in jobs])


def test_a_calibration_fitted_with_mirror_tta_turns_it_on(model_dir, films, tmp_path):
    """A calibration that uses the ``flip`` signal is only valid on mirror-averaged predictions: the predictor turns
    mirror TTA on by itself (finite radii), and refuses the calibration under the reference geometry (no TTA)."""
    import shutil

    from kneel.inference.calibration import fit_calibration

    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    rng = np.random.default_rng(0)
    signals = {name: rng.uniform(0.2, 3.0, size=(40, 16)) for name in ("spread", "refine_shift", "flip")}
    fit_calibration(signals, rng.uniform(0.1, 4.0, size=(40, 16))).save(model)

    predictor = Predictor(model, knees="both", refine=True, force=True)
    assert predictor.uses_flip_tta and predictor.calibration is not None and predictor.settings["flip_tta"]
    knee = next(iter(predictor.predict(films["bilateral"]).knees.values()))
    assert np.all(np.isfinite(knee.uncertainty_mm)) and np.all(np.isfinite(knee.signals["flip"]))
    # The flag compares the knee's estimated probability of a landmark >= 5 mm off with 1 - coverage.
    cal = predictor.calibration
    assert knee.far_probability == pytest.approx(float(cal.far_probability(knee.signals)))
    assert 0 < knee.far_probability <= 1 and knee.flag_probability == pytest.approx(0.1)
    review = float(np.max(knee.uncertainty_mm)) > cal.review_radius_mm  # among the least certain 20 %
    assert knee.review_radius_mm == cal.review_radius_mm
    assert knee.quality == ("uncertain" if knee.far_probability > 0.1 or review else "ok")
    back = type(knee).from_dict(json.loads(json.dumps(knee.to_dict())), knee.spacing)
    assert back.far_probability == knee.far_probability and back.quality == knee.quality

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = Predictor(model, knees="both", refine=True, force=True, reference_geometry=True)
    assert reference.calibration is None and not reference.uses_flip_tta
    assert any("mirror test-time augmentation" in str(w.message) for w in caught)


def test_shape_signal_is_the_knees_residual_from_the_mean_knee(model_dir, films):
    """Every knee carries ``shape``: one value for its 16 landmarks, the residual of the mean published knee fitted to
    its landmarks in mm (recomputed here from the reported landmarks), and a calibration can use it."""
    from kneel.inference.calibration import fit_calibration
    from kneel.inference.knee_shape import shape_fit

    result = Predictor(model_dir, knees="both", refine=True, force=True).predict(films["bilateral"])
    assert result.knees
    for side, knee in result.knees.items():
        shape = knee.signals["shape"]
        assert shape.shape == (16,) and np.all(shape == shape[0])
        mm = knee.landmarks_px * [knee.spacing[1], knee.spacing[0]]
        fits = [shape_fit(mm, mirrored=m).residual_mm for m in (side.mirrored, not side.mirrored)]
        assert min(abs(shape[0] - f) for f in fits) < 1e-9, (shape[0], fits)
    rng = np.random.default_rng(1)
    knee_shape = rng.uniform(0.3, 6.0, size=(60, 1))
    signals = {"spread": rng.uniform(0.2, 3.0, size=(60, 16)), "shape": np.repeat(knee_shape, 16, axis=1)}
    errors = knee_shape * rng.uniform(0.5, 1.5, size=(60, 16))  # error grows with the knee's shape residual
    calibration = fit_calibration(signals, errors)
    assert "shape" in calibration.signals
    assert calibration.weights[calibration.signals.index("shape")] > 0.5


def test_mirror_tta_is_refused_for_a_model_trained_without_mirroring(model_dir, films, tmp_path):
    """A high-cost model trained with flip_p 0 reads a mirrored ROI as a right knee: its mirrored-back landmarks swap
    medial and lateral and the mean collapses the knee (seen with the small preset: every knee 0.04x the mean knee
    wide). The predictor refuses, whether the fold configs or only the stage's training config say so."""
    import json as json_module
    import shutil

    from kneel.errors import ModelError
    from kneel.models.mirroring import trained_with_mirroring

    def with_mirroring(name: str, fold_value: bool | None, resolved: str | None) -> Path:
        model = tmp_path / name
        shutil.copytree(model_dir, model)
        for cfg_path in (model / "hc").glob("fold_*/config.json"):
            cfg = json_module.loads(cfg_path.read_text())
            cfg.setdefault("extra", {}).pop("mirror_augmentation", None)
            if fold_value is not None:
                cfg["extra"]["mirror_augmentation"] = fold_value
            cfg_path.write_text(json_module.dumps(cfg))
        if resolved is not None:
            (model / "hc" / "config.resolved.yaml").write_text(resolved)
        return model

    for name, fold_value, resolved in (
        ("keyed", False, None),
        ("resolved", None, "augment:\n  flip_p: 0.0\n"),
        ("no_augment", None, "augment: null\n"),
    ):
        model = with_mirroring(name, fold_value, resolved)
        assert Predictor(model, knees="both", force=True).hc_mirroring is False  # without TTA it predicts as before
        with pytest.raises(ModelError, match="trained without mirroring"):
            Predictor(model, knees="both", force=True, flip_tta=True)

    mirrored = with_mirroring("mirrored", None, "augment:\n  flip_p: 0.5\n")
    predictor = Predictor(mirrored, knees="both", force=True, flip_tta=True)
    assert predictor.hc_mirroring is True and predictor.uses_flip_tta
    assert predictor.predict(films["bilateral"]).knees
    assert trained_with_mirroring([], None) is None  # unknown (no configs, no training config): allowed
    assert Predictor(with_mirroring("unknown", None, None), knees="both", force=True, flip_tta=True).uses_flip_tta


def test_adaptive_refine_skips_exactly_the_knees_within_the_tolerance(model_dir, films):
    """Each knee gets the refined landmarks when its first-pass T4 lies farther than the tolerance from the ROI
    centre, and the first pass (= refine off) otherwise; the distances come from a run without refine."""
    paths = [films["bilateral"], films["aniso"]]
    common = {"knees": "both", "force": True}
    first = [Predictor(model_dir, refine=False, **common).predict(p) for p in paths]
    full = [Predictor(model_dir, **common).predict(p) for p in paths]
    shifts = {}
    for i, result in enumerate(first):
        for side, knee in result.knees.items():
            d = (knee.landmarks_px[4] - knee.centre_px) * [knee.spacing[1], knee.spacing[0]]
            shifts[(i, side)] = float(np.hypot(*d))
    assert len(shifts) == 4
    tolerance = float(np.median(list(shifts.values())))
    adaptive = Predictor(model_dir, refine_tolerance_mm=tolerance, **common)
    assert adaptive.settings["refine_tolerance_mm"] == tolerance
    assert "refine_tolerance_mm" not in Predictor(model_dir, **common).settings  # older results keep their settings
    skipped = 0
    for i, path in enumerate(paths):
        result = adaptive.predict(path)
        for side, knee in result.knees.items():
            expected = full[i] if shifts[(i, side)] > tolerance else first[i]
            skipped += shifts[(i, side)] <= tolerance
            np.testing.assert_allclose(knee.landmarks_px, expected[side].landmarks_px, atol=1e-6, rtol=0)
    assert 0 < skipped < 4
    zero = Predictor(model_dir, refine_tolerance_mm=0.0, **common).predict(paths[0])
    for side, knee in zero.knees.items():
        np.testing.assert_allclose(knee.landmarks_px, full[0][side].landmarks_px, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="refine_tolerance_mm"):
        Predictor(model_dir, refine_tolerance_mm=-1.0, **common)
