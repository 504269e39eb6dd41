"""Evaluation datasets: the registry's entries (:mod:`gsg_zoo.data.registry`) under the evaluation protocol.

Layouts, official splits, metrics and protocol choices live in the registry; here: the protocol's split
options and feature-cache identity (:func:`build_split`), class counts and the seeded validation split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..data.augment import eval_transform
from ..data.augment import probe_transform as train_transform
from ..data.pretraining import Transformed
from ..data.readers import SPLIT_SEED
from ..data.registry import (
    DATASETS,
    SYNTHETIC_SIZES,
    TRANSFER_SUITE,
    DatasetInfo,
    get_info,
    open_split,
    require_labels,
)

__all__ = [  # the registry's names are re-exported: evaluation code reads them from here
    "DATASETS",
    "SYNTHETIC_SIZES",
    "TRANSFER_SUITE",
    "DatasetInfo",
    "build_split",
    "eval_transform",
    "get_info",
    "num_classes_of",
    "protocol_indices",
    "train_transform",
]

VAL_FRACTION = 0.2


def build_split(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    transform: Callable | None,
    *,
    download: bool = False,
    image_size: int = 64,
    subset: int | None = None,
    reader: dict[str, Any] | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """``(dataset of (transformed image, label), identity dict for the feature cache)``.

    ``split`` is one of the protocol's (``info.splits``), read with its protocol options (ImageFolder's
    test split is ``ROOT/val``; the synthetic splits have 2000 / 1000 images of ``image_size`` px).
    ``subset``: a seeded subset of at most that many images. ``reader``: reader options (the shards'
    ``label_key`` ...), part of the identity.
    """
    info = get_info(name)
    if not info.labelled:
        require_labels(info, None, str(root))
    if split not in info.splits:
        raise ValueError(f"{info.title} has splits {info.splits}, not {split!r}")
    options = {**info.protocol.get(split, {}), "image_size": image_size, **(reader or {})}
    base = open_split(info, root, split, download, **options)
    require_labels(info, base, f"{root} (split {split!r})")
    if info.on_disk:
        path = Path(root).expanduser()  # type: ignore[arg-type]  (open_split refuses root=None)
        ident: dict[str, Any] = {"name": info.name, "root": str(path.resolve()), "split": split}
        ident.update(info.identity(path) if info.identity else {})
    else:
        ident = {"name": info.name, "split": split, "image_size": image_size}
        ident.update({"root": str(root)} if info.needs_root else {})  # a Hub id, a shard pattern
    ident.update({"reader": reader} if reader else {})
    if subset is not None and subset < len(base):
        gen = torch.Generator().manual_seed(SPLIT_SEED)
        base = Subset(base, sorted(torch.randperm(len(base), generator=gen)[:subset].tolist()))
        ident["subset"] = subset
    return Transformed(base, transform), ident


def num_classes_of(name: str, labels: Tensor) -> int:
    """Number of classes seen in ``labels`` (``max + 1``; multi-hot: its width).

    Taken from the data rather than the registry, so classes absent from a subset get no output
    that regularised fits would have to push to -inf; a label beyond the registry's count is an error.
    """
    n = int(labels.shape[1] if labels.ndim == 2 else labels.max().item() + 1)
    expected = get_info(name).num_classes
    if expected is not None and n > expected:
        raise ValueError(f"{name}: found label {n - 1}, but the dataset has {expected} classes")
    return n


def protocol_indices(train_len: int, seed: int = SPLIT_SEED) -> dict[str, Tensor]:
    """Where no official validation split exists: indices of the seeded 20% val and 80% train."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(train_len, generator=gen)
    n_val = max(1, int(round(VAL_FRACTION * train_len)))
    return {"val": perm[:n_val].sort().values, "train": perm[n_val:].sort().values}
