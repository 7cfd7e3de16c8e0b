"""The Python half of ``docker/ci_build_and_test.sh``: a tiny model to serve, and the container's landmarks checked
against ``kneel predict`` run outside the container on the same file and model.

``python docker/ci_check.py make-model DIR``: ``DIR/{lc,hc}/fold_{0,1}/`` with the tiny presets and seeded random
weights (the same as the tests' ``make_model_dir``). Random weights find no knee, so every prediction here is forced.

``python docker/ci_check.py compare --dicom F --expected landmarks.csv --url URL [--container-table CSV]``: posts
``F`` to ``URL/v1/predict`` (float pixels: must match within ``--tol`` px) and ``URL/kneel/predict/bilateral``
(integer pixels: must be the rounded reference); a ``landmarks.csv`` from ``kneel predict`` inside the container is
compared too. Prints one line per check and the largest deviation; exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sys
import urllib.request
from pathlib import Path

SIDES = ("R", "L")
N_LANDMARKS = 16


def make_model(root: Path, folds: int = 2, seed: int = 3) -> None:
    import torch

    from kneel.models import ModelConfig, create_model, save_fold

    for stage in ("lc", "hc"):
        preset = f"kneel_tiny_{stage}"
        for k in range(folds):
            torch.manual_seed(seed * 100 + k + (50 if stage == "hc" else 0))
            save_fold(create_model(preset), ModelConfig.from_preset(preset, fold=k), root / stage / f"fold_{k}")


def read_table(path: Path) -> dict[str, list[list[float]]]:
    """``landmarks.csv`` of one radiograph -> side -> 16 ``[x, y]`` in pixels."""
    points: dict[str, list[list[float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            side = points.setdefault(row["side"], [[float("nan")] * 2 for _ in range(N_LANDMARKS)])
            side[int(row["landmark"])] = [float(row["x_px"]), float(row["y_px"])]
    return points


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def max_deviation(expected: dict[str, list[list[float]]], got: dict[str, list[list[float]] | None]) -> float:
    """Largest coordinate difference in pixels; infinite when the knees found differ."""
    if sorted(expected) != sorted(side for side in SIDES if got.get(side) is not None):
        return float("inf")
    pairs = (zip(e, g, strict=True) for side in expected for e, g in zip(expected[side], got[side], strict=True))
    return max(abs(a - b) for pair in pairs for a, b in pair)


def compare(args: argparse.Namespace) -> int:
    expected = read_table(args.expected)
    if sorted(expected) != sorted(SIDES):
        print(f"FAIL reference: kneel predict gave knees {sorted(expected)}, expected both")
        return 1
    body = {"dicom": base64.b64encode(args.dicom.read_bytes()).decode("ascii"), "force": True}
    checks: list[tuple[str, float, float]] = []

    v1 = post(f"{args.url}/v1/predict", {**body, "knees": "both"})
    got = {side: knee["landmarks_px"] for side, knee in v1.get("knees", {}).items()}
    checks.append(("POST /v1/predict (float px)", max_deviation(expected, got), args.tol))

    bilateral = post(f"{args.url}/kneel/predict/bilateral", body)
    # Integers: the reference rounded; a coordinate within tol of a .5 may round either way.
    checks.append(("POST /kneel/predict/bilateral (integer px)", max_deviation(expected, bilateral), 0.5 + args.tol))

    if args.container_table is not None:
        inside = read_table(args.container_table)
        checks.append(("kneel predict in the container (float px)", max_deviation(expected, inside), args.tol))

    failed = 0
    for name, deviation, tol in checks:
        ok = deviation <= tol
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: largest deviation from kneel predict outside {deviation:.2e} px "
              f"(tolerance {tol:g})")  # fmt: skip
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-model", help="a tiny random-weight model folder")
    p.add_argument("out", type=Path)
    p = sub.add_parser("compare", help="container landmarks against kneel predict's")
    p.add_argument("--dicom", type=Path, required=True)
    p.add_argument("--expected", type=Path, required=True, help="landmarks.csv of kneel predict outside")
    p.add_argument("--url", required=True, help="base URL of the container's kneel serve")
    p.add_argument("--container-table", type=Path, help="landmarks.csv of kneel predict inside the container")
    p.add_argument("--tol", type=float, default=1e-3, help="pixels (default %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "make-model":
        make_model(args.out)
        return 0
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
