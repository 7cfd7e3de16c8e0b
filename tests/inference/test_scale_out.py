"""The per-batch function used by external engines, and the Ray Data example on a local Ray (if installed)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from kneel.inference import Predictor
from kneel.inference.engine import predict_batch
from kneel.inference.results import CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[2]


def test_predict_batch_gives_table_columns_and_error_rows(model_dir, films):
    predictor = Predictor(model_dir, knees="both", force=True)  # random weights find no knee: force
    columns = predict_batch(predictor, ["x", "broken"], [str(films["bilateral"]), str(films["broken"])])
    assert list(columns) == [*CSV_COLUMNS, "status", "error"]
    n = len(columns["file"])
    assert all(len(v) == n for v in columns.values()) and n == 32 + 1
    errors = [e for e in columns["error"] if e]
    assert len(errors) == 1 and columns["file"][columns["error"].index(errors[0])] == "broken"
    assert columns["status"].count("failed") == 1 and columns["status"].count("ok") == 32
    single = predictor.predict(films["bilateral"])
    rows = [i for i in range(n) if columns["file"][i] == "x" and columns["side"][i] == "L"]
    np.testing.assert_allclose([columns["x_px"][i] for i in rows], single["L"].landmarks_px[:, 0])


@pytest.mark.slow
def test_ray_example_on_a_local_ray(model_dir, films, tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (optional extra: pip install 'kneel[ray]')")
    import pandas as pd
    import ray

    sys.path.insert(0, str(ROOT / "examples"))
    import ray_predict

    env = {"env_vars": {"PYTHONPATH": str(ROOT / "examples")}}  # workers import the example module too
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False, runtime_env=env)
    try:
        ray_predict.run(str(model_dir), [str(films["bilateral"].parent)], str(tmp_path / "out"), actors=1, batch=2,
                        knees="both", force=True)  # fmt: skip
    finally:
        ray.shutdown()
    table = pd.concat(pd.read_csv(p, dtype={"file": str}) for p in (tmp_path / "out").glob("*.csv"))
    assert sorted(table["file"].unique()) == ["aniso", "bilateral.dcm"]
    assert len(table) == 2 * 32
    assert table["error"].isna().all()
    # The same landmarks as the pipeline run in this process (kneel predict's code) on the same files.
    predictor = Predictor(model_dir, knees="both", force=True)
    for name, path in (("aniso", films["aniso"]), ("bilateral.dcm", films["bilateral"])):
        result = predictor.predict(path)
        for side, knee in result.knees.items():
            rows = table[(table["file"] == name) & (table["side"] == side.value)].sort_values("landmark")
            np.testing.assert_allclose(rows[["x_px", "y_px"]].to_numpy(), knee.landmarks_px, atol=1e-6)
