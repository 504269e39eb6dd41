"""Hugging Face ``datasets`` as an image source: ``data.dataset: hf`` (and ``gsg eval --dataset hf``).

``data.root`` is a ``save_to_disk`` folder, a folder in the Hub's layouts (``data/<split>-NNNNN-of-NNNNN
.parquet``, ``<split>/*.parquet``, a ``README.md`` card's ``configs:``; resolved by ``datasets`` itself) or
a Hub dataset id (``ORG/NAME``; offline, ``HF_HUB_OFFLINE=1``: its ``snapshot_download`` snapshot or the
``datasets`` cache). Columns: ``data.hf.image_column`` (default ``image``) and
``data.hf.label_column`` (``label``). Arrow tables are memory-mapped, so random access is cheap and the
map-style machinery applies unchanged: the epoch-keyed sampler, views seeded per item, exact resume
and the replacement of unreadable images. Like timm's ``reader_hfds.py``
(huggingface/pytorch-image-models, timm/data/readers/reader_hfds.py), images are decoded here, one at
a time, from the column's bytes.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .images import EncodedImage, open_image

log = logging.getLogger("gsg_zoo.data")


def load_split(root: str | os.PathLike, split: str) -> Any:
    """The ``split`` of a saved dataset, a folder in the Hub's layouts or a Hub dataset id, as a
    ``datasets.Dataset``; FileNotFoundError / ValueError naming ``root`` and what to do."""
    import datasets

    path = Path(root).expanduser()
    if (path / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(path))
        return saved[pick_split(list(saved), split, path)]
    if is_saved(path):
        return datasets.load_from_disk(str(path))  # one split saved alone
    if not path.is_dir():
        path = hub_snapshot(str(root)) or path
    if not path.is_dir():
        return _from_hub(str(root), split)
    return datasets.load_dataset(str(path), split=split_data_files(str(path), split, path)[0])


SAVED_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")  # what save_to_disk writes


def is_saved(path: Path) -> bool:
    """Whether ``path`` is a ``save_to_disk`` folder (a dataset dict, or one split saved alone)."""
    return any((path / name).exists() for name in SAVED_FILES)


def split_data_files(name: str, split: str, where: object) -> tuple[str, list[str]]:
    """``(split name, its data files)`` of the folder or Hub dataset ``name`` as ``datasets`` resolves
    them (``load_dataset_builder``: the Hub's layouts, a card's ``configs:``); FileNotFoundError naming
    ``where`` and the layouts, or the splits there are."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(name)
    except (FileNotFoundError, ConnectionError, ValueError) as err:  # no data files datasets recognises
        raise FileNotFoundError(
            f"{where}: no dataset files datasets can read ({err}); expected {where}/data/{split}-*.parquet, "
            f"{where}/{split}/*.parquet or a README.md whose `configs:` name the files"
        ) from err
    files = builder.config.data_files or {}
    chosen = pick_split(list(files), split, where)
    return chosen, [str(f) for f in files[chosen]]


SPLIT_ALIASES = {"test": ("test", "validation", "val"), "val": ("val", "validation")}


def pick_split(splits: list[str], split: str, where: object) -> str:
    """``split``, or the name the dataset gives it (evaluation's test split: ``validation``)."""
    for name in SPLIT_ALIASES.get(split, (split,)):
        if name in splits:
            return name
    raise FileNotFoundError(f"{where} has splits {sorted(splits)}, not {split!r}: choose one of those")


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of the Hub dataset ``repo_id`` (``snapshot_download`` left it in the Hugging
    Face cache), when offline (``HF_HUB_OFFLINE=1``) and it is there; else None."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE or repo_id.count("/") != 1:
        return None
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return None


def _from_hub(repo_id: str, split: str) -> Any:
    """``repo_id`` through ``datasets`` (with network: downloaded to its cache; offline: its cache)."""
    import datasets

    try:
        return datasets.load_dataset(repo_id, split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        if "split" in str(err).lower():
            raise FileNotFoundError(f"Hugging Face dataset {repo_id}: {err}") from err
        raise FileNotFoundError(
            f"{repo_id} is no local folder, and not a Hub dataset in the local cache or reachable ({err}); "
            f"fetch it with `hf download --repo-type dataset {repo_id}` (then HF_HUB_OFFLINE=1 reads it)"
        ) from err


class HFImages(Dataset):
    """``(PIL RGB image, label)`` items of a ``datasets.Dataset``; ``None`` for an undecodable image. With
    ``encoded`` JPEGs are left encoded (:func:`.images.open_image`)."""

    def __init__(
        self,
        table: Any,
        image_column: str = "image",
        label_column: str = "label",
        encoded: bool = False,
        where: str = "the dataset",
    ) -> None:
        missing = {image_column, label_column} - set(table.column_names)
        if missing:
            raise ValueError(
                f"{where} has columns {table.column_names}, not {sorted(missing)}: set "
                "data.hf.image_column / data.hf.label_column"
            )
        from datasets import Image as ImageFeature

        self.table = table.cast_column(image_column, ImageFeature(decode=False))  # bytes: decoded here
        self.image_column, self.label_column, self.encoded = image_column, label_column, encoded

    def __len__(self) -> int:
        return len(self.table)

    @property
    def targets(self) -> list[int]:
        return [int(y) for y in self.table[self.label_column]]

    @property
    def unlabelled(self) -> str | None:
        """Why some images lack a label (a ClassLabel's -1, as in a Hub test split), or None."""
        return "some images have label -1 (none)" if -1 in self.targets else None

    def raw(self, index: int) -> tuple[bytes, str, int]:
        """Item ``index``'s encoded image bytes as stored, their format's extension, and its label
        (what ``gsg data shard hf`` writes, without re-encoding)."""
        row = self.table[index]
        data = cell_bytes(row[self.image_column])
        ext = (Image.open(io.BytesIO(data)).format or "png").lower()
        return data, {"jpeg": "jpg"}.get(ext, ext), int(row[self.label_column])

    def __getitem__(self, index: int) -> tuple[Image.Image | EncodedImage, int] | None:
        row = self.table[index]
        cell = row[self.image_column]
        try:
            image = open_image(cell_bytes(cell), self.encoded)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            log.warning("unreadable image %s of a Hugging Face dataset: %s", cell.get("path") or index, err)
            return None
        return image, int(row[self.label_column])


def cell_bytes(cell: dict[str, Any]) -> bytes:
    """An undecoded ``datasets.Image`` cell's bytes (stored in the table, or in the file it names)."""
    return cell["bytes"] if cell.get("bytes") is not None else Path(cell["path"]).read_bytes()


def open_hf(
    root: str | os.PathLike,
    split: str,
    image_column: str = "image",
    label_column: str = "label",
    encoded: bool = False,
    **_: Any,
) -> HFImages:
    return HFImages(load_split(root, split), image_column, label_column, encoded, f"{root} (split {split!r})")
