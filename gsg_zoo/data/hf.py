"""Hugging Face ``datasets`` as an image source: ``data.dataset: hf`` (and ``gsg eval --dataset hf``).

``data.root`` is a ``save_to_disk`` folder, a folder of parquet files (``ROOT/<split>/*.parquet`` or
``ROOT/<split>-*.parquet``) or a Hub dataset id (``ORG/NAME``: read from the local cache when offline,
``HF_DATASETS_OFFLINE=1``). Columns: ``data.hf.image_column`` (default ``image``) and
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
    """The ``split`` of a saved dataset, a parquet folder or a Hub dataset id, as a ``datasets.Dataset``."""
    import datasets

    path = Path(root).expanduser()
    if (path / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(path))
        if split not in saved:
            raise FileNotFoundError(f"{path} has splits {sorted(saved)}, not {split!r}")
        return saved[split]
    if (path / "dataset_info.json").exists() or (path / "state.json").exists():
        return datasets.load_from_disk(str(path))  # one split saved alone
    if path.is_dir():
        files = sorted(path.glob(f"{split}/*.parquet")) or sorted(path.glob(f"{split}-*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"no parquet files for split {split!r} under {path} "
                f"(expected {path}/{split}/*.parquet or {path}/{split}-*.parquet)"
            )
        return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
    return datasets.load_dataset(str(root), split=split)  # a Hub id; offline: the cache


class HFImages(Dataset):
    """``(PIL RGB image, label)`` items of a ``datasets.Dataset``; ``None`` for an undecodable image. With
    ``encoded`` JPEGs are left encoded (:func:`.images.open_image`)."""

    def __init__(
        self, table: Any, image_column: str = "image", label_column: str = "label", encoded: bool = False
    ) -> None:
        missing = {image_column, label_column} - set(table.column_names)
        if missing:
            raise ValueError(
                f"the dataset has columns {table.column_names}, not {sorted(missing)}: set "
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

    def raw(self, index: int) -> tuple[bytes, str, int]:
        """Item ``index``'s encoded image bytes as stored, their format's extension, and its label
        (what ``gsg data shard hf`` writes, without re-encoding)."""
        row = self.table[index]
        data = _bytes(row[self.image_column])
        ext = (Image.open(io.BytesIO(data)).format or "png").lower()
        return data, {"jpeg": "jpg"}.get(ext, ext), int(row[self.label_column])

    def __getitem__(self, index: int) -> tuple[Image.Image | EncodedImage, int] | None:
        row = self.table[index]
        cell = row[self.image_column]
        try:
            image = open_image(_bytes(cell), self.encoded)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            log.warning("unreadable image %s of a Hugging Face dataset: %s", cell.get("path") or index, err)
            return None
        return image, int(row[self.label_column])


def _bytes(cell: dict[str, Any]) -> bytes:
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
    return HFImages(load_split(root, split), image_column, label_column, encoded)
