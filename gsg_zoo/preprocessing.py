"""The preprocessing of trained weights: the one place that turns a recipe's ``data`` section into
timm's data config, used by ``gsg export`` (written to config.json) and by every model spec that
loads a training checkpoint directly, so one set of weights gets one preprocessing however it is passed.
"""

from __future__ import annotations

from typing import Any

from .normalization import NORMALIZATION


def needs_gsg_zoo(architecture: str) -> bool:
    """True when ``architecture`` is registered by gsg_zoo (CIFAR stem), not by timm itself."""
    import timm

    from . import backbones  # noqa: F401  (registration)

    return timm.models.model_entrypoint(architecture).__module__.startswith("gsg_zoo")


def trained_data_config(architecture: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """timm data config of weights trained with the recipe ``data`` section (``{}``: the defaults).

    Size, normalisation, interpolation and crop come from the recipe where it says so; CIFAR-stem
    models default to 32 px, CIFAR mean/std and no crop, others to 224 px, ImageNet mean/std, crop 0.875.
    """
    data = data or {}
    cifar = needs_gsg_zoo(architecture)
    mean, std = NORMALIZATION["cifar" if cifar else "imagenet"]
    if data.get("normalization") in NORMALIZATION:
        mean, std = NORMALIZATION[data["normalization"]]
    mean, std = tuple(data.get("mean", mean)), tuple(data.get("std", std))
    size = int(data.get("image_size") or (32 if cifar else 224))
    return {
        "input_size": (3, size, size),
        "interpolation": data.get("interpolation", "bilinear"),
        "crop_pct": float(data.get("crop_pct", 1.0 if cifar else 0.875)),
        "crop_mode": "center",
        "mean": mean,
        "std": std,
    }
