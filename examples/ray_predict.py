"""Landmarks for a large cohort on a Ray cluster with Ray Data (optional extra: ``pip install 'kneel[ray]'``).

The same per-batch function as ``kneel predict`` (:func:`kneel.inference.engine.predict_batch`) runs inside a Ray
actor that loads the model once; Ray Data spreads the files over the cluster's actors and writes one landmark table
(CSV shards, the columns of ``landmarks.csv`` plus ``error``). On a Slurm cluster without Ray, ``kneel predict
--shard K/N`` in a job array does the same job.

Usage::

    python examples/ray_predict.py MODEL_DIR DICOM_FOLDER OUT_DIR [--actors 2] [--batch 4] [--device cpu]

Start Ray first (``ray start --head`` and workers) to use a cluster; otherwise a local Ray instance is started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


class KneelActor:
    """One model per actor (loaded once); ``__call__`` is Ray Data's per-batch function."""

    def __init__(
        self, model_dir: str, device: str = "cpu", refine: bool = True, knees: str = "auto", force: bool = False
    ) -> None:
        from kneel.inference import Predictor

        self.predictor = Predictor(model_dir, device=device, refine=refine, knees=knees, force=force)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from kneel.inference.engine import predict_batch

        columns = predict_batch(self.predictor, list(batch["key"]), list(batch["path"]))
        return {name: np.asarray(values) for name, values in columns.items()}


def run(
    model_dir: str,
    inputs: list[str],
    out: str,
    actors: int = 2,
    batch: int = 4,
    device: str = "cpu",
    knees: str = "auto",
    force: bool = False,
) -> Any:
    """Predict every radiograph under ``inputs`` with ``actors`` Ray actors; write CSV shards to ``out``."""
    import ray

    from kneel.inference import discover_inputs

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False)
    files = discover_inputs(inputs)
    dataset = ray.data.from_items([{"key": f.key, "path": str(Path(f.path).resolve())} for f in files])
    predictions = dataset.map_batches(
        KneelActor,
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()),
            "device": device,
            "knees": knees,
            "force": force,
        },
        batch_size=batch,
        concurrency=actors,
        num_gpus=1 if device.startswith("cuda") else 0,
    )
    predictions.write_csv(out)
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("out")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run(args.model, args.inputs, args.out, args.actors, args.batch, args.device)


if __name__ == "__main__":
    main()
