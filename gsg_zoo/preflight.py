"""Checks a pretraining run makes before anything runs: the run directory and every split it will read.

Recipe values are range-checked when the recipe is resolved (:func:`gsg_zoo.recipes.validate`); the
training split is opened when the run is built. What is only read later, the kNN monitor's
labelled splits (read at the first monitored epoch), is checked here, so that a missing split stops
the run before training rather than after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .data.registry import get_info, open_split
from .recipes import Recipe


def preflight(recipe: Recipe, out_dir: str | os.PathLike | None) -> None:
    """Raise a clear error now for anything the run would trip over later."""
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    check_monitor_splits(recipe)


def check_out_dir(out: Path) -> None:
    """``--out`` must be a directory (new or existing) that this process can write."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; it must name a run directory (new or existing)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"--out {out}: {existing} is not writable; choose a run directory you can write"
        )


def check_monitor_splits(recipe: Recipe) -> None:
    """The kNN monitor's bank and query splits exist (when the monitor is on: ``monitor.every >= 0``)."""
    dc, mc = recipe.data, recipe.monitor
    if mc.every < 0:
        return
    name, root = mc.dataset or dc.dataset, mc.root or dc.root
    info = get_info(name, pretrain=True)
    if dc.download and info.downloadable and name == dc.dataset:
        return  # the training data's download fetches the dataset's archive, labelled splits included
    for key, split in (("train_split", mc.train_split), ("test_split", mc.test_split)):
        try:
            open_split(info, root, split, **dc.reader_options(), num_images=2)
        except (FileNotFoundError, ValueError) as err:
            raise FileNotFoundError(
                f"the kNN monitor (monitor.every={mc.every}) reads {name} split {split!r} "
                f"(monitor.{key}) and cannot: {err}. Point monitor.root / monitor.dataset / "
                f"monitor.{key} at labelled images, or turn the monitor off with --set monitor.every=-1"
            ) from err
