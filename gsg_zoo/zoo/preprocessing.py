"""The preprocessing of trained weights: the one place that turns a recipe's ``data`` section into
timm's data config, used by ``gsg export`` (written to config.json) and by every model spec that
loads a training checkpoint directly, so one set of weights gets one preprocessing however it is passed.
"""

from __future__ import annotations

from typing import Any

from ..core.normalization import NORMALIZATION


def needs_gsg_zoo(architecture: str) -> bool:
    """True when ``architecture`` is registered by gsg_zoo (CIFAR stem), not by timm itself."""
    import timm

    from ..method import backbones  # noqa: F401  (registration)

    return timm.models.model_entrypoint(architecture).__module__.startswith("gsg_zoo")


def default_crop_pct(image_size: int) -> float:
    """Centre-crop fraction for evaluation: none for small images (<= 64 px), timm's 0.875 above.

    The pretraining kNN monitor, exports and checkpoints loaded as model specs all use this rule.
    """
    return 1.0 if image_size <= 64 else 0.875


def trained_data_config(architecture: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """timm data config of weights trained with the recipe ``data`` section (``{}``: the defaults).

    Size, normalisation, interpolation and crop come from the recipe where it says so; CIFAR-stem
    models default to 32 px and CIFAR mean/std, others to 224 px and ImageNet mean/std; the crop
    follows :func:`default_crop_pct` of the size (what the pretraining monitor evaluated with).
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
        "crop_pct": float(data.get("crop_pct", default_crop_pct(size))),
        "crop_mode": "center",
        "mean": mean,
        "std": std,
    }
