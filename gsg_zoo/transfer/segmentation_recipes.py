"""The segmentation recipes: mmengine configs shipped in ``configs/mmseg/`` and their reference batches.

Light to import (no torch, no mmseg), so ``gsg transfer segmentation recipes`` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.resources import config_dir


@dataclass(frozen=True)
class SegmentationRecipe:
    """A segmentation protocol: an mmengine config in ``configs/mmseg/`` and its reference batch."""

    name: str
    config: str
    reference_batch: int  # images per iteration summed over GPUs in the published protocol
    description: str
    synthetic: bool = False

    @property
    def path(self) -> Path:
        return config_dir("mmseg") / self.config


SEGMENTATION_RECIPES: dict[str, SegmentationRecipe] = {
    r.name: r
    for r in (
        SegmentationRecipe(
            "voc12aug-fcn",
            "fcn_r50-d8_4xb4-20k_voc12aug-512x512.py",
            16,
            "Pascal VOC12+aug, FCN R50-D8, 512x512, 20k iterations, 4x4 images (mmselfsup benchmark)",
        ),
        SegmentationRecipe(
            "cityscapes-fcn",
            "fcn_r50-d8_4xb2-40k_cityscapes-769x769.py",
            8,
            "Cityscapes, FCN R50-D8, 769x769, 40k iterations, 4x2 images (mmselfsup benchmark)",
        ),
        SegmentationRecipe(
            "ade20k-upernet",
            "upernet_r50_4xb4-160k_ade20k-512x512.py",
            16,
            "ADE20K, UperNet R50, 512x512, 160k iterations, 4x4 images",
        ),
        SegmentationRecipe(
            "synthetic",
            "synthetic_fcn_r50-d8.py",
            8,
            "built-in synthetic shapes (mmseg folder format), FCN R50-D8, 64x64, smoke test",
            synthetic=True,
        ),
        SegmentationRecipe(
            "synthetic-upernet",
            "synthetic_upernet_r50.py",
            8,
            "built-in synthetic shapes (mmseg folder format), UperNet R50, 64x64, smoke test",
            synthetic=True,
        ),
    )
}


def get_segmentation_recipe(name: str) -> SegmentationRecipe:
    """A built-in recipe by name, or a config file path (its reference batch read from the config)."""
    if name in SEGMENTATION_RECIPES:
        recipe = SEGMENTATION_RECIPES[name]
        if not recipe.path.exists():
            raise FileNotFoundError(
                f"recipe config {recipe.path} is missing: the package's configs/mmseg/ configs are "
                "incomplete; reinstall gsg-zoo or pass a config file path as --recipe"
            )
        return recipe
    path = Path(name)
    if path.suffix == ".py" and path.exists():
        return SegmentationRecipe(path.stem, str(path.resolve()), 0, f"config file {path}")
    raise ValueError(
        f"unknown segmentation recipe {name!r}; choose one of {sorted(SEGMENTATION_RECIPES)} or a .py config"
    )
