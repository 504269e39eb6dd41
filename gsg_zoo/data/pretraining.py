"""Pretraining datasets (from the one registry, :mod:`.registry`), the epoch-keyed sampler and collates.

Nothing is downloaded unless ``download=True``. A missing dataset raises FileNotFoundError naming
the layout that was expected. In pretraining an unreadable image is reported with its path and
replaced by a deterministic substitute (:class:`EpochSeeded`), so every batch stays full on every
rank and resume stays exact; evaluation (:func:`collate_pairs`) refuses unreadable images instead.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

from .batch_augment import PackedImages
from .readers import warn_unreadable
from .registry import get_info, open_split


def build_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str = "train",
    transform: Callable | None = None,
    download: bool = False,
    **options: Any,
) -> Dataset:
    """A dataset of ``(transform(image), label)`` items (``None`` for an unreadable folder image).

    ``name``: ``synthetic`` (built-in; options ``num_images`` (default 4000), ``image_size``, ``seed`` and
    the nuisance switches ``textured_background``, ``clutter``, ``grayscale`` of :class:`.SyntheticShapes`),
    ``cifar10``, ``cifar100``, ``stl10`` (splits ``unlabeled``, ``train``, ``test``, ``train+unlabeled``) or
    ``imagefolder`` (``ROOT/<split>/<class>/...``): the registry's entries with ``pretrain=True``.
    Options other datasets do not take are ignored.
    """
    return Transformed(open_split(get_info(name, pretrain=True), root, split, download, **options), transform)


class Transformed(Dataset):
    """Apply ``transform`` to the image of ``(image, label)`` pairs.

    A ``None`` item (an unreadable image) stays ``None``, for the collate to drop or refuse.
    """

    def __init__(self, dataset: Dataset, transform: Callable | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if item is None:
            return None
        image, label = item
        return (self.transform(image) if self.transform else image), label


@contextlib.contextmanager
def seeded_item_rngs(seed: int) -> Iterator[None]:
    """Seed the CPU torch, Python ``random`` and (if imported) NumPy global RNGs for one item.

    In the main process they are restored after; a DataLoader worker's are not (nothing else of the
    worker draws from them, and every item seeds them again), which saves ~60 us per item.
    """
    np = sys.modules.get("numpy")
    saved = None
    if get_worker_info() is None:
        saved = (torch.get_rng_state(), random.getstate(), np.random.get_state() if np else None)
    torch.default_generator.manual_seed(seed)  # the CPU one only: CUDA RNGs are not touched
    random.seed(seed)
    if np:
        np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        if saved is not None:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            if np:
                np.random.set_state(saved[2])


class EpochSeeded(Dataset):
    """Index with ``(index, epoch)``: the augmentation RNGs are seeded from (seed, epoch, index).

    This makes every view a pure function of the key, whatever the worker count, persistence or
    worker seeds (a persistent worker's RNG progression across epochs plays no part), which is what
    exact resume needs. The torch, ``random`` and NumPy RNGs of the main process are left untouched.

    An unreadable image (the dataset yields ``None``) is replaced by the next readable index, drawn
    with the key's RNGs: the item becomes ``(views, label, failures)``, which the collate counts.
    ``max_failures`` unreadable images in a row stop the run with an error.
    """

    def __init__(self, dataset: Dataset, seed: int, max_failures: int = 50) -> None:
        self.dataset, self.seed, self.max_failures = dataset, seed, max_failures

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        with seeded_item_rngs((self.seed * 1_000_003 + epoch) * 10_000_019 + index):
            item, failures = self._read(index), 0
            while item is None:
                failures += 1
                if failures >= min(self.max_failures, len(self)):
                    self._fail(index, failures)
                item = self._read((index + failures) % len(self))
        return item if not failures else (*item, failures)

    def _read(self, index: int) -> Any:
        """The dataset's item, or ``None`` when its file cannot be read (any OSError: EIO, ESTALE, ...)."""
        try:
            return self.dataset[index]
        except OSError as err:  # datasets other than SafeImageFolder raise instead of yielding None
            warn_unreadable(sample_path(self.dataset, index), err)
            return None

    def _fail(self, index: int, failures: int) -> None:
        last = [
            sample_path(self.dataset, (index + i) % len(self)) for i in range(max(0, failures - 3), failures)
        ]
        raise RuntimeError(
            f"{failures} unreadable images in a row (data.max_consecutive_failures={self.max_failures}), "
            f"the last: {', '.join(last)}: the data is damaged or its storage is failing. Repair or remove "
            "these files (or raise data.max_consecutive_failures)"
        )


def sample_path(dataset: Any, index: int) -> str:
    """The file behind item ``index`` of a (wrapped) folder dataset, else ``item INDEX``."""
    while not hasattr(dataset, "samples") and hasattr(dataset, "dataset"):
        index = dataset.indices[index] if hasattr(dataset, "indices") else index  # a Subset
        dataset = dataset.dataset
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if isinstance(samples, list) else f"item {index}"


class EpochShardSampler(Sampler):
    """Shuffled, rank-sharded keys ``(index, epoch)``; the order depends only on (seed, epoch).

    Like DistributedSampler with ``drop_last=True``: every rank gets ``len(dataset) // world`` keys.
    ``set_epoch(epoch, start)`` skips the epoch's first ``start`` keys of this rank (a run resumed
    inside an epoch: ``start`` = steps done x local batch); ``len`` stays the whole epoch's.
    """

    def __init__(
        self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        self.size, self.rank, self.world, self.seed, self.shuffle = size, rank, world_size, seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        order = order[: len(self) * self.world][self.rank :: self.world][self.start :]
        return iter([(int(i), self.epoch) for i in order])


def collate_views(batch: list[Any]) -> tuple[list[Any], torch.Tensor, int]:
    """Stack multi-view items into ``(views, labels, skipped)`` (:class:`PackedImages` items: concatenated);
    ``skipped`` counts replaced images (an item's third element) and ``None`` items (dropped)."""
    items = [b for b in batch if b is not None]
    skipped = len(batch) - len(items) + sum(it[2] for it in items if len(it) > 2)
    if not items:
        return [], torch.zeros(0, dtype=torch.long), skipped
    if isinstance(items[0][0][0], PackedImages):  # the batch-augment loader's decoded images + boxes
        views = [PackedImages.cat([it[0][0] for it in items])]
    else:
        views = [torch.stack([it[0][v] for it in items]) for v in range(len(items[0][0]))]
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


def collate_pairs(batch: list[Any]) -> Any:
    """Evaluation's collate: ``default_collate`` of ``(image, label)`` items.

    An unreadable image (``None`` item) is an error: evaluation needs every image.
    """
    missing = sum(item is None for item in batch)
    if missing:
        raise ValueError(
            f"{missing} unreadable image(s) in an evaluation batch (paths in the warnings above); "
            "evaluation needs every image: repair or remove them"
        )
    return default_collate(batch)
