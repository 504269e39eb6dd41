"""Where the shipped configuration files live: ``configs/{pretrain,detectron2,mmseg}``.

A checkout has them in its top-level ``configs/`` folder; a wheel ships the same files as package data
under ``gsg_zoo/_configs/`` (``setup.py``). Light to import (no torch), so recipe listings stay fast.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The shipped folders: ``pretrain`` (recipes), ``detectron2`` and ``mmseg`` (framework configs).
CONFIG_FOLDERS = ("pretrain", "detectron2", "mmseg")
PACKAGED_ROOT = "_configs"  # gsg_zoo/_configs/<folder> in an installed distribution


def config_dir(folder: str) -> Path:
    """The directory of a shipped config folder (``pretrain``, ``detectron2``, ``mmseg``, or one below).

    Prefers the installed package data, then the checkout's ``configs/``; a clear error when neither
    exists (a broken install).
    """
    top = folder.split("/", 1)[0]
    if top not in CONFIG_FOLDERS:
        raise ValueError(f"unknown config folder {folder!r}; shipped: {', '.join(CONFIG_FOLDERS)}")
    packaged = Path(str(resources.files("gsg_zoo").joinpath(PACKAGED_ROOT, *folder.split("/"))))
    checkout = Path(__file__).resolve().parents[2].joinpath("configs", *folder.split("/"))
    for candidate in (packaged, checkout):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"gsg-zoo's {folder}/ configs are missing (looked in {packaged} and {checkout}); "
        "reinstall the package (pip install gsg-zoo) or run from a complete checkout"
    )


def list_configs(folder: str, suffix: str, *, hidden_prefixes: tuple[str, ...] = ("_",)) -> list[str]:
    """Sorted stems of the ``*suffix`` files of a config folder, leaving out bases (``_x``, ``Base-x``)."""
    return sorted(
        p.stem for p in config_dir(folder).glob(f"*{suffix}") if not p.name.startswith(hidden_prefixes)
    )
