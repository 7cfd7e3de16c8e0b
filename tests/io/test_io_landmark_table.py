"""The long landmark table: validation, sorting, exact float round trip, atomic write."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kneel.io.landmark_table import (
    KEY_COLUMNS,
    LandmarkTableError,
    read_landmark_table,
    write_landmark_table,
)


def table(n_files: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for f in range(n_files):
        for side in ("L", "R"):
            for lm in range(16):
                rows.append(
                    {
                        "x_px": rng.uniform(0, 3000),
                        "landmark": lm,
                        "file": f"{9000798 + f}",  # digits: must stay text
                        "side": side,
                        "y_px": rng.uniform(0, 3000) / 7,
                        "kl": int(rng.integers(0, 5)),
                        "sop_instance_uid": f"1.2.826.0.1.{f}",
                    }
                )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


def test_round_trip_exact_and_sorted(tmp_path):
    df = table()
    path = tmp_path / "gt.csv"
    write_landmark_table(df, path)
    back = read_landmark_table(path)
    assert tuple(back.columns[:5]) == KEY_COLUMNS
    assert back["file"].tolist()[0] == "9000798" and back["sop_instance_uid"].iloc[0] == "1.2.826.0.1.0"
    # sorted: file, side with R first, landmark
    assert back["side"].iloc[0] == "R" and back["side"].iloc[16] == "L"
    assert back["landmark"].tolist()[:16] == list(range(16))
    expected = df.sort_values(["file", "side", "landmark"], ascending=[True, False, True]).reset_index(drop=True)
    np.testing.assert_array_equal(back["x_px"].to_numpy(), expected["x_px"].to_numpy())  # bit-exact floats
    np.testing.assert_array_equal(back["y_px"].to_numpy(), expected["y_px"].to_numpy())
    assert back["landmark"].dtype == np.int64 and back["kl"].tolist() == expected["kl"].tolist()
    assert path.read_text().startswith("file,side,landmark,x_px,y_px,")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_nan_coordinates_allowed(tmp_path):
    df = table(1)
    df.loc[df.index[0], "x_px"] = np.nan
    write_landmark_table(df, tmp_path / "t.csv")
    assert read_landmark_table(tmp_path / "t.csv")["x_px"].isna().sum() == 1


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("side", "X", "side"),
        ("landmark", 16, "0-15"),
        ("landmark", 2.5, "integer"),
        ("x_px", "abc", "x_px"),
    ],
)
def test_invalid_values_name_the_line(tmp_path, column, value, words):
    df = table(1).reset_index(drop=True)
    df[column] = df[column].astype(object)
    df.loc[5, column] = value
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(LandmarkTableError, match=words) as info:
        read_landmark_table(path)
    assert "line 7" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(LandmarkTableError):
        write_landmark_table(df, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_missing_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("file,side,x_px\na,R,1\n")
    with pytest.raises(LandmarkTableError, match="landmark"):
        read_landmark_table(path)
    with pytest.raises(LandmarkTableError, match="not found"):
        read_landmark_table(tmp_path / "missing.csv")
