"""Conversion of published KNEEL snapshots into kneel's model-directory format.

Two source layouts are understood:

* 2019 reference snapshots: a folder with ``fold_<k>_epoch_<e>.pth`` files, each a ``torch.save``-d dict with the
  state_dict under ``'model'`` (plus optimizer state etc.), and a ``session.pkl``. The ``.pth`` files are read with
  ``torch.load(weights_only=True)``, which refuses arbitrary Python objects; ``session.pkl`` is never opened: the
  architecture is inferred from the state_dict keys and shapes (see :func:`infer_model_args`).
* 2024 repackaging: ``fold_<k>/config.json`` + ``fold_<k>/model.safetensors`` (e.g. ``local_search/fold_0/``), or the
  folder above it holding ``global_search/`` (lc) and ``local_search/`` (hc).

The channel statistics come from the release's ``mean_std.npy`` (float32 (2, 3): means, stds in 0-255 units).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kneel.errors import ModelError, option
from kneel.models._registry import get_preset, list_presets
from kneel.models.mirroring import MIRROR_KEY
from kneel.models.weights import (
    STAGES,
    ModelConfig,
    build_model,
    load_fold,
    load_state_dict_into,
    read_weights,
    save_fold,
)

__all__ = [
    "infer_model_args",
    "detect_layout",
    "read_mean_std",
    "read_reference_checkpoint",
    "find_snapshot_folds",
    "convert_snapshot",
]

_PTH_RE = re.compile(r"^fold_(\d+)_epoch_(\d+)\.pth$")
_FOLD_DIR_RE = re.compile(r"^fold_(\d+)$")
# 2024 layout: which sub-folder holds which stage.
_STAGE_SUBDIRS = {"lc": ("global_search", "lc"), "hc": ("local_search", "hc")}


def detect_layout(state: Mapping[str, Any]) -> str:
    """``"fixed"`` (deep-pipeline >= fdb71ff: all levels alike), ``"legacy"`` (nested levels regular) or
    ``"single-level"`` (depth 1, nothing to tell apart), from the keys of the first nested hourglass level."""
    if any(k.startswith("hourglass.lower4.lower1.bottleneck.") for k in state) and any(
        k.startswith("hourglass.lower1.scale1.") for k in state
    ):
        return "legacy"
    if any(k.startswith("hourglass.lower4.lower1.") for k in state):
        return "fixed"
    return "single-level"


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix present on every key."""
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def infer_model_args(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``HourglassNet`` constructor arguments that reproduce the keys and shapes of a reference state_dict.

    Reads: output/input channels and base width from the first and last convolutions, the block kind from the
    entry block, SE and its ratio from any ``se_block``, the depth from the nesting of ``lower4``, and the
    pre-fix nesting layout (:func:`detect_layout`).
    """
    try:
        first = state["layer1.0.weight"]
        last = state["out_block.0.weight"]
    except KeyError as exc:
        raise ModelError(f"not a KNEEL HourglassNet state_dict (no {exc.args[0]})") from None
    if "layer1.3.scale1.0.weight" in state:
        block = "multiscale"
    elif "layer1.3.bottleneck.0.weight" in state:
        block = "regular"
    else:
        raise ModelError("cannot tell the residual block kind (no layer1.3.scale1 / layer1.3.bottleneck)")
    depth = 1
    while any(k.startswith("hourglass." + "lower4." * depth + "lower1.") for k in state):
        depth += 1
    se_keys = sorted(k for k in state if k.endswith(".se_block.scorer.1.weight"))
    se_ratio = 16
    if se_keys:
        w = state[se_keys[0]]
        se_ratio = max(int(w.shape[1]) // max(int(w.shape[0]), 1), 1)
    return {
        "n_outputs": int(last.shape[0]),
        "n_inputs": int(first.shape[1]),
        "base_width": int(first.shape[0]),
        "depth": depth,
        "block": block,
        "se": bool(se_keys),
        "se_ratio": se_ratio,
        "legacy_nesting": detect_layout(state) == "legacy",
    }


def _matching_preset(stage: str, args: Mapping[str, Any]) -> str:
    """The first preset of ``stage`` whose arguments (with constructor defaults) equal ``args``; else kneel_<stage>."""
    defaults = {"n_inputs": 3, "base_width": 24, "depth": 4, "block": "multiscale", "se": False, "se_ratio": 16}
    defaults |= {"legacy_nesting": False}
    for name in list_presets():
        preset = get_preset(name)
        if preset.stage != stage:
            continue
        full = {**defaults, **preset.model_args}
        if all(full.get(k) == v for k, v in args.items() if k in full):
            return name
    return f"kneel_{stage}"


def read_mean_std(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """Channel means and stds from a reference ``mean_std.npy`` ((2, 3) array, no pickle)."""
    try:
        arr = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise ModelError("mean/std file not found", path) from None
    except (ValueError, OSError) as exc:
        raise ModelError(f"unreadable mean/std file: {exc}", path) from exc
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape == (6,):
        arr = arr.reshape(2, 3)
    if arr.shape != (2, 3) or not np.all(np.isfinite(arr)) or np.any(arr[1] <= 0):
        raise ModelError(f"expected a (2, 3) array of means and positive stds, got shape {arr.shape}", path)
    return [float(v) for v in arr[0]], [float(v) for v in arr[1]]


def read_reference_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict inside a reference ``.pth`` checkpoint, loaded with ``weights_only=True`` (no arbitrary code)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError("checkpoint not found", path) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot read checkpoint safely (weights_only): {reason}", path) from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError("checkpoint holds no state_dict (expected {'model': state_dict, ...})", path)
    return _strip_prefix({str(k): v for k, v in obj.items()})


def _stage_root(src: Path, stage: str) -> Path:
    for sub in _STAGE_SUBDIRS[stage]:
        if (src / sub).is_dir():
            return src / sub
    return src


def find_snapshot_folds(src: str | os.PathLike[str], stage: str) -> tuple[str, dict[int, Path]]:
    """Detect the layout of ``src`` and list its fold sources: ``("reference", {k: .pth})`` or
    ``("safetensors", {k: fold folder})``. For several epochs of one fold the latest is taken."""
    root = Path(src)
    if not root.is_dir():
        raise ModelError("snapshot folder not found", root)
    pths: dict[int, tuple[int, Path]] = {}
    for f in root.iterdir():
        m = _PTH_RE.match(f.name)
        if m and f.is_file():
            k, e = int(m.group(1)), int(m.group(2))
            if k not in pths or e > pths[k][0]:
                pths[k] = (e, f)
    if pths:
        return "reference", {k: p for k, (_, p) in sorted(pths.items())}
    base = _stage_root(root, stage)
    dirs = {}
    for d in base.iterdir():
        m = _FOLD_DIR_RE.match(d.name)
        if m and (d / "model.safetensors").is_file():
            dirs[int(m.group(1))] = d
    if dirs:
        return "safetensors", dict(sorted(dirs.items()))
    raise ModelError("no fold_<k>_epoch_<e>.pth files and no fold_<k>/model.safetensors folders", root)


def _load_safetensors_fold(fold_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state, _ = read_weights(fold_dir)
    meta: dict[str, Any] = {}
    cfg = fold_dir / "config.json"
    if cfg.is_file():
        try:
            meta = json.loads(cfg.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"config.json is not valid JSON: {exc}", cfg) from exc
        if not isinstance(meta, dict):
            raise ModelError("config.json is not a JSON object", cfg)
    return _strip_prefix(state), meta


def _meta_get(meta: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in meta and meta[n] is not None:
            return meta[n]
    return None


def convert_snapshot(
    src: str | os.PathLike[str],
    stage: str,
    out: str | os.PathLike[str],
    *,
    mean_std: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Convert every fold of a reference (2019 ``.pth`` or 2024 safetensors) snapshot into ``out/<stage>/fold_<k>``.

    Args:
        src: snapshot folder (2019: holds ``fold_<k>_epoch_<e>.pth``; 2024: holds ``fold_<k>/`` or
            ``global_search/`` + ``local_search/``).
        stage: ``"lc"`` or ``"hc"``.
        out: model root; folds are written to ``out/<stage>/fold_<k>/``.
        mean_std: the release's ``mean_std.npy``; when omitted it is looked up in ``src`` and its parent.
        overrides: constructor arguments forced over the inferred ones.
        progress: called with one line per converted fold.

    Returns:
        The written fold folders. Each is re-loaded and checked against the source weights.
    """
    if stage not in STAGES:
        raise ModelError(f"stage must be one of {STAGES}, not {stage!r}", src)
    src_path = Path(src)
    if mean_std is None:
        for cand in (src_path / "mean_std.npy", src_path.parent / "mean_std.npy"):
            if cand.is_file():
                mean_std = cand
                break
        else:
            raise ModelError(f"no mean_std.npy found beside the snapshot; pass {option('mean_std', 'FILE')}", src_path)
    mean, std = read_mean_std(mean_std)
    layout, folds = find_snapshot_folds(src_path, stage)
    written = []
    for k, source in folds.items():
        meta: dict[str, Any] = {}
        if layout == "reference":
            state = read_reference_checkpoint(source)
        else:
            state, meta = _load_safetensors_fold(source)
        args = infer_model_args(state)
        args.update(overrides or {})
        expected = 1 if stage == "lc" else 16
        if args["n_outputs"] != expected and not (overrides and "n_outputs" in overrides):
            raise ModelError(
                f"{stage} models have {expected} output(s) but this snapshot has {args['n_outputs']}; "
                f"wrong {option('stage')}?",
                source,
            )
        preset = _matching_preset(stage, args)
        config = ModelConfig.from_preset(preset, fold=k, mean=mean, std=std, model_args=args)
        spacing = _meta_get(meta, "spacing", "spacing_mm")
        if spacing is not None:
            config.spacing_mm = float(spacing)
        for key, names in (("pad", ("pad", "pad_x")), ("crop", ("crop", "crop_x"))):
            value = _meta_get(meta, *names)
            if value is not None:
                setattr(config, key, int(value[0] if isinstance(value, list | tuple) else value))
        epoch = _PTH_RE.match(source.name).group(2) if layout == "reference" else None  # type: ignore[union-attr]
        config.extra = {
            "source": str(source),
            "source_layout": layout,
            "source_epoch": None if epoch is None else int(epoch),
            "nesting_layout": detect_layout(state),
            "mean_std": str(mean_std),
            MIRROR_KEY: True,  # the reference's geometric augmentation mirrors (RandomFlip p 0.5, indices kept)
        }
        model = build_model(config)
        load_state_dict_into(model, state, source)
        fold_dir = save_fold(model, config, Path(out) / stage / f"fold_{k}")
        reloaded, _ = load_fold(fold_dir)
        for name, tensor in reloaded.state_dict().items():
            if not torch.equal(tensor, state[name].to(tensor.dtype)):
                raise ModelError(f"round trip changed {name}", fold_dir)
        written.append(fold_dir)
        if progress is not None:
            progress(f"fold {k}: {source} -> {fold_dir} ({preset}, {config.extra['nesting_layout']} layout)")
    return written
