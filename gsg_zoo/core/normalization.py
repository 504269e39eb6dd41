"""Per-channel normalisation constants of the recipes (the one place they are written down).

Plain tuples, no torch: importable by light modules (recipes, CLI) and by the data, model and export code.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the CIFAR-10 training set's statistics (SimSiam's CIFAR demo)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar": (CIFAR_MEAN, CIFAR_STD),
}


def mean_std(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a named normalisation, with a clear error for an unknown name."""
    if name not in NORMALIZATION:
        raise ValueError(f"unknown normalization {name!r}; choose one of {sorted(NORMALIZATION)}")
    return NORMALIZATION[name]
