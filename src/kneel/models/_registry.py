"""Named model presets and the one entry point that builds them, :func:`create_model`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from kneel.errors import ConfigError

__all__ = ["Preset", "register_preset", "get_preset", "list_presets", "create_model"]


@dataclass(frozen=True)
class Preset:
    """A named architecture plus the input geometry and normalisation it is meant for.

    Attributes:
        name: preset name (``kneel_lc``, ``kneel_hc``, ...).
        factory: the network class.
        model_args: constructor keyword arguments.
        stage: ``"lc"`` (low-cost, knee centre) or ``"hc"`` (high-cost, 16 landmarks).
        spacing_mm: working pixel spacing of the network input.
        roi_size_mm: side of the high-cost ROI (``None`` for lc).
        pad: side of the zero-padded square before cropping.
        crop: side of the network input (centre crop at inference).
        mean: default channel means in 0-255 units (replaced by the training set's own when training).
        std: default channel standard deviations in 0-255 units.
        description: one line for listings.
    """

    name: str
    factory: Callable[..., nn.Module]
    model_args: dict[str, Any]
    stage: str
    spacing_mm: float
    roi_size_mm: float | None
    pad: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str = ""


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Add a preset to the registry (names are unique)."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} registered twice")
    _PRESETS[preset.name] = preset
    return preset


def _ensure_loaded() -> None:
    # The presets are declared at the bottom of the model file; importing it registers them.
    import kneel.models.hourglass  # noqa: F401


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises ``ConfigError`` listing the known names otherwise."""
    _ensure_loaded()
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(_PRESETS))}") from None


def list_presets() -> list[str]:
    """Names of all presets, sorted."""
    _ensure_loaded()
    return sorted(_PRESETS)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the preset ``name`` with constructor arguments replaced by ``overrides`` (e.g. ``n_outputs=16``).

    The model is in training mode with PyTorch's default initialisation (the reference uses no custom init).

    Example:
        >>> model = create_model("kneel_hc")
        >>> sum(p.numel() for p in model.parameters())
        4252432
    """
    preset = get_preset(name)
    args = {**preset.model_args, **overrides}
    try:
        return preset.factory(**args)
    except TypeError as exc:
        raise ConfigError(f"invalid arguments for preset {name!r}: {exc}") from exc
