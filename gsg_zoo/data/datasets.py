"""Pretraining datasets through torchvision's own classes and layouts, plus the built-in one.

Nothing is downloaded unless ``download=True``. A missing dataset raises FileNotFoundError naming
the layout that was expected. Corrupt images in folder datasets are reported with their path and
skipped (counted), never a crash.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision import datasets as tvd

log = logging.getLogger(__name__)

LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (torchvision CIFAR10)",
    "cifar100": "ROOT/cifar-100-python/{train,test,meta} (torchvision CIFAR100)",
    "stl10": "ROOT/stl10_binary/{unlabeled_X.bin,train_X.bin,train_y.bin,test_X.bin,test_y.bin,...}",
    "imagefolder": "ROOT/<split>/<class>/<image files> (torchvision ImageFolder; ImageNet: ROOT/train, ROOT/val)",
}
DATASETS = ("synthetic", "cifar10", "cifar100", "stl10", "imagefolder")


class SafeImageFolder(tvd.ImageFolder):
    """ImageFolder that reports an unreadable image with its path and yields ``None`` for it."""

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        try:
            with open(path, "rb") as f:
                img = Image.open(f)
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            log.warning("skipping unreadable image %s: %s", path, err)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def build_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str = "train",
    transform: Callable | None = None,
    download: bool = False,
    **options: Any,
) -> Dataset:
    """A dataset of ``(transform(image), label)`` items.

    ``name``: ``synthetic`` (built-in; options ``num_images``, ``image_size``, ``seed`` and the nuisance
    switches ``textured_background``, ``clutter``, ``grayscale`` of :class:`.SyntheticShapes`), ``cifar10``,
    ``cifar100``, ``stl10`` (splits ``unlabeled``, ``train``, ``test``, ``train+unlabeled``) or
    ``imagefolder`` (``ROOT/<split>/<class>/...``).
    """
    if name == "synthetic":
        from .synthetic import SyntheticShapes

        ds = SyntheticShapes(
            num_images=int(options.get("num_images", 4000)),
            image_size=int(options.get("image_size", 64)),
            seed=int(options.get("seed", 0)),
            split=split,
            textured_background=bool(options.get("textured_background", True)),
            clutter=bool(options.get("clutter", True)),
            grayscale=bool(options.get("grayscale", False)),
        )
        return TransformDataset(ds, transform)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs --data ROOT (expected layout: {LAYOUTS[name]})")
    root = Path(root).expanduser()
    try:
        if name in ("cifar10", "cifar100"):
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            if split not in ("train", "test"):
                raise ValueError(f"{name} splits are 'train' and 'test', got {split!r}")
            return cls(str(root), train=split == "train", transform=transform, download=download)
        if name == "stl10":
            return tvd.STL10(str(root), split=split, transform=transform, download=download)
        folder = root / split
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a directory")
        return SafeImageFolder(str(folder), transform=transform)
    except (RuntimeError, FileNotFoundError) as err:
        if isinstance(err, RuntimeError) and "not found" not in str(err).lower():
            raise
        hint = "" if download else " (or pass --download to fetch it)"
        raise FileNotFoundError(
            f"{name} {split!r} not found under {root}: expected {LAYOUTS[name]}{hint}. ({err})"
        ) from err


class TransformDataset(Dataset):
    """Apply ``transform`` to the image of a ``(PIL image, label)`` dataset."""

    def __init__(self, dataset: Dataset, transform: Callable | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        img, label = self.dataset[index]
        return (self.transform(img) if self.transform else img), label


class EpochSeeded(Dataset):
    """Index with ``(index, epoch)``: the augmentation RNG is seeded from (seed, epoch, index).

    This makes every view a pure function of the key, whatever the worker count or persistence,
    which is what exact resume needs. The global torch RNG of the calling process is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
            return self.dataset[index]


class EpochShardSampler(Sampler):
    """Shuffled, rank-sharded keys ``(index, epoch)``; the order depends only on (seed, epoch).

    Like DistributedSampler with ``drop_last=True``: every rank gets ``len(dataset) // world`` keys.
    """

    def __init__(
        self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        self.size, self.rank, self.world, self.seed, self.shuffle = size, rank, world_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        order = order[: len(self) * self.world][self.rank :: self.world]
        return iter([(int(i), self.epoch) for i in order])


def collate_views(batch: list[Any]) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """Stack multi-view items into ``(views, labels, skipped)``; ``None`` items are dropped and counted."""
    items = [b for b in batch if b is not None]
    skipped = len(batch) - len(items)
    if not items:
        return [], torch.zeros(0, dtype=torch.long), skipped
    num_views = len(items[0][0])
    views = [torch.stack([it[0][v] for it in items]) for v in range(num_views)]
    labels = torch.as_tensor([int(it[1]) for it in items])
    return views, labels, skipped


def collate_images(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack single-image items into ``(images, labels, skipped)``, dropping ``None`` items."""
    items = [b for b in batch if b is not None]
    if not items:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), len(batch)
    return (
        torch.stack([it[0] for it in items]),
        torch.as_tensor([int(it[1]) for it in items]),
        len(batch) - len(items),
    )
