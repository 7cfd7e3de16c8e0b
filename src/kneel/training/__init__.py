"""Training: the paper's recipe and its ablations, cross-validation, LC -> HC transfer, DDP, logging.

* :func:`train` (``kneel train``): train one stage's folds into ``MODEL/<stage>/fold_<k>/``.
* :class:`TrainConfig`, :func:`load_config`, :func:`apply_overrides`: YAML configs with ``key=value`` overrides.
* :func:`run_experiments` (``kneel experiments run``): a grid of configs, one per GPU or in turn.
* :mod:`kneel.training.losses`, :mod:`kneel.training.mixup`: wing/L1/L2/elastic/adaptive robust losses, mixup.
"""

from __future__ import annotations

from kneel.training.config import TrainConfig, apply_overrides, dump_config, load_config
from kneel.training.loop import FoldResult, TrainingError, TrainResult, train

__all__ = [
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "dump_config",
    "train",
    "TrainResult",
    "FoldResult",
    "TrainingError",
    "run_experiments",
]


def __getattr__(name: str):  # run_experiments imports subprocess machinery only when used
    if name == "run_experiments":
        from kneel.training.experiments import run_experiments

        return run_experiments
    raise AttributeError(name)
