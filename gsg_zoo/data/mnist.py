"""MNIST, Fashion-MNIST and KMNIST readers behind the dataset registry (:mod:`gsg_zoo.data.registry`).

Each is torchvision's class (classes, mirrors, checksums, ``download()``) reading a split's four idx
files, gzip'd or plain, from torchvision's layout or a flat folder (Debian's). Images are RGB,
zero-padded from 28 to 32 px (LeNet-5's convention: exact pixels at 32 px), then resized to the
recipe's size; why: docs/reference/datasets.md.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvd

PAD = 2  # 28 + 2 * 2 = 32
FILES = {split: (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte") for split in ("train", "t10k")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file of unsigned bytes (``.gz`` or plain) as a uint8 array of its dimensions."""
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08" or data[3] == 0:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != math.prod(dims):
        raise ValueError(f"{path}: {array.size} bytes of data for dimensions {dims}")
    return array.reshape(dims)


def find_split(root: Path, folder: str, train: bool) -> tuple[Path, Path] | None:
    """``(images, labels)`` files of a split in torchvision's layout or the flat one; None if absent."""
    names = FILES["train" if train else "t10k"]
    for directory in (root / folder / "raw", root):
        found = [_either(directory / name) for name in names]
        if all(found):
            return found[0], found[1]  # type: ignore[return-value]
    return None


def _either(path: Path) -> Path | None:
    """``path`` or ``path.gz``, whichever exists (plain first, as torchvision extracts)."""
    return next((p for p in (path, path.with_name(path.name + ".gz")) if p.is_file()), None)


class PaddedIdx:
    """Mixin over a torchvision MNIST-family class: either layout, RGB images padded to 32 px.

    ``data`` (uint8 ``[N, 28, 28]``) and ``targets`` (int64 ``[N]``) are as torchvision reads them.
    """

    folder: str  # torchvision's folder name (its class name)

    def __init__(
        self, root: str | os.PathLike, train: bool = True, download: bool = False, image_size: int = 32
    ) -> None:
        tvd.VisionDataset.__init__(self, str(root))  # type: ignore[arg-type]
        self.train, self.image_size = train, int(image_size)
        files = find_split(Path(self.root), self.folder, train)
        if files is None and download:
            self.download()  # type: ignore[attr-defined]  (torchvision's: into raw_folder, extracted)
            files = find_split(Path(self.root), self.folder, train)
        if files is None:
            split = "train" if train else "t10k"
            raise FileNotFoundError(
                f"no {split}-images-idx3-ubyte[.gz] + {split}-labels-idx1-ubyte[.gz] "
                f"in {Path(self.root) / self.folder / 'raw'} or {self.root}"
            )
        images, labels = (read_idx(f) for f in files)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{files}: {images.shape} images for {labels.shape} labels")
        self.data, self.targets = torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
        self.files = files

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.root, self.folder, "raw")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        grey = np.pad(self.data[index].numpy(), PAD)
        image = Image.fromarray(grey).convert("RGB")
        if image.size[0] != self.image_size:
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        return image, int(self.targets[index])


class MNIST(PaddedIdx, tvd.MNIST):
    folder = "MNIST"


class FashionMNIST(PaddedIdx, tvd.FashionMNIST):
    folder = "FashionMNIST"


class KMNIST(PaddedIdx, tvd.KMNIST):
    folder = "KMNIST"


READERS: dict[str, type[PaddedIdx]] = {"mnist": MNIST, "fashion_mnist": FashionMNIST, "kmnist": KMNIST}


def open_mnist(
    name: str, root: Path, split: str, download: bool, image_size: int = 32, **_: Any
) -> PaddedIdx:
    """The registry's builder: ``name``'s ``split`` (train | test) at ``image_size`` px."""
    return READERS[name](root, train=split == "train", download=download, image_size=image_size)
